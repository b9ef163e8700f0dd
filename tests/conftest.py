"""Shared fixtures: free loopback ports, real service processes, an archive key, and one small trained
model per test session (used by tests/predictor and tests/study)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Set by `make test` (CI on a machine with root and the test servers): a test that cannot run here fails.
STRICT = os.environ.get("AMRWATCH_TESTS_STRICT") == "1"


def cannot_run_here(reason: str) -> NoReturn:
    """Skip with `reason` printed (and listed by `-ra`); under `make test` (AMRWATCH_TESTS_STRICT=1), fail
    with it instead, so that CI on our machine runs every test or says which one it could not."""
    print(f"cannot run here: {reason}")
    if STRICT:
        pytest.fail(f"cannot run here, and AMRWATCH_TESTS_STRICT=1 (make test) wants every test run: {reason}")
    pytest.skip(reason)


def chromium() -> Path | None:
    """Debian's Chromium on PATH (`chromium`, or `chromium-browser` as other distributions name it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a private stack on free loopback ports (no metrics)."""
    p_in, p_out, p_ctl = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        AMRWATCH_BUS_IN=f"tcp://127.0.0.1:{p_in}",
        AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{p_in}",
        AMRWATCH_BUS_OUT=f"tcp://127.0.0.1:{p_out}",
        AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{p_out}",
        AMRWATCH_CONTROL=f"tcp://127.0.0.1:{p_ctl}",
        AMRWATCH_CONTROL_BIND=f"tcp://127.0.0.1:{p_ctl}",
        AMRWATCH_DATA=str(tmp_path / "data"),
        AMRWATCH_MONITOR_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    for svc in ("bus", "acquirer", "analyzer", "predictor", "recorder", "monitor"):
        env[f"AMRWATCH_METRICS_PORT_{svc.upper()}"] = "0"
    return env


class Procs:
    """Starts `python -m amrwatch ...` processes and always stops them."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, *args: str, name: str | None = None) -> subprocess.Popen:
        name = name or args[0]
        log = open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "amrwatch", *args], env=self.env, stdout=log,
                             stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{name}-*.log")))

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    logs = tmp_path / "logs"
    logs.mkdir()
    ps = Procs(stack_env, logs)
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A fresh 32-byte archive HMAC key, hex-encoded (archive/FORMAT.md)."""
    p = tmp_path / "archive.key"
    p.write_bytes(os.urandom(32).hex().encode())
    return p


@pytest.fixture(scope="session")
def quick():
    """Training settings with a short bootstrap; the shipped card uses the full default count."""
    from amrwatch.study.training import TrainingSettings  # the [train] extra: imported only when asked for

    return TrainingSettings(bootstrap_resamples=20)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, quick) -> tuple[Path, dict]:
    """One small model trained on a synthetic cohort of the study's size."""
    from amrwatch.study.training import train

    out = tmp_path_factory.mktemp("model")
    card = train(out, synthetic_n=157, seed=3, settings=quick, echo=None)
    return out, card
