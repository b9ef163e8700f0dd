"""Accuracy against the simulator's ground truth (the issue's bounds), and the
state machine on every scripted operation.

Short by default; AMRWATCH_FULL=1 runs the full size (about 10x the sweeps and
full-length operations). The tables are printed (run with -s to see them).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.analyzer.settings import AnalyzerSettings

from .streams import by_key, feed, of_type, simulate

FULL = os.environ.get("AMRWATCH_FULL") == "1"
NOISE_UV = (3.0, 6.0, 12.0, 25.0)
STIMULI_PER_LEVEL = 4000 if FULL else 450  # ~1.5 sweeps per stimulus: >= 2,000 sweeps in all
SNR_BINS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, np.inf)


@pytest.fixture(scope="module")
def sweeps() -> list[dict]:
    """Every calibration sweep: truth and measurement side by side."""
    rows = []
    for i, noise in enumerate(NOISE_UV):
        s = simulate(seed=100 + i, scenario="calibration", calibration_stimuli=STIMULI_PER_LEVEL, noise_uv=noise)
        measured = by_key(feed(AnalyzerEngine(s.montage), s, [20_000]))
        for key, truth in s.truths.items():
            rows.append({"truth": truth, "m": measured[key], "noise": noise})
    return rows


def test_enough_sweeps_and_none_rejected(sweeps):
    assert len(sweeps) >= 2000
    assert not [r for r in sweeps if r["m"]["rejected"]]


def test_amplitude_and_onset(sweeps):
    strong = [r for r in sweeps if r["truth"].amplitude_uv >= 10 * r["truth"].noise_rms_uv]
    err = np.array([abs(r["m"]["p2p_uv"] - r["truth"].amplitude_uv) / r["truth"].amplitude_uv for r in strong])
    onset = np.array([abs(r["m"]["onset_latency_ms"] - r["truth"].onset_latency_ms) for r in strong])
    print(f"\namplitude (true AMR >= 10x noise RMS, n={len(strong)}): median |error| "
          f"{np.median(err) * 100:.2f}%, p95 {np.percentile(err, 95) * 100:.2f}%, max {err.max() * 100:.1f}%")
    print(f"onset latency: median |error| {np.median(onset):.3f} ms, p95 {np.percentile(onset, 95):.3f} ms")
    for noise in NOISE_UV:
        e = np.array([abs(r["m"]["p2p_uv"] - r["truth"].amplitude_uv) / r["truth"].amplitude_uv
                      for r in strong if r["noise"] == noise])
        print(f"  noise {noise:4.0f} µV: n={len(e):4d} median {np.median(e) * 100:.2f}% "
              f"p95 {np.percentile(e, 95) * 100:.2f}%")
    assert len(strong) > 500
    assert np.median(err) <= 0.05
    assert np.percentile(err, 95) <= 0.15
    assert np.median(onset) <= 0.2


def test_detection_and_the_sensitivity_curve(sweeps):
    absent = [r for r in sweeps if r["truth"].amplitude_uv == 0.0]
    false_present = np.mean([r["m"]["present"] for r in absent])
    ratio = np.array([r["truth"].amplitude_uv / r["truth"].noise_rms_uv for r in sweeps])
    present = np.array([r["m"]["present"] for r in sweeps])
    print(f"\nfalse present on {len(absent)} sweeps without an AMR: {false_present * 100:.2f}%")
    print("| true AMR / noise RMS | sweeps | detected (present) |")
    print("|---|---|---|")
    print(f"| 0 (no AMR) | {len(absent)} | {false_present * 100:.1f}% |")
    for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:]):
        sel = (ratio > 0) & (ratio >= lo) & (ratio < hi)
        if sel.any():
            print(f"| {lo:g}–{hi:g} | {sel.sum()} | {present[sel].mean() * 100:.1f}% |")
    strong = ratio >= 8
    sensitivity = present[strong].mean()
    print(f"sensitivity at >= 8x noise RMS: {sensitivity * 100:.2f}% (n={strong.sum()})")
    assert len(absent) > 300
    assert false_present <= 0.01
    assert sensitivity >= 0.99


# --------------------------------------------------------------------------- #
# The state machine on every scripted operation (with its diathermy bursts)

CLINICAL = ("disappears-after-decompression", "early-disappearance", "persists-expected",
            "persists-unexpected", "never-detected")
EXPECTED = {
    "disappears-after-decompression": "disappeared_after_decompression",
    "early-disappearance": "disappeared_before_decompression",
    "persists-expected": "persisted",
    "persists-unexpected": "persisted",
    "never-detected": "never_detected",
}
SEEDS = range(5) if FULL else range(2)
TIME_SCALE = 1.0 if FULL else 0.2


@pytest.mark.parametrize("scenario", CLINICAL)
def test_course_on_every_scenario(scenario):
    k_rule = AnalyzerSettings().disappear_k
    for seed in SEEDS:
        s = simulate(seed=seed, scenario=scenario, time_scale=TIME_SCALE)
        out = feed(AnalyzerEngine(s.montage), s, [20_000])
        m = by_key(out)
        course = of_type(out, "amr_course")
        assert course[-1]["course"] == EXPECTED[scenario], (seed, course[-1])
        gone = [f for f in of_type(out, "amr_state") if f["state"] == "disappeared"]

        # Diathermy: the sweeps it swamps are rejected, the others are not.
        dia = [m[k]["rejected"] for k, t in s.truths.items() if t.diathermy]
        clean = [m[k]["rejected"] for k, t in s.truths.items() if not t.diathermy]
        assert dia and np.mean(dia) >= 0.9 and np.mean(clean) <= 0.02, (np.mean(dia), np.mean(clean))

        for ch in s.montage.recording_channels("ZYG") + s.montage.recording_channels("MAR"):
            ks = sorted(k for k, c in s.truths if c == ch)
            amps = [s.truths[(k, ch)].amplitude_uv for k in ks]
            mine = [f for f in gone if f["channel"] == ch]
            zero = next((j for j in range(len(ks)) if all(a == 0.0 for a in amps[j:])), None)
            if scenario in ("persists-expected", "persists-unexpected", "never-detected"):
                assert not mine, f"false disappearance on {ch}: {mine}"
                continue
            assert zero is not None and len(mine) == 1, (ch, mine)
            reported = ks.index(mine[0]["stimulus_index"])
            lo, hi = sorted((zero, reported))
            good = sum(not m[(k, ch)]["rejected"] for k in ks[lo + 1 : hi + 1])
            delay = good if reported >= zero else -good
            print(f"{scenario} seed {seed} {ch}: disappearance reported {reported - zero:+d} stimuli "
                  f"({delay:+d} good sweeps) after the true one")
            assert abs(delay) <= k_rule + 2
