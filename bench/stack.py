"""A private amrwatch stack for the benchmarks: real processes on free loopback ports.

Each service is the same `python -m amrwatch SERVICE` that `amrwatch up` runs;
only the acquirer can be started through `bench.hooked_acquirer`, which is the
same Acquirer with one observer on its publisher that notes when each
emg_frame left (CLOCK_MONOTONIC), because the wire format has no field for it.

CPU and memory come from /proc (utime + stime, VmRSS), so no extra package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICKS


class MachineCpu:
    """Busy % (of one core) of the whole machine over a window: ours plus whatever else runs."""

    def __init__(self) -> None:
        self.t0, self.b0 = time.monotonic(), machine_busy_s()

    def pct(self) -> float:
        return 100.0 * (machine_busy_s() - self.b0) / (time.monotonic() - self.t0)


def service_registered(name: str) -> bool:
    from amrwatch.cli.commands import STACK_SERVICES

    return name in STACK_SERVICES


class Usage:
    """CPU% (of one core) and peak RSS of named processes over a window, sampled every `every_s`."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.5) -> None:
        self.pids = dict(pids)
        self.every_s = every_s
        self.peak: dict[str, int] = {n: 0 for n in pids}
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                self.peak[name] = max(self.peak[name], rss_bytes(pid))
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> Usage:
        self.machine = MachineCpu()
        self._t0 = time.monotonic()
        self._cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        """{name: {"cpu_pct": ..., "rss_mb": peak}} over the window."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        wall = time.monotonic() - self._t0
        self.machine_pct = self.machine.pct()
        out = {}
        for name, pid in self.pids.items():
            try:
                cpu = cpu_seconds(pid) - self._cpu0[name]
            except OSError:
                cpu = float("nan")
            out[name] = {"cpu_pct": 100.0 * cpu / wall, "rss_mb": self.peak[name] / 2**20}
        return out


@dataclass
class Stack:
    """bus + services + acquirer on free ports, with metrics on free ports and a private data directory.

    `services`: the subscribers to start (those registered in this checkout);
    `acquirer`: its arguments; `publish_log`: where the hooked acquirer writes
    its frame publish times (None: the plain `amrwatch acquirer`)."""

    services: tuple[str, ...] = ("recorder", "analyzer", "predictor")
    acquirer: tuple[str, ...] = ()
    publish_log: Path | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="amrwatch-bench-")))
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p_in, p_out, p_ctl = free_port(), free_port(), free_port()
        self.env = dict(os.environ)
        self.env.update(
            AMRWATCH_BUS_IN=f"tcp://127.0.0.1:{p_in}", AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{p_in}",
            AMRWATCH_BUS_OUT=f"tcp://127.0.0.1:{p_out}", AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{p_out}",
            AMRWATCH_CONTROL=f"tcp://127.0.0.1:{p_ctl}", AMRWATCH_CONTROL_BIND=f"tcp://127.0.0.1:{p_ctl}",
            AMRWATCH_DATA=str(self.workdir / "data"), AMRWATCH_MONITOR_PORT=str(free_port()),
            PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        for svc in ("bus", "acquirer", "analyzer", "predictor", "recorder", "monitor"):
            port = free_port()
            self.metrics_ports[svc] = port
            self.env[f"AMRWATCH_METRICS_PORT_{svc.upper()}"] = str(port)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def bus_out(self) -> str:
        return self.env["AMRWATCH_BUS_OUT"]

    @property
    def bus_in(self) -> str:
        return self.env["AMRWATCH_BUS_IN"]

    @property
    def data_dir(self) -> Path:
        return Path(self.env["AMRWATCH_DATA"])

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        p = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = p
        return p

    def start_bus_and_services(self) -> None:
        self._spawn("bus", [sys.executable, "-m", "amrwatch", "bus"])
        for svc in self.services:
            self._spawn(svc, [sys.executable, "-m", "amrwatch", svc])
        for svc in ("bus", *self.services):
            self.wait_metrics(svc)

    def start_acquirer(self) -> None:
        args = [*self.acquirer, "--wait-for", ",".join(s for s in self.services if s != "monitor")]
        if self.publish_log is not None:
            self.env["BENCH_PUBLISH_LOG"] = str(self.publish_log)
            argv = [sys.executable, "-m", "bench.hooked_acquirer", *args]
        else:
            argv = [sys.executable, "-m", "amrwatch", "acquirer", *args]
        self._spawn("acquirer", argv)
        self.wait_metrics("acquirer")

    def start(self) -> Stack:
        self.start_bus_and_services()
        self.start_acquirer()
        return self

    def wait_metrics(self, svc: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            p = self.procs[svc]
            if p.poll() is not None:
                raise RuntimeError(f"{svc} exited with {p.returncode}; log:\n{self.log(svc)[-3000:]}")
            try:
                return self.metrics(svc)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{svc}: no /metrics on port {self.metrics_ports[svc]}") from None
                time.sleep(0.2)

    def metrics(self, svc: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_ports[svc]}/metrics"
        return urllib.request.urlopen(url, timeout=3).read().decode()

    def metric_sum(self, svc: str, name: str) -> float:
        try:
            text = self.metrics(svc)
        except OSError:
            return float("nan")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        p = self.procs.get(name)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def stop_all(self) -> None:
        """Acquirer first (it ends its session), then the subscribers, the bus last."""
        for name in ["acquirer", *[n for n in self.procs if n not in ("acquirer", "bus")], "bus"]:
            self.stop(name)

    def cleanup(self) -> None:
        self.stop_all()
        shutil.rmtree(self.workdir, ignore_errors=True)
