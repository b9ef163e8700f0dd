"""Throughput and loss (a ramp of channels x rate, then a soak at the target), and scaling
with channel count and with the number of subscribers — one table, one PNG.

Every step is the whole stack as `amrwatch up` runs it (bus, recorder,
analyzer, predictor, monitor when present, the acquirer's simulator with a
SAMPLE_INDEX channel) plus outside subscribers. A step has lost nothing when
every outside subscriber received every sample (SAMPLE_INDEX continuous and
exact), the recorder's archive holds every sample with no gap record, and
every service's /metrics count zero sequence gaps and zero lost messages.

Settings: BENCH_STEP_S (12 s per ramp / subscriber step), BENCH_RAMP
("channels x speed" steps, comma-separated), BENCH_SOAK_S (the soak at
64 x 20 kHz; default: what is left of BENCH_BUDGET_S = 840 s, at least 60 s,
at most 600 s).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import bench

from . import pipeline
from .pipeline import PipelineResult, pct, run_pipeline
from .profiles import markdown as profile_markdown
from .stack import service_registered

STEP_S = float(os.environ.get("BENCH_STEP_S", "12"))
RAMP = os.environ.get("BENCH_RAMP", "3x1,4x1,16x1,64x1,243x1,243x2,243x4,243x8")
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "840"))
TARGET_CHANNELS = 64
SCALING_CHANNELS = (3, 4, 16, 64)
SUBSCRIBERS = (1, 4, 16)
HERE = Path(__file__).resolve().parent
PLOT = HERE / "scaling.png"

SUMMARY: dict = {}


def soak_seconds() -> float:
    if os.environ.get("BENCH_SOAK_S"):
        return float(os.environ["BENCH_SOAK_S"])
    left = BUDGET_S - (time.monotonic() - bench.STARTED_AT) - 45.0  # start-up, archive read-back, report
    return float(min(600.0, max(60.0, left)))


def _steps() -> list[tuple[int, float]]:
    out = []
    for part in RAMP.split(","):
        ch, _, speed = part.strip().partition("x")
        out.append((int(ch), float(speed or 1)))
    return out


def _loss_cell(r: PipelineResult) -> str:
    a = r.archive or {}
    probe = r.probe_lost + sum(int(p["lost_samples"]) + int(p["bad_index_frames"]) for p in r.probes_extra)
    seq = sum(int(sum(p["lost"].values())) for p in [r.probe, *r.probes_extra])
    metrics = sum(int(m.get("lost", 0) or 0) for m in r.metrics_loss.values())
    gaps = sum(int(m.get("gaps", 0) or 0) for m in r.metrics_loss.values())
    arch = f"{a.get('lost_samples', 0) + a.get('bad_index_frames', 0)}/{a.get('gap_records', 0)}" if r.archive else "—"
    return f"{probe} / {seq} / {arch} / {gaps}+{metrics}"


def _usage_cell(r: PipelineResult, key: str, fmt: str) -> str:
    order = ["acquirer", "bus", "analyzer", "recorder", "predictor", "monitor"]
    return " · ".join(fmt.format(r.usage[n][key]) for n in order if n in r.usage)


def _services(r: PipelineResult) -> str:
    return " · ".join(n for n in ["acquirer", "bus", "analyzer", "recorder", "predictor", "monitor"] if n in r.usage)


def run() -> str:
    monitor = service_registered("monitor")
    recorder = service_registered("recorder")
    steps: list[tuple[int, float, PipelineResult]] = []
    stopped = ""
    for ch, speed in _steps():
        r = run_pipeline(seconds=STEP_S, speed=speed, channels=ch, monitor=monitor, recorder=recorder)
        steps.append((ch, speed, r))
        if r.lost_anywhere() or not r.sustained:
            stopped = (f"stopped at {ch} x {20 * speed:g} kHz: "
                       + ("loss" if r.lost_anywhere() else
                          f"the acquirer published {r.achieved_hz / 1000:.1f} kHz of the {20 * speed:g} kHz asked "
                          "(its simulator is CPU-bound)"))
            break
    subs: dict[int, PipelineResult] = {}
    for n in SUBSCRIBERS:
        same = next((r for ch, sp, r in steps if ch == TARGET_CHANNELS and sp == 1.0), None)
        subs[n] = same if n == 1 and same is not None else run_pipeline(
            seconds=STEP_S, speed=1.0, channels=TARGET_CHANNELS, monitor=monitor, recorder=recorder, subscribers=n)
    soak_s = soak_seconds()
    prof = Path(tempfile.mkdtemp(prefix="amrwatch-bench-soakprof-"))
    soak = run_pipeline(seconds=soak_s, speed=1.0, channels=TARGET_CHANNELS, monitor=monitor, recorder=recorder,
                        profile=prof, profile_s=30.0)
    pipeline.RUNS["soak"] = soak

    by_ch = {ch: r for ch, sp, r in steps if sp == 1.0}
    scaling = {ch: by_ch[ch] for ch in SCALING_CHANNELS if ch in by_ch}
    plot(scaling, subs)

    soak_lost = soak.lost_anywhere()
    SUMMARY.update(soak_s=soak_s, soak_lost=soak_lost, soak_sustained=soak.sustained,
                   soak_cpu=soak.cpu_total(), max_ok=_max_ok(steps), stopped=stopped)
    lines = [
        "## Throughput and loss",
        "",
        f"Each ramp step ran {STEP_S:g} s (after a 2 s warm-up) on the whole stack ({_services(steps[0][2])}) "
        f"with one outside subscriber; the soak ran **{soak_s:.0f} s** at {TARGET_CHANNELS} channels x 20 kHz "
        f"(`BENCH_SOAK_S=600 make bench` runs the issue's full 10 minutes, ~{(600 - soak_s) / 60:.0f} min longer). "
        "Channels are EMG channels: the simulator's 3 AMR channels plus extra background channels "
        "(`--channels N`), plus SAMPLE_INDEX; above 243 channels (the simulator's limit) the rate is raised with "
        "`--speed`. Loss columns: samples missing or wrong at the outside subscribers (SAMPLE_INDEX) / messages "
        "lost by seq at the subscribers / archive samples missing or wrong / archive gap records / every "
        "service's `amrwatch_sequence_gaps_total` + `amrwatch_messages_lost_total`. Total CPU: the stack's "
        "processes (% of one core); others': the rest of the machine's busy time in the window besides the stack "
        "and the first subscriber: other people's work (this machine is shared), and in the subscriber steps "
        "the extra subscribers.",
        "",
        "| channels x rate | MS/s asked | MS/s published | loss (subscriber / seq / archive / gaps+lost) | "
        "CPU % (" + _services(steps[0][2]) + ") | total CPU % | others' CPU % | RSS MB |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for ch, speed, r in steps + [(TARGET_CHANNELS, 1.0, soak)]:
        tag = " **soak**" if r is soak else ""
        lines.append(
            f"| {ch} x {20 * speed:g} kHz{tag} | {(ch + 1) * 0.02 * speed:.2f} | "
            f"{(ch + 1) * r.achieved_hz / 1e6:.2f} | {_loss_cell(r)} | {_usage_cell(r, 'cpu_pct', '{:.0f}')} | "
            f"{r.cpu_total():.0f} | {r.others_pct:.0f} | {_usage_cell(r, 'rss_mb', '{:.0f}')} |")
    target = ("met" if not soak_lost and soak.sustained else "MISSED")
    lines += [
        "",
        f"- Target 64 channels x 20 kHz with no loss on this {os.cpu_count()}-core machine: **{target}** over "
        f"{soak_s:.0f} s ({soak.probe['checked_samples']:,} samples checked at the subscriber"
        + (f", {soak.archive['samples']:,} in the archive ({soak.archive['bytes'] / 1e9:.2f} GB)" if soak.archive
           else "") + f"), using {soak.cpu_total():.0f}% of {os.cpu_count() * 100}% CPU.",
        f"- Ramp: {stopped or _no_stop(steps)}; the largest step with no loss: {_max_ok(steps)}.",
        "",
        "### Where the time goes at 64 x 20 kHz (py-spy, first 30 s of the soak)",
        "",
        profile_markdown(prof, ["acquirer", "bus", "analyzer", "recorder", "monitor", "predictor"]),
    ]
    shutil.rmtree(prof, ignore_errors=True)
    lines += scaling_section(scaling, subs)
    return "\n".join(lines)


def _no_stop(steps) -> str:
    last = steps[-1][2]
    return (f"no step lost anything and every step kept its pace, up to the ramp's last step (BENCH_RAMP), where "
            f"the stack used {last.cpu_total():.0f}% of the machine's {os.cpu_count() * 100}% CPU")


def _max_ok(steps) -> str:
    ok = [(ch * sp, ch, sp) for ch, sp, r in steps if not r.lost_anywhere() and r.sustained]
    if not ok:
        return "none"
    _, ch, sp = max(ok)
    return f"{ch} x {20 * sp:g} kHz = {(ch + 1) * 0.02 * sp:.2f} MS/s (with SAMPLE_INDEX)"


def _lat(r: PipelineResult) -> tuple[dict, dict]:
    """(frame transport, measurement) over every subscriber of the run."""
    trans = np.concatenate([r.transport_ms, *[e["transport_ms"] for e in r.extra_latency]])
    meas = np.concatenate([r.measurement_ms, *[e["measurement_ms"] for e in r.extra_latency]])
    return pct(trans), pct(meas)


def scaling_section(scaling: dict[int, PipelineResult], subs: dict[int, PipelineResult]) -> list[str]:
    lines = [
        "## Scaling",
        "",
        "Real time (20 kHz), each point a ramp or subscriber step above. Frame latency: the acquirer's publish → "
        "arrival at the outside subscriber(s) (every frame, so thousands of samples per point); measurement "
        "latency: as in the end-to-end section (1 stimulus/s, so few samples per point: p50 and max only). "
        "CPU: the stack's processes, subscribers not included. The simulator's smallest montage has 3 EMG "
        "channels, so the 1-channel point is 3.",
        "",
        "| point | frame p50 ms | frame p99 ms | measurement p50 ms | measurement max ms (n) | stack CPU % | "
        "bus CPU % | subscribers' CPU % (first) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in [*[(f"{ch} channels, 1 subscriber", r) for ch, r in scaling.items()],
                     *[(f"64 channels, {n} subscribers", r) for n, r in subs.items()
                       if all(r is not x for x in scaling.values())]]:
        t, m = _lat(r)
        lines.append(f"| {label} | {t['p50']:.2f} | {t['p99']:.2f} | {m['p50']:.2f} | {m['max']:.2f} ({m['n']}) | "
                     f"{r.cpu_total():.0f} | {r.usage['bus']['cpu_pct']:.0f} | "
                     f"{r.usage.get('probe0', {}).get('cpu_pct', float('nan')):.0f} |")
    lines += ["", "![scaling](scaling.png)", ""]
    return lines


def plot(scaling: dict[int, PipelineResult], subs: dict[int, PipelineResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for col, (data, xlabel) in enumerate(((scaling, "EMG channels (20 kHz)"), (subs, "outside subscribers (64 ch)"))):
        xs = sorted(data)
        lat = [_lat(data[x]) for x in xs]
        a = ax[0][col]
        a.plot(xs, [t["p50"] for t, _ in lat], "o-", label="frame publish → subscriber, p50")
        a.plot(xs, [t["p99"] for t, _ in lat], "o--", label="frame publish → subscriber, p99")
        a.plot(xs, [m["p50"] for _, m in lat], "s-", label="frame → amr_measurement, p50")
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        a.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        a.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.set_xticks(xs, [str(x) for x in xs])
        a.set_ylabel("latency (ms, log)")
        a.set_xlabel(xlabel)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
        b = ax[1][col]
        names = [n for n in ["acquirer", "bus", "analyzer", "recorder", "predictor", "monitor"]
                 if all(n in data[x].usage for x in xs)]
        bottom = np.zeros(len(xs))
        for n in names:
            v = np.array([data[x].usage[n]["cpu_pct"] for x in xs])
            b.bar([str(x) for x in xs], v, bottom=bottom, label=n)
            bottom += v
        others = np.array([data[x].others_pct for x in xs])
        b.bar([str(x) for x in xs], others, bottom=bottom, label="rest of the machine (other work, extra subscribers)", color="0.85",
              hatch="//", edgecolor="0.6")
        b.set_ylabel("CPU (% of one core)")
        b.set_xlabel(xlabel)
        b.grid(alpha=0.3, axis="y")
        b.set_ylim(0, max(1.0, float((bottom + others).max())) * 1.45)
        b.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle("amrwatch scaling (same machine, same run)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    print(run())
