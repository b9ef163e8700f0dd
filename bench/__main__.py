"""`make bench`: run every benchmark, print the tables, write bench/RESULTS.md.

Each module under bench/ with a `run() -> str` (markdown) is a section.
Figures are ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import os
import platform
import sys
import time
from pathlib import Path

import bench

SECTIONS = ["bench.bus", "bench.e2e", "bench.offline"]
OPTIONAL = ["bench.analyzer_speed", "bench.archive_throughput", "bench.predictor_speed", "bench.readers_speed",
            "bench.verify_speed", "bench.report_speed", "bench.sync", "bench.hub"]
#: Runs last: its soak takes what is left of the time budget (BENCH_BUDGET_S).
LAST = ["bench.throughput"]
#: Sections whose figures another section already measures on the same data in the same run.
COVERED_BY = {"bench.verify_speed": "bench.offline"}
HERE = Path(__file__).resolve().parent


def machine() -> str:
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import numpy
    import zmq

    return (f"- when: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}\n"
            f"- python {platform.python_version()}, numpy {numpy.__version__}, pyzmq {zmq.__version__}, "
            f"libzmq {zmq.zmq_version()}\n"
            "- shared machine: absolute times are noisy; compare the ratios, measured in the same run\n")


def _is_section(mod) -> bool:
    """A section has `run() -> str` callable without arguments (some modules' `run` is a helper)."""
    fn = getattr(mod, "run", None)
    if not callable(fn):
        return False
    params = inspect.signature(fn).parameters.values()
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def summary(ran: dict) -> str:
    """The headline figures and the issue's targets, met or missed."""
    rows = ["## Summary", "", "| figure | measured | target | |", "|---|---|---|---|"]
    e2e, off, thr = (getattr(ran.get(f"bench.{n}"), "SUMMARY", None) for n in ("e2e", "offline", "throughput"))
    if e2e:
        m, d, b = e2e["measurement"], e2e["decision"], e2e["bare"]
        rows += [
            f"| frame → amr_measurement p50 / p99 / max ({e2e['stimuli']:,} stimuli at {e2e['rate']:g}/s) | "
            f"{m['p50']:.2f} / {m['p99']:.2f} / {m['max']:.2f} ms | | |",
            f"| frame → decision p50 / p99 / max (n = {d['n']}) | {d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f} ms"
            " | | |",
            f"| p99 / bare pyzmq 4 hops ({b['p99']:.2f} ms) | {e2e['ratio']:.1f}x | ≤ 3x | "
            f"{'met' if e2e['ratio'] <= 3 else 'missed'} |",
            f"| processing overhead at p99 (ours − bare) | {e2e['overhead']:.2f} ms | ≤ 1 ms | "
            f"{'met' if e2e['overhead'] <= 1 else 'missed'} |",
            f"| LSL (pylsl) same traffic p50 / p99 | {e2e['lsl']['p50']:.2f} / {e2e['lsl']['p99']:.2f} ms | | |",
            f"| lost during the latency run (all checks) | {e2e['lost']} | 0 | {'met' if not e2e['lost'] else 'missed'} |",
        ]
    bus = getattr(ran.get("bench.bus"), "SUMMARY", None)
    if bus:
        rows += [
            f"| bus alone, 2 hops: p99 / bare `zmq.proxy` (median of {len(bus['bus_ratios'])} interleaved pairs: "
            f"{', '.join(f'{r:.2f}' for r in bus['bus_ratios'])}) | {bus['bus_alone']:.2f}x | ≤ 1.5x | "
            f"{'met' if bus['bus_alone'] <= 1.5 else 'missed'} |",
            f"| publish one frame / bare send (median of the rounds; CPU time {bus['publish_cpu']:.2f}x) | "
            f"{bus['publish']:.2f}x | ≤ 2x | {'met' if bus['publish'] <= 2 else 'missed'} |",
            f"| receive check of a frame: compiled gate / pydantic (CPU) | {bus['decode']['gate']:.1f} / "
            f"{bus['decode']['pydantic']:.1f} µs | | |",
        ]
    if thr:
        ok = not thr["soak_lost"] and thr["soak_sustained"]
        rows += [
            f"| 64 ch x 20 kHz soak, {thr['soak_s']:.0f} s: lost | {thr['soak_lost']} (CPU {thr['soak_cpu']:.0f}%) | "
            f"0 | {'met' if ok else 'missed'} |",
            f"| largest ramp step with no loss | {thr['max_ok']} | | {thr['stopped'] or ''} |",
        ]
    an = getattr(ran.get("bench.analyzer_speed"), "SUMMARY", None)
    if an:
        rows.append(f"| analyzer, one stimulus, 16 channels measured, median / p99 (sosfiltfilt alone "
                    f"{an['sosfiltfilt']:.0f} µs) | {an['median']:.0f} / {an['p99']:.0f} µs | ≤ 200 / ≤ 1000 µs | "
                    f"{'met' if an['median'] <= 200 and an['p99'] <= 1000 else 'missed'} |")
    if off:
        rows += [f"| `amrwatch analyze`, {off['minutes']} min archived session (disk read: {off['disk_x']:,.0f}x) | "
                 f"{off['analyze_x']:,.0f}x real time | ≥ 1,000x | {'met' if off['analyze_x'] >= 1000 else 'missed'} |",
                 f"| `amrwatch verify`, {off['minutes']} min session | {off['verify_x']:,.0f}x real time | ≥ 1,000x | "
                 f"{'met' if off['verify_x'] >= 1000 else 'missed'}, "
                 f"{'identical' if off['verify_ok'] else 'FAILED'} |"]
    return "\n".join(rows) + "\n"


def main() -> int:
    only = sys.argv[1:]
    parts = ["# amrwatch benchmark results", "", "Re-run with `make bench`.", "", machine()]
    ran: dict = {}
    for name in SECTIONS + OPTIONAL + LAST:
        if only and name.split(".")[-1] not in only:
            continue
        if COVERED_BY.get(name) in ran:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name and name in OPTIONAL:
                continue
            raise
        if not _is_section(mod):
            continue
        t = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        section = mod.run()
        ran[name] = mod
        print(section, flush=True)
        parts.append(section)
        parts.append(f"_({name} took {time.monotonic() - t:.0f} s)_\n")
    head = summary(ran)
    from bench.stack import service_registered

    if not service_registered("recorder"):
        head += "\nThe recorder (`amrwatch recorder`) was absent from this checkout: nothing was archived.\n"
    head += f"\nWhole run: {time.monotonic() - bench.STARTED_AT:.0f} s.\n"
    print(head, flush=True)
    parts.insert(5, head)
    if not only:
        (HERE / "RESULTS.md").write_text("\n".join(parts))
        print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
