"""Does the card tell the truth? Fit on a study-sized synthetic cohort, score on fresh patients.

Why: optimism correction and shrinkage are claims about performance on new
patients. The generator can draw as many new patients as we like, so the
claims can be checked directly: train exactly as `amrwatch train --synthetic`
does, then score the model on ≥ 10,000 fresh eligible patients from the same
generator and compare with what its card says (corrected AUC, calibration
slope, the cut-offs' sensitivity and specificity).

`python -m amrwatch.study.simulation --seeds 0 1 2 …` prints the table the
README quotes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

import numpy as np

from amrwatch.study import cohort as cohort_mod
from amrwatch.study import logistic as lg
from amrwatch.study.training import TrainingSettings, train

FRESH_SEED_OFFSET = 1_000_003


def fresh_patients(n_eligible: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At least n_eligible fresh eligible patients (a seed no training cohort uses)."""
    gen = cohort_mod.DEFAULT
    n_draw = int(n_eligible / (1 - gen.early_disappearance_share * 0.8)) + 1000
    x, y = gen.eligible_cohort(n_draw, FRESH_SEED_OFFSET + seed)
    return x[:n_eligible], y[:n_eligible]


def simulate(seed: int, *, n: int = 157, fresh: int = 10_000, settings: TrainingSettings | None = None,
             fresh_x: np.ndarray | None = None, fresh_y: np.ndarray | None = None) -> dict[str, Any]:
    """Train on the synthetic cohort (n detected, seed) and compare its card with fresh patients."""
    settings = settings or TrainingSettings()
    with tempfile.TemporaryDirectory() as d:
        card = train(d, synthetic_n=n, seed=seed, settings=settings, echo=None)
    if fresh_x is not None and fresh_y is not None:
        xf, yf = fresh_x, fresh_y
    else:
        xf, yf = fresh_patients(fresh, seed)
    coef = card["coefficients"]
    mean = np.array(list(coef["scaler_mean"].values()))
    sd = np.array(list(coef["scaler_sd"].values()))
    beta = np.r_[coef["standardised_intercept"], list(coef["standardised"].values())]
    lp = beta[0] + ((xf - mean) / sd) @ beta[1:]
    p = lg.expit(lp)
    intercept, slope = lg.calibration(yf, lp)
    low, high = card["cutoffs"]["low"], card["cutoffs"]["high"]
    perf = card["performance"]["optimism_corrected"]
    return {
        "seed": seed, "n_eligible": card["n"], "events": card["events"],
        "shrinkage": card["shrinkage"]["factor"],
        "apparent_auc": card["performance"]["apparent_auc"],
        "corrected_auc": perf["auc"]["estimate"], "corrected_auc_ci": perf["auc"]["ci"],
        "fresh_auc": float(lg.auc(yf, lp)[0]),
        "corrected_slope": perf["calibration_slope"]["estimate"],
        "fresh_slope": float(slope[0]), "fresh_intercept": float(intercept[0]),
        "corrected_brier": perf["brier"]["estimate"], "fresh_brier": float(np.mean((p - yf) ** 2)),
        "corrected_sens_low": perf["sensitivity_at_low"]["estimate"],
        "fresh_sens_low": float(np.mean(p[yf == 1] >= low)),
        "corrected_spec_high": perf["specificity_at_high"]["estimate"],
        "fresh_spec_high": float(np.mean(p[yf == 0] < high)),
        "fresh_n": int(len(yf)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--fresh", type=int, default=20_000)
    args = ap.parse_args(argv)
    print("| seed | n eligible | events | shrinkage | apparent AUC | corrected AUC (95% interval) | fresh AUC | "
          "corrected slope | fresh slope | corrected / fresh sens. at low | corrected / fresh spec. at high |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    t0 = time.perf_counter()
    for s in args.seeds:
        r = simulate(s, fresh=args.fresh)
        rows.append(r)
        lo, hi = r["corrected_auc_ci"]
        print(f"| {s} | {r['n_eligible']} | {r['events']} | {r['shrinkage']:.2f} | {r['apparent_auc']:.3f} | "
              f"{r['corrected_auc']:.3f} ({lo:.3f}–{hi:.3f}) | {r['fresh_auc']:.3f} | {r['corrected_slope']:.2f} | "
              f"{r['fresh_slope']:.2f} | {r['corrected_sens_low']:.2f} / {r['fresh_sens_low']:.2f} | "
              f"{r['corrected_spec_high']:.2f} / {r['fresh_spec_high']:.2f} |", flush=True)
    gap = [abs(r["corrected_auc"] - r["fresh_auc"]) for r in rows]
    print(f"\nmean |corrected − fresh AUC| {np.mean(gap):.3f} (max {np.max(gap):.3f}); fresh slope "
          f"{min(r['fresh_slope'] for r in rows):.2f}–{max(r['fresh_slope'] for r in rows):.2f}; "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
