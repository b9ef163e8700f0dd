"""One run of the real pipeline with outside observers, and what it measured.

`run_pipeline` starts bus + recorder + analyzer + predictor (+ monitor when
asked) and the hooked acquirer, and one or more probes (bench/probe.py); it
waits, scrapes /metrics, stops everything, reads the recorder's archive back
and returns latencies, loss and CPU/RSS per process.

Latency of a measurement: from the instant the acquirer published the frame
holding the last sample of the stimulus's sweep (the frame that lets the
analyzer measure it) to the measurement's arrival at the probe. Of a
decision: from that same instant for the newest measurement or state the
probe had received before the decision (the sweep that triggered it), to
the decision's arrival. Only decisions a sweep triggers count (evidence
trigger/reason below); the others answer an operator's input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .stack import ROOT, Stack, Usage

#: Decisions whose cause is a sweep's result (DecisionEngine evidence `trigger` / `reason`).
SWEEP_TRIGGERS = ("amr_disappeared", "amr_reappeared", "window_complete", "rejected_sweeps", "monitoring_recovered",
                  "detected_late")
MODULUS = 2**24
#: Results of runs kept for later sections (scaling reuses the ramp's steps).
RUNS: dict = {}


def post_samples(fs: float) -> int:
    from amrwatch.services.analyzer.condition import SweepGeometry
    from amrwatch.services.analyzer.settings import AnalyzerSettings

    return SweepGeometry(AnalyzerSettings(), fs).post


def pct(values, qs=(50, 99)) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {**{f"p{q}": float("nan") for q in qs}, "max": float("nan"), "n": 0}
    return {**{f"p{q}": float(np.percentile(a, q)) for q in qs}, "max": float(a.max()), "n": int(a.size)}


@dataclass(eq=False)
class PipelineResult:
    seconds: float
    channels: int
    speed: float
    measurement_ms: np.ndarray
    decision_ms: np.ndarray
    decision_labels: list[str]
    transport_ms: np.ndarray
    """Frame publish → frame arrival at the probe (acquirer → bus → subscriber, 2 hops)."""
    inbound_ms: np.ndarray
    """For each measurement: its completing frame's publish → arrival at the probe."""
    analysis_back_ms: np.ndarray
    """For each measurement: completing frame's arrival at the probe → the measurement's arrival."""
    stimuli: int
    samples_per_s: float
    probe: dict
    probes_extra: list[dict]
    usage: dict[str, dict[str, float]]
    metrics_loss: dict[str, dict[str, float]]
    archive: dict | None
    sessions: int
    achieved_hz: float
    machine_pct: float
    """Whole-machine busy % (of one core) during the window; minus cpu_total(True) = other work."""
    loadavg: tuple[float, float, float]
    """The machine's load average at the end of the window (other work on a shared machine shows here)."""
    """Samples per second per channel the acquirer published during the window (nominal: 20 kHz x speed)."""
    extra_latency: list[dict] = field(default_factory=list)
    """latencies() of the subscribers after the first."""

    @property
    def sustained(self) -> bool:
        return self.achieved_hz >= 0.98 * 20000.0 * self.speed

    def cpu_total(self, probes: bool = False) -> float:
        return sum(u["cpu_pct"] for n, u in self.usage.items() if probes or not n.startswith("probe"))

    @property
    def others_pct(self) -> float:
        """CPU used by processes not of this run (other work on a shared machine), % of one core."""
        return max(0.0, self.machine_pct - self.cpu_total(True))

    @property
    def probe_lost(self) -> int:
        return int(self.probe["lost_samples"]) + int(self.probe["bad_index_frames"])

    def lost_anywhere(self) -> int:
        total = self.probe_lost + sum(int(p["lost_samples"]) + int(p["bad_index_frames"]) for p in self.probes_extra)
        total += sum(int(sum(p["lost"].values())) for p in [self.probe, *self.probes_extra])
        for m in self.metrics_loss.values():
            total += int(m.get("lost", 0) or 0)
        if self.archive is not None:
            total += self.archive["lost_samples"] + self.archive["bad_index_frames"] + self.archive["gap_records"]
        return total


def _index(sessions: list[str], session: np.ndarray, first: np.ndarray, t: np.ndarray) -> dict:
    """{session name: (sorted first samples, times)}."""
    out = {}
    for k, name in enumerate(sessions):
        m = session == k
        order = np.argsort(first[m], kind="stable")
        out[name] = (first[m][order], t[m][order])
    return out


def _at(table: dict, name: str, sample: np.ndarray) -> np.ndarray:
    """Time of the frame holding `sample` (NaN where unknown)."""
    if name not in table or table[name][0].size == 0:
        return np.full(sample.shape, np.nan)
    first, t = table[name]
    i = np.searchsorted(first, sample, side="right") - 1
    ok = i >= 0
    out = np.full(sample.shape, np.nan)
    out[ok] = t[i[ok]]
    return out


def latencies(probe_npz: Path, probe_json: Path, publish_npz: Path, fs: float = 20000.0) -> dict:
    """Measurement, decision and frame-transport latencies (ms) from one probe's record and the publish log."""
    pr = np.load(probe_npz, allow_pickle=True)
    info = json.loads(probe_json.read_text())
    psessions = info["sessions"]
    pub = np.load(publish_npz, allow_pickle=True)
    published = _index(list(pub["sessions"]), pub["session"], pub["first"], pub["t_ns"])
    arrived = _index(psessions, pr["frame_session"], pr["frame_first"], pr["frame_t"])
    post = post_samples(fs)
    stim_sample = {(int(s), int(k)): int(x) for s, k, x in zip(pr["stim_session"], pr["stim_index"], pr["stim_sample"])}

    def completing_publish(sess: np.ndarray, idx: np.ndarray, table: dict | None = None) -> np.ndarray:
        out = np.full(sess.shape, np.nan)
        for k, name in enumerate(psessions):
            m = sess == k
            if not m.any():
                continue
            hi = np.array([stim_sample.get((k, int(i)), -1) for i in idx[m]], dtype=np.int64)
            t = _at(published if table is None else table, name, hi + post - 1)
            t[hi < 0] = np.nan
            out[m] = t
        return out

    t_pub = completing_publish(pr["meas_session"], pr["meas_index"])
    meas = (pr["meas_t"] - t_pub) / 1e6
    # The split: the completing frame's own trip to the subscriber, then analysis + publish + the trip back.
    t_arr = completing_publish(pr["meas_session"], pr["meas_index"], arrived)
    inbound = (t_arr - t_pub) / 1e6
    back = (pr["meas_t"] - t_arr) / 1e6
    ok = np.isfinite(meas) & np.isfinite(back)
    inbound, back = inbound[ok], back[ok]
    meas = meas[np.isfinite(meas)]

    # Decisions: the newest measurement/state received before each one, in its session.
    ev_t = np.concatenate([pr["meas_t"], pr["state_t"]])
    ev_s = np.concatenate([pr["meas_session"], pr["state_session"]])
    ev_i = np.concatenate([pr["meas_index"], pr["state_index"]])
    order = np.argsort(ev_t, kind="stable")
    ev_t, ev_s, ev_i = ev_t[order], ev_s[order], ev_i[order]
    dec, labels = [], []
    for s, t, label in zip(pr["dec_session"], pr["dec_t"], pr["dec_label"]):
        if label.split(":", 1)[1] not in SWEEP_TRIGGERS:
            continue
        cand = np.nonzero((ev_s == s) & (ev_t <= t))[0]
        if cand.size == 0:
            continue
        j = cand[-1]
        tp = completing_publish(np.array([s]), np.array([ev_i[j]]))[0]
        if np.isfinite(tp):
            dec.append((t - tp) / 1e6)
            labels.append(str(label))

    # Transport of every frame: publish → probe.
    trans = []
    for k, name in enumerate(psessions):
        m = pr["frame_session"] == k
        tp = _at(published, name, pr["frame_first"][m])
        trans.append((pr["frame_t"][m] - tp) / 1e6)
    transport = np.concatenate(trans) if trans else np.zeros(0)
    transport = transport[np.isfinite(transport)]
    return {"measurement_ms": meas, "inbound_ms": inbound, "analysis_back_ms": back,
            "decision_ms": np.array(dec), "decision_labels": labels,
            "transport_ms": transport, "stimuli": len(stim_sample), "info": info,
            "frames_arrived": arrived}


def archive_loss(data_dir: Path) -> dict:
    """Samples the recorder's archives hold, checked like the probe checks them; gap records counted."""
    from amrwatch.proto.codec import decode
    from amrwatch.archive.writer import ArchiveReader

    out = {"sessions": 0, "frames": 0, "samples": 0, "lost_samples": 0, "bad_index_frames": 0, "gap_records": 0,
           "bytes": 0}
    root = data_dir / "sessions"
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        out["sessions"] += 1
        out["bytes"] += sum(p.stat().st_size for p in d.glob("seg-*"))
        reader = ArchiveReader(d)
        row, frames = None, []
        for _no, parts in reader.messages():
            topic = bytes(parts[0])
            if topic == b"session_start":
                kinds = [c.kind for c in decode(parts).montage.channels]
                row = kinds.index("sample_index") if "sample_index" in kinds else None
            elif topic == b"emg_frame":
                head = json.loads(bytes(parts[1]))
                first, n = head["first_sample_index"], head["n_samples"]
                frames.append((first, n))
                if row is not None:
                    v = np.frombuffer(bytes(parts[2]), dtype="<f4", count=n, offset=row * n * 4)
                    if not np.array_equal(v, (np.arange(first, first + n) % MODULUS).astype(np.float32)):
                        out["bad_index_frames"] += 1
        out["gap_records"] += len(reader.gaps())
        frames.sort()
        expected = None
        for first, n in frames:  # the archive keeps arrival order; refilled frames come later
            if expected is not None and first > expected:
                out["lost_samples"] += first - expected
            expected = max(first + n, expected or 0)
            out["samples"] += n
        out["frames"] += len(frames)
    return out


def _start_probe(stack: Stack, name: str) -> tuple[subprocess.Popen, Path]:
    out = stack.workdir / f"{name}"
    ready = stack.workdir / f"{name}.ready"
    p = subprocess.Popen([sys.executable, "-m", "bench.probe", "--bus", stack.bus_out, "--out", str(out),
                          "--ready", str(ready)], env=stack.env, cwd=ROOT,
                         stdout=open(stack.workdir / "logs" / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
    stack.procs[name] = p
    deadline = time.monotonic() + 30
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start: {stack.log(name)[-2000:]}")
        time.sleep(0.05)
    return p, out


def run_pipeline(*, seconds: float, speed: float = 1.0, channels: int = 3, scenario: str = "disappears-after-decompression",
                 time_scale: float = 1.0, subscribers: int = 1, monitor: bool = False, recorder: bool = True,
                 read_archive: bool = True, warmup_s: float = 2.0, profile: Path | None = None,
                 profile_s: float = 20.0, env: dict[str, str] | None = None) -> PipelineResult:
    """Run the stack for `seconds` of session time after a warm-up; subscribers = probes on the bus.

    `profile`: a directory for py-spy records (one per service) taken during the run; `env`: settings for
    every process of the stack (e.g. AMRWATCH_GC, AMRWATCH_NICE_<SERVICE>)."""
    services = tuple(s for s in ("recorder" if recorder else "", "analyzer", "predictor",
                                 "monitor" if monitor else "") if s)
    stack = Stack(services=services, acquirer=("--speed", f"{speed:g}", "--scenario", scenario, "--time-scale",
                                               f"{time_scale:g}", "--loop", "--sample-index-channel", "--channels",
                                               str(channels), "--seed", "3"))
    stack.publish_log = stack.workdir / "published.npz"
    stack.env.update(env or {})
    try:
        stack.start_bus_and_services()
        probes = [_start_probe(stack, f"probe{i}") for i in range(subscribers)]
        stack.start_acquirer()
        _wait_for_session(stack, 60.0)
        time.sleep(warmup_s)
        names = [n for n in stack.pids() if not n.startswith("probe")] + ["probe0"]
        usage = Usage({n: stack.pids()[n] for n in names}).start()
        window = [time.monotonic_ns(), 0]
        spies = _profile(stack, profile, min(profile_s, seconds)) if profile else []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            for n, p in stack.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{n} exited with {p.returncode} during the run:\n{stack.log(n)[-3000:]}")
            time.sleep(0.5)
        used = usage.stop()
        window[1] = time.monotonic_ns()
        load = os.getloadavg()
        for s in spies:
            s.wait(timeout=120)
        loss = {}
        for svc in services:
            loss[svc] = {"gaps": stack.metric_sum(svc, "amrwatch_sequence_gaps_total"),
                         "lost": stack.metric_sum(svc, "amrwatch_messages_lost_total")}
        stack.stop("acquirer")
        time.sleep(1.0)  # the session_end reaches everyone
        for n in [n for n in stack.procs if n.startswith("probe")]:
            stack.stop(n)
        stack.stop_all()
        archive = archive_loss(stack.data_dir) if (recorder and read_archive) else None
        lat = latencies(probes[0][1].with_suffix(".npz"), probes[0][1].with_suffix(".json"), stack.publish_log)
        extra = [json.loads(p[1].with_suffix(".json").read_text()) for p in probes[1:]]
        extra_lat = [latencies(p[1].with_suffix(".npz"), p[1].with_suffix(".json"), stack.publish_log)
                     for p in probes[1:]]
        pub = np.load(stack.publish_log, allow_pickle=True)
        in_window = np.count_nonzero((pub["t_ns"] >= window[0]) & (pub["t_ns"] <= window[1]))
        frame_samples = int(round(20000.0 * 0.005))
        return PipelineResult(
            seconds=seconds, channels=channels, speed=speed, measurement_ms=lat["measurement_ms"],
            decision_ms=lat["decision_ms"], decision_labels=lat["decision_labels"],
            inbound_ms=lat["inbound_ms"], analysis_back_ms=lat["analysis_back_ms"],
            transport_ms=lat["transport_ms"], stimuli=lat["stimuli"],
            samples_per_s=channels * 20000.0 * speed, probe=lat["info"], probes_extra=extra, usage=used,
            metrics_loss=loss, archive=archive, sessions=len(pub["sessions"]),
            achieved_hz=in_window * frame_samples / ((window[1] - window[0]) / 1e9), loadavg=load,
            machine_pct=usage.machine_pct,
            extra_latency=extra_lat)
    finally:
        stack.cleanup()


def _wait_for_session(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _published(stack, "session_start") >= 1:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no session started within {timeout:g} s:\n{stack.log('acquirer')[-3000:]}")


def _published(stack: Stack, type_: str) -> float:
    for line in stack.metrics("acquirer").splitlines():
        if line.startswith("amrwatch_messages_published_total{") and f'type="{type_}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _profile(stack: Stack, outdir: Path, seconds: float) -> list[subprocess.Popen]:
    """py-spy record of each service for `seconds`, as raw collapsed stacks (bench/profiles.py reads them)."""
    outdir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        (outdir / "MISSING").write_text("py-spy is not installed (pip install py-spy, in the dev extra)")
        return []
    out = []
    for name, pid in stack.pids().items():
        if name.startswith("probe"):
            continue
        out.append(subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                     "--rate", "200", "--format", "raw", "--nonblocking",
                                     "--output", str(outdir / f"{name}.txt")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out
