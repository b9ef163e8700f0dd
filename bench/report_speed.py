#!/usr/bin/env python3
"""How long `amrwatch report` takes on a 3,000-patient synthetic registry (target < 60 s).

Writes a synthetic registry of 3,000 operations (`amrwatch registry synthetic`), then times, in the
same run, the report on it and on a study-sized registry (157 operations) as the baseline, and
prints the time of each analysis step is not separated: the figure is the whole `make_report`
(cohort build, every statistic incl. the bootstraps, every figure, HTML and JSON), with the
libraries already imported (a CLI run adds their import, a few seconds).

Usage: .venv/bin/python bench/report_speed.py [--n 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SUMMARY: dict = {}


def _time_report(n: int, root: Path) -> tuple[float, float]:
    from amrwatch.study.report import make_report
    from amrwatch.study.synthetic_registry import generate

    data = root / f"data{n}"
    t = time.perf_counter()
    generate(data, n, seed=1)
    gen = time.perf_counter() - t
    t = time.perf_counter()
    make_report(data, root / f"out{n}")
    return gen, time.perf_counter() - t


def run(n: int = 3000) -> str:
    import amrwatch.study.report  # noqa: F401  (imports outside the timing)

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _time_report(157, root / "warm")  # first matplotlib/statsmodels use outside the timing
        g0, base = _time_report(157, root)
        g1, big = _time_report(n, root)
    SUMMARY.update(n=n, seconds=big, baseline=base)
    return "\n".join([
        "## amrwatch report on a synthetic registry", "",
        "| registry | generate | report | ratio to 157 | target |", "|---|---|---|---|---|",
        f"| 157 operations (baseline) | {g0:.1f} s | {base:.1f} s | 1.0x | |",
        f"| {n:,} operations | {g1:.1f} s | {big:.1f} s | {big / base:.1f}x | < 60 s: "
        f"{'met' if big < 60 else 'missed'} |", ""])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    print(run(ap.parse_args().n))
