#!/usr/bin/env python3
"""Analyzer speed: per-stimulus processing, and offline analysis of a long recording.

1. Per stimulus, 16 channels at 20 kHz: the whole engine step from a
   stimulus whose sweep is complete to its messages (read from the ring
   buffer, rejection checks, conditioning, measures, baseline and course,
   message bodies), with every channel recording the stimulated direction
   (16 measurements per stimulus, the worst case) and with an 8 + 8 montage.
   Baselines in the same run: a bare numpy copy of the sweep,
   scipy.signal.sosfiltfilt alone on the same 16-channel sweep, and the
   measures written as numpy expressions (the test reference) against the
   compiled loop the analyzer runs.
2. Offline `analyze` of a 2-hour, 4-channel, 20 kHz EDF+ (simulated, written
   once and cached): wall time of the sweeps-only path, in process and
   through the command line, as a multiple of real time.

Prints a markdown table. Usage:
    .venv/bin/python bench/analyzer_speed.py [--edf PATH] [--hours 2] [--skip-offline]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amrwatch.proto.messages import AmrMeasurementBody, Montage, unchecked  # noqa: E402
from amrwatch.services.acquirer.sim import SimConfig, Simulator  # noqa: E402
from amrwatch.services.analyzer.engine import AnalyzerEngine  # noqa: E402
from amrwatch.services.analyzer.offline import analyze_edf  # noqa: E402
from amrwatch.services.analyzer.measure import reject_reasons  # noqa: E402
from amrwatch.services.analyzer.settings import AnalyzerSettings  # noqa: E402
from tests.analyzer.reference import ReferenceMeasurer  # noqa: E402

FS = 20_000.0


def timings(fn, n: int, warmup: int = 50) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e6


def sixteen_channels(split: bool, stimuli: int) -> tuple[Montage, np.ndarray, list[tuple[int, str]]]:
    """16 EMG channels of simulated AMRs (the simulator's 3 channels, each copy with its own noise)."""
    sim = Simulator(SimConfig(scenario="calibration", calibration_stimuli=stimuli, calibration_absent_fraction=0.1,
                              diathermy=False), seed=1)
    chunk = sim.read(sim.timeline.total_samples)
    rng = np.random.default_rng(2)
    src = chunk.samples[:3]
    rows = [src[i % 3] + rng.standard_normal(src.shape[1]).astype(np.float32) * 2.0 for i in range(16)]
    channels = []
    for i in range(16):
        d = ("ZYG" if i < 8 else "MAR") if split else "ZYG"
        channels.append({"name": f"EMG{i:02d}", "muscle": "mentalis", "direction": d})
    dirs = ["ZYG", "MAR"] if split else ["ZYG"]
    montage = Montage(sampling_rate_hz=FS, channels=channels,
                      stimulation=[{"direction": d, "stimulated_branch": "zygomatic" if d == "ZYG" else
                                    "marginal_mandibular"} for d in dirs])
    stims = [(s.sample_index, dirs[k % len(dirs)]) for k, s in enumerate(chunk.stimuli)]
    return montage, np.ascontiguousarray(np.array(rows, dtype=np.float32)), stims


def per_stimulus(split: bool, stimuli: int = 1500) -> dict:
    montage, data, stims = sixteen_channels(split, stimuli)
    settings = AnalyzerSettings(buffer_s=data.shape[1] / FS + 1)
    engine = AnalyzerEngine(montage, settings)
    frame = int(FS * 0.005)
    t_frame = []
    for pos in range(0, data.shape[1], frame):
        t0 = time.perf_counter()
        engine.on_frame(pos, data[:, pos : pos + frame], FS)
        t_frame.append(time.perf_counter() - t0)
    t, cpu = [], []
    n_meas = 0
    for k, (idx, d) in enumerate(stims):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = engine.on_stimulus(k, idx, idx / FS, d)
        t.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        n_meas += sum(1 for o in out if isinstance(o, AmrMeasurementBody))
    # The first ones warm caches. CPU time shows what is ours when a busy machine preempts us.
    return {"t": np.array(t[50:]) * 1e6, "cpu": np.array(cpu[50:]) * 1e6, "per_stimulus": n_meas / len(stims),
            "frame": np.array(t_frame[100:]) * 1e6, "data": data, "engine": engine}


def baselines(data: np.ndarray, engine: AnalyzerEngine) -> dict[str, np.ndarray]:
    g = engine.geometry
    sweep = data[:, 100_000 - g.pre : 100_000 + g.post]
    rows = np.arange(16)
    sos = engine.conditioner.sos
    x64 = sweep.astype(np.float64)
    y = engine.conditioner(sweep)
    reference = ReferenceMeasurer(g)
    return {
        "numpy copy of the 16-channel sweep": timings(lambda: data[rows, 100_000 - g.pre : 100_000 + g.post], 3000),
        "scipy sosfiltfilt alone (same band-pass, 16 channels)": timings(
            lambda: signal.sosfiltfilt(sos, x64, axis=-1), 3000),
        "conditioning alone (blank, fit, fft band-pass)": timings(lambda: engine.conditioner(sweep), 3000),
        "rejection checks alone (numpy)": timings(lambda: reject_reasons(sweep, g), 3000),
        "measures alone (compiled loop)": timings(lambda: engine.measurer(y), 3000),
        "measures as numpy expressions (tests/analyzer/reference.py)": timings(lambda: reference(y), 3000),
    }


def bodies() -> dict[str, np.ndarray]:
    """One measurement's body three ways: the dict the engine once returned, the typed body it returns
    (proto's `unchecked` constructor), and the same body validated by pydantic."""
    fields = {"stimulus_index": 12, "stim_time_s": 1.5, "channel": "MENT", "direction": "ZYG", "p2p_uv": 123.456,
              "onset_latency_ms": 8.1, "peak_latency_ms": 10.2, "area_uv_ms": 55.5, "n_phases": 3, "noise_uv": 2.1,
              "snr": 20.1, "present": True, "pct_of_baseline": 90.0, "rejected": False, "reject_reason": None,
              "stage": "baseline", "assessment": "present", "assessment_reason": None, "detection_limit_uv": 10.0,
              "stimulus_confirmed": True}
    make = unchecked(AmrMeasurementBody)

    def batch(fn, n=200):
        def run():
            for _ in range(n):
                fn()
        return lambda: run()

    out = {
        "a dict literal (the engine's output before typed bodies)": timings(batch(lambda: dict(**fields)), 300),
        "typed body, unchecked (what the engine builds)": timings(batch(lambda: make(**fields)), 300),
        "typed body, validated by pydantic": timings(batch(lambda: AmrMeasurementBody(**fields)), 300),
    }
    return {k: v / 200 for k, v in out.items()}


def write_long_edf(path: Path, hours: float) -> None:
    from tests.analyzer.edfwrite import write_sim_edf

    # The scripted operation lasts 525 s at time_scale 1 (plus a 2 s tail).
    ts = (hours * 3600.0 - 2.0) / 525.0
    t0 = time.perf_counter()
    info = write_sim_edf(path, seed=1, scenario="disappears-after-decompression", time_scale=ts,
                         extra_channels=["NASAL-MAR=OOCUL"], chunk=200_000)
    print(f"wrote {path} ({info['n_samples'] / FS / 3600:.2f} h, {len(info['labels'])} channels, "
          f"{path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def offline(path: Path) -> dict:
    import pyedflib

    with pyedflib.EdfReader(str(path)) as r:
        duration = r.getNSamples()[0] / r.getSampleFrequency(0)
        n_channels = r.signals_in_file
    t0 = time.perf_counter()
    n = sum(1 for o in analyze_edf(str(path)) if isinstance(o, AmrMeasurementBody))
    in_process = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "amrwatch", "analyze", str(path), "--json"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    cli = time.perf_counter() - t0
    return {"duration": duration, "channels": n_channels, "measurements": n, "in_process": in_process, "cli": cli}


SUMMARY: dict = {}


def per_stimulus_section() -> str:
    """Markdown: the per-stimulus table, with its baselines (also fills SUMMARY)."""
    lines = ["## Analyzer: per-stimulus processing (20 kHz, 16-channel montage)", ""]
    worst = per_stimulus(split=False)
    split = per_stimulus(split=True)
    ref = baselines(worst["data"], worst["engine"])
    filt = np.median(ref["scipy sosfiltfilt alone (same band-pass, 16 channels)"])
    lines += ["| what | median µs | p99 µs (wall) | p99 µs (CPU) | median / sosfiltfilt alone |", "|---|---|---|---|---|"]
    for name, r in (("analyzer, 16 measured channels per stimulus", worst),
                    ("analyzer, 8 + 8 montage (8 measured per stimulus)", split)):
        t = r["t"]
        lines.append(f"| {name} | {np.median(t):.0f} | {np.percentile(t, 99):.0f} | "
                     f"{np.percentile(r['cpu'], 99):.0f} | {np.median(t) / filt:.2f} |")
    for name, t in ref.items():
        lines.append(f"| {name} | {np.median(t):.0f} | {np.percentile(t, 99):.0f} | | {np.median(t) / filt:.2f} |")
    fr = worst["frame"]
    lines.append(f"| on_frame, one 5 ms frame of 16 channels (ring buffer write) | {np.median(fr):.0f} | "
                 f"{np.percentile(fr, 99):.0f} | | {np.median(fr) / filt:.2f} |")
    body = bodies()
    lines += ["", "What one measurement's body costs the engine (it builds one per measured channel and stimulus; "
              "the publisher validates the message once more when it stamps the envelope):", "",
              "| one amr_measurement body | median µs | / dict literal |", "|---|---|---|"]
    base = np.median(body["a dict literal (the engine's output before typed bodies)"])
    for name, t in body.items():
        lines.append(f"| {name} | {np.median(t):.2f} | {np.median(t) / base:.1f} |")
    lines += ["", f"{len(worst['t'])} stimuli timed per row; targets: median ≤ 200 µs, p99 ≤ 1000 µs. "
              f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. The offline "
              "analysis of a 2-hour EDF+ runs with `python bench/analyzer_speed.py` (it writes a 1.2 GB file)."]
    SUMMARY.update(median=float(np.median(worst["t"])), p99=float(np.percentile(worst["t"], 99)),
                   sosfiltfilt=float(filt))
    return "\n".join(lines) + "\n"


def run() -> str:
    """Section of `make bench`: the per-stimulus figures (the offline part needs its long file)."""
    return per_stimulus_section()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edf", type=Path, default=Path("/tmp/amrwatch-bench-analyzer.edf"),
                   help="long recording to analyse (written once if missing)")
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--skip-offline", action="store_true")
    args = p.parse_args()

    print(per_stimulus_section())

    if args.skip_offline:
        return
    if not args.edf.exists():
        write_long_edf(args.edf, args.hours)
    o = offline(args.edf)
    print(f"\n## Analyzer: offline `analyze` of {o['duration'] / 3600:.2f} h, {o['channels']} channels, 20 kHz\n")
    print("| path | wall s | × real time | measurements |")
    print("|---|---|---|---|")
    print(f"| analyze_edf in process (sweeps only) | {o['in_process']:.1f} | {o['duration'] / o['in_process']:.0f} | "
          f"{o['measurements']} |")
    print(f"| `amrwatch analyze FILE --json > /dev/null` | {o['cli']:.1f} | {o['duration'] / o['cli']:.0f} | "
          f"{o['measurements']} |")
    print("\ntarget: ≥ 300× real time.")


if __name__ == "__main__":
    main()
