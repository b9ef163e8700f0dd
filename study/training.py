"""Fit, validate and export the persistence model (`amrwatch train`).

Population: patients whose AMR was detected and still present when
decompression started — the only patients the predictor is ever consulted
for. Never-detected AMRs have no label; AMRs that disappeared before
decompression (opening, arachnoid dissection) are excluded and counted,
because counting them as "disappeared" lowers the persistence the model
learns (21 % instead of 29 % in the synthetic cohort) and its predictions
would run low exactly where they are used.

The model: a logistic regression of the study's seven factors, made honest
for ~5 events per factor by *uniform shrinkage*: the maximum-likelihood
slopes are multiplied by one factor s, the bootstrap calibration slope
(mean slope of models refitted on 200 resamples, scored on the data), and
the intercept is re-estimated so the mean prediction equals the event rate.
Why this rather than ridge with a cross-validated penalty: it targets
calibration directly, keeps the seven coefficients' ratios (the odds ratios
the study reports stay readable), and at this sample size a cross-validated
penalty is itself unstable. Where a resample's outcomes are separated (no
maximum-likelihood estimate exists) that fit is Firth's penalised one:
kept and counted, never skipped (skipping drops the resamples that overfit
most and biases the optimism low).

Validation (Harrell's bootstrap, the whole procedure refitted in every
resample: fit, its own shrinkage factor from an inner bootstrap, intercept,
both cut-offs): optimism-corrected AUC, Brier score, calibration intercept
and slope, sensitivity at the low cut-off and specificity at the high one,
each with an approximate 95 % interval. The batched fitter that makes this
affordable is `study/logistic.py`; the simulation that checks the card
against fresh patients is `study/simulation.py`.

Cut-offs (the bands the decision rules use), chosen on the training data:

- ``low``: the highest threshold at which the model still flags ≥ 95% of the
  patients whose AMR persisted (sensitivity ≥ 0.95). A persisting AMR in a
  patient below it is unexpected, which is what should send a surgeon back
  to look for a missed vessel.
- ``high``: the lowest threshold at which ≥ 90% of the patients whose AMR
  disappeared stay below it (specificity ≥ 0.90). Persistence above it is
  expected, which is what lets a surgeon stop once decompression is seen to
  be adequate. Youden's threshold is reported alongside for comparison.

Each cut-off is placed midway between the training probability that meets
the rule and the next lower one, so no training patient sits exactly on it.

Reproducibility: the fits are solved to machine precision (Newton, fixed seeds) and the
final
parameters are rounded to float32 — what the ONNX graph stores anyway — and
the sklearn pipeline is given the same rounded values, so sklearn,
onnxruntime and the golden vectors describe one model, and the same data
give a byte-identical `model.onnx` and `model_card.json` on any machine with
the same library versions. Statistics in the card are rounded to 6
significant digits for the same reason.

sklearn, statsmodels and skl2onnx are the ``train`` extra, hence imported
inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amrwatch.proto.messages import BANDS
from amrwatch.study import cohort as cohort_mod
from amrwatch.study.cohortcsv import read_cohort
from amrwatch.services.predictor.features import FEATURE_NAMES, FEATURES, row_dict
from amrwatch.services.predictor.model import SYNTHETIC_NOTICE, band_for

CARD_VERSION = 2
MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
INPUT_NAME = "factors"
PROBABILITY_OUTPUT = "probabilities"

#: Scenario patients of the simulator (acquirer/sim/scenario.py): the shipped
#: model must put the first in its low band and the second in its high band.
SCENARIO_PATIENTS: dict[str, dict[str, Any]] = {
    "low_risk": dict(duration_years=1.5, cohen_grade=2, carbamazepine=False, vessels=1,
                     amr_amplitude_uv=150.0, retraction_mm=6.0, displacement=3),
    "high_risk": dict(duration_years=12.0, cohen_grade=4, carbamazepine=True, vessels=3,
                      amr_amplitude_uv=600.0, retraction_mm=14.0, displacement=1),
}


class TrainingError(ValueError):
    """The data cannot give a usable model; the message says why."""


@dataclass(frozen=True)
class TrainingSettings:
    bootstrap_resamples: int = 200
    shrinkage_resamples: int = 200
    """Bootstrap resamples estimating the shipped model's shrinkage factor."""
    nested_shrinkage_resamples: int = 25
    """Inner resamples estimating each validation resample's own shrinkage factor."""
    low_sensitivity: float = 0.95
    high_specificity: float = 0.90
    ci_level: float = 0.95
    min_events: int = 10
    """Fewer persisting (or disappearing) patients than this cannot be fitted sensibly."""
    opset: int = 17
    ml_opset: int = 3
    golden_training_rows: int = 4
    comparison_model: bool = False
    """Also fit gradient boosting (sklearn) on the same resamples and report it beside the logistic model;
    it is never exported or shipped."""

    def __post_init__(self) -> None:
        checks = [
            ("bootstrap_resamples", self.bootstrap_resamples, 10, 100_000),
            ("shrinkage_resamples", self.shrinkage_resamples, 10, 100_000),
            ("nested_shrinkage_resamples", self.nested_shrinkage_resamples, 5, 10_000),
            ("low_sensitivity", self.low_sensitivity, 0.5, 1.0),
            ("high_specificity", self.high_specificity, 0.5, 1.0),
            ("ci_level", self.ci_level, 0.5, 0.999),
            ("min_events", self.min_events, 1, 10_000),
        ]
        for name, v, lo, hi in checks:
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}]; got {v}")


# --------------------------------------------------------------------------- #
# Statistics


def _sig(x: float, digits: int = 6) -> float:
    """Round to significant digits (stable card text across machines)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits - 1}e}")


def fit_pipeline(X: np.ndarray, y: np.ndarray):
    """Scaler + unpenalised logistic regression, solved to machine precision, float32-rounded."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([
        ("scaler", StandardScaler()),
        ("logreg", LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=200)),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bootstrap resamples may be separable; judged by their AUC
        pipe.fit(np.asarray(X, dtype=float), np.asarray(y, dtype=int))
    scaler, lr = pipe.named_steps["scaler"], pipe.named_steps["logreg"]
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)  # noqa: E731
    scaler.mean_ = f32(scaler.mean_)
    scaler.scale_ = 1.0 / f32(1.0 / scaler.scale_)  # the graph stores the reciprocal
    lr.coef_ = f32(lr.coef_)
    lr.intercept_ = f32(lr.intercept_)
    return pipe


def predict_proba(pipe, X: np.ndarray) -> np.ndarray:
    return pipe.predict_proba(np.asarray(X, dtype=float))[:, 1]


def delong_auc(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """AUC with DeLong's standard error and a (level) CI: (auc, low, high, se)."""
    from scipy import stats

    y = np.asarray(y, dtype=int)
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise TrainingError(f"an AUC needs at least 2 patients of each outcome; got {m} persisted, {n} disappeared")
    # Placement values: how each positive ranks among the negatives and vice versa (ties count half).
    v10 = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=1)
    v01 = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=0)
    auc = float(v10.mean())
    se = math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    z = stats.norm.ppf(0.5 + level / 2)
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se), se


def calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(intercept, slope): calibration-in-the-large with the linear predictor as offset, and the slope on it."""
    import statsmodels.api as sm

    eps = 1e-12
    lp = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slope = sm.GLM(y, sm.add_constant(lp, has_constant="add"), family=sm.families.Binomial()).fit().params[1]
        intercept = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit().params[0]
    return float(intercept), float(slope)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    intercept, slope = calibration(y, p)
    return {"auc": float(roc_auc_score(y, p)), "cal_intercept": intercept, "cal_slope": slope, "brier": brier(y, p)}


SEPARATION_BETA = 15.0
"""A maximum-likelihood coefficient beyond this many log-odds per standard deviation of a factor means
the fit ran off towards infinity (separation): no real effect is that large."""


def _design(X: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return np.c_[np.ones(len(X)), (np.asarray(X, dtype=float) - mean) / sd]


def ml_or_firth(Z: np.ndarray, y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (B, p) by maximum likelihood, and which (B,) were separated and so fitted by Firth."""
    from amrwatch.study import logistic as lg

    conv = np.empty(len(W), dtype=bool)
    beta = lg.fit(Z, y, W, firth=False, max_iter=60, converged=conv)
    bad = ~conv | ~np.isfinite(beta).all(axis=1) | (np.abs(beta[:, 1:]).max(axis=1) > SEPARATION_BETA)
    if bad.any():
        beta[bad] = lg.fit(Z, y, W[bad], firth=True)
    return beta, bad


def shrinkage_factors(Z: np.ndarray, y: np.ndarray, W: np.ndarray, resamples: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Uniform shrinkage factor (B,) of each weighted data set W: the mean calibration slope, on that data,
    of models refitted on `resamples` bootstrap resamples of it (capped at 1); and how many of those
    inner fits were separated (Firth)."""
    from amrwatch.study import logistic as lg

    B, n = W.shape
    out = np.empty(B)
    separated = 0
    chunk = max(1, 4000 // resamples)
    for c in range(0, B, chunk):
        Wc = W[c:c + chunk]
        inner = np.concatenate([rng.multinomial(n, w / w.sum(), size=resamples) for w in Wc]).astype(float)
        beta, sep = ml_or_firth(Z, y, inner)
        separated += int(sep.sum())
        _, slope = lg.calibration(y, lg.predict_lp(Z, beta), np.repeat(Wc, resamples, axis=0))
        out[c:c + chunk] = slope.reshape(len(Wc), resamples).mean(axis=1)
    # A slope above 1 asks for no shrinkage; one at or below 0 means the factors carry no usable signal
    # (the model then predicts the event rate for everyone).
    return np.clip(out, 0.0, 1.0), separated


def fit_procedure(Z: np.ndarray, y: np.ndarray, W: np.ndarray, shrink_resamples: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """The whole model-building procedure on each weighted data set W (B, n).

    Maximum likelihood (Firth where separated) → uniform shrinkage of the slopes by the bootstrap
    calibration slope → intercept re-estimated so the mean prediction equals the event rate.
    Returns coef (B, p) on the standardised design, shrinkage (B,), separated (B,) and inner_separated."""
    from amrwatch.study import logistic as lg

    beta, sep = ml_or_firth(Z, y, W)
    s, inner_sep = shrinkage_factors(Z, y, W, shrink_resamples, rng)
    slopes = beta[:, 1:] * s[:, None]
    lp = lg.predict_lp(Z[:, 1:], slopes)
    a = lg.refit_intercept(y, lp, W)
    return {"coef": np.c_[a, slopes], "ml": beta, "shrinkage": s, "separated": sep, "inner_separated": inner_sep}


def _metrics(y: np.ndarray, lp: np.ndarray, W: np.ndarray | None, calibration: bool = True) -> dict[str, np.ndarray]:
    from amrwatch.study import logistic as lg

    lp = np.atleast_2d(lp)
    Wn = np.ones_like(lp) if W is None else W
    p = lg.expit(lp)
    out = {"auc": lg.auc(y, lp, Wn), "brier": (Wn * (p - y) ** 2).sum(axis=1) / Wn.sum(axis=1)}
    if calibration:
        out["cal_intercept"], out["cal_slope"] = lg.calibration(y, lp, Wn)
    return out


def bootstrap_validation(Z: np.ndarray, y: np.ndarray, settings: TrainingSettings, seed: int,
                         apparent: dict[str, float]) -> dict[str, Any]:
    """Harrell's bootstrap with the whole procedure (fit, shrinkage, intercept, cut-offs) refitted in each
    resample; separated resamples are fitted by Firth and kept. Per statistic: optimism (mean of
    resample score − original-data score), the corrected estimate (apparent − optimism) and an
    approximate interval (the resamples' own scores' percentiles, shifted by the optimism)."""
    from amrwatch.study import logistic as lg

    rng = np.random.default_rng([seed, 2])  # a stream of its own: not the cohort generator's `seed` stream
    W = resample_weights(rng, y, settings.bootstrap_resamples)
    fits = fit_procedure(Z, y, W, settings.nested_shrinkage_resamples, rng)
    lp = lg.predict_lp(Z, fits["coef"])
    on_boot, on_orig = _metrics(y, lp, W, calibration=False), _metrics(y, lp, None)
    # Each resample's calibration on itself follows from the procedure: the maximum-likelihood fit is
    # calibrated on its own data (intercept 0, slope 1), so shrinking its slopes by s and refitting the
    # intercept gives intercept 0 and slope 1/s there. Taken analytically because a separated resample's
    # own calibration slope is infinite (its Firth fit is the finite stand-in, not its apparent slope).
    on_boot["cal_intercept"] = np.zeros(len(W))
    on_boot["cal_slope"] = 1.0 / fits["shrinkage"]
    sens_b, sens_o, spec_b, spec_o = [], [], [], []
    p = lg.expit(lp)
    for b in range(len(W)):
        low, high = _cutoff_values(y, p[b], settings, W[b])  # crossed cut-offs still have sens and spec
        sens_b.append(_wmean(p[b] >= low, W[b] * y))
        spec_b.append(_wmean(p[b] < high, W[b] * (1 - y)))
        sens_o.append(float(np.mean(p[b][y == 1] >= low)))
        spec_o.append(float(np.mean(p[b][y == 0] < high)))
    on_boot["sens_low"], on_orig["sens_low"] = np.array(sens_b), np.array(sens_o)
    on_boot["spec_high"], on_orig["spec_high"] = np.array(spec_b), np.array(spec_o)
    alpha = 1.0 - settings.ci_level
    out: dict[str, Any] = {}
    for k in on_boot:
        opt = float(np.mean(on_boot[k] - on_orig[k]))
        corrected = apparent[k] - opt
        if k.startswith("cal_"):
            # fixed by construction on each resample, so the spread comes from the original-data side
            lo, hi = np.quantile(on_orig[k], [alpha / 2, 1 - alpha / 2]) + (corrected - float(np.mean(on_orig[k])))
        else:
            lo, hi = np.quantile(on_boot[k], [alpha / 2, 1 - alpha / 2]) - opt
        out[k] = {"apparent": apparent[k], "optimism": opt, "corrected": corrected,
                  "ci": [float(lo), float(hi)], "resamples": int(len(on_boot[k]))}
    if settings.comparison_model:
        out["_comparison"] = comparison_model(X_orig_from_Z(Z), y, W, settings)
    out["_separated"] = int(fits["separated"].sum())
    out["_inner_separated"] = int(fits["inner_separated"])
    out["_shrinkage"] = fits["shrinkage"]
    return out


def X_orig_from_Z(Z: np.ndarray) -> np.ndarray:
    """The standardised factors (a tree model is invariant to the scaling)."""
    return Z[:, 1:]


GBM_PARAMS = {"max_iter": 100, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 10, "random_state": 0}


def _gbm(X: np.ndarray, y: np.ndarray, w: np.ndarray | None):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**GBM_PARAMS).fit(X, y, sample_weight=w)


def comparison_model(X: np.ndarray, y: np.ndarray, W: np.ndarray, settings: TrainingSettings) -> dict[str, Any]:
    """Gradient boosting (sklearn HistGradientBoosting, fixed settings and seed) validated on the very resamples
    the logistic model was: apparent, optimism and corrected AUC and Brier. Reported, never shipped."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # hundreds of small fits: threads only contend (and the result must not vary)
        return _comparison_model(X, y, W)


def _comparison_model(X: np.ndarray, y: np.ndarray, W: np.ndarray) -> dict[str, Any]:
    from amrwatch.study import logistic as lg

    full = _gbm(X, y, None).predict_proba(X)[:, 1]
    app = {"auc": float(lg.auc(y, full)[0]), "brier": float(np.mean((full - y) ** 2))}
    boot: dict[str, list[float]] = {"auc": [], "brier": []}
    orig: dict[str, list[float]] = {"auc": [], "brier": []}
    for w in W:
        keep = w > 0
        p = _gbm(X[keep], y[keep], w[keep]).predict_proba(X)[:, 1]
        boot["auc"].append(float(lg.auc(y, p, w)[0]))
        boot["brier"].append(float(np.sum(w * (p - y) ** 2) / w.sum()))
        orig["auc"].append(float(lg.auc(y, p)[0]))
        orig["brier"].append(float(np.mean((p - y) ** 2)))
    out: dict[str, Any] = {"model": "gradient boosting (sklearn HistGradientBoostingClassifier)", "params": GBM_PARAMS,
                           "shipped": False, "resamples": int(len(W))}
    for k in ("auc", "brier"):
        opt = float(np.mean(np.array(boot[k]) - np.array(orig[k])))
        out[k] = {"apparent": _sig(app[k]), "optimism": _sig(opt), "estimate": _sig(app[k] - opt)}
    return out


def resample_weights(rng: np.random.Generator, y: np.ndarray, count: int) -> np.ndarray:
    """(count, n) bootstrap frequency weights; a resample holding one outcome only (no model can be fitted
    to it, separated or not) is drawn again — vanishingly rare at the cohort sizes training accepts."""
    n = len(y)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=count).astype(float)
    for _ in range(1000):
        bad = ((W * y).sum(axis=1) == 0) | ((W * (1 - y)).sum(axis=1) == 0)
        if not bad.any():
            return W
        W[bad] = rng.multinomial(n, np.full(n, 1.0 / n), size=int(bad.sum()))
    raise TrainingError("bootstrap resamples keep containing one outcome only; more patients of each outcome are needed")


def _wmean(hit: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * hit) / np.sum(w))


def bootstrap_optimism(X: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Optimism of the whole procedure, keyed as `_scores` (the test-facing short form of
    `bootstrap_validation`)."""
    settings = TrainingSettings(bootstrap_resamples=resamples, nested_shrinkage_resamples=10)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    Z = _design(X, mean, sd)
    fits = fit_procedure(Z, y, np.ones((1, len(y))), settings.shrinkage_resamples, np.random.default_rng(seed))
    from amrwatch.study import logistic as lg

    m = _metrics(y, lg.predict_lp(Z, fits["coef"]), None)
    apparent = {k: float(v[0]) for k, v in m.items()}
    apparent.update(sens_low=1.0, spec_high=1.0)
    val = bootstrap_validation(Z, y, settings, seed, apparent)
    out = {k: v["optimism"] for k, v in val.items() if not k.startswith("_")}
    out["separated_firth"] = float(val["_separated"])
    return out


def odds_ratios(X: np.ndarray, y: np.ndarray, level: float = 0.95, shrinkage: float = 1.0) -> list[dict[str, Any]]:
    """Per-factor odds ratios (per the feature's reporting increment) with Wald CIs, by statsmodels.

    The odds ratio, interval and p-value are the unpenalised fit's (the study's analysis);
    `shrunk_odds_ratio` is the model's own (log-odds times the shrinkage factor)."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = sm.Logit(y, sm.add_constant(X, has_constant="add")).fit(method="newton", maxiter=100, disp=0)
        except Exception as err:  # singular matrix, perfect separation
            raise TrainingError(
                f"the logistic model cannot be estimated on these data ({err}); "
                "usually a factor separates the outcomes perfectly or two factors are collinear — more patients are needed"
            ) from None
    if not res.mle_retvals.get("converged", False) or not np.all(np.isfinite(res.bse)):
        raise TrainingError(
            "the logistic model did not converge (a factor may separate the outcomes perfectly); more patients are needed"
        )
    ci = res.conf_int(alpha=1 - level)
    out = []
    for j, feat in enumerate(FEATURES, start=1):
        b, (lo, hi) = res.params[j], ci[j]
        out.append({
            "feature": feat.name,
            "per": feat.per,
            "per_label": feat.per_label,
            "unit": feat.unit,
            "log_odds_per_unit": _sig(b),
            "odds_ratio": _sig(math.exp(b * feat.per)),
            "shrunk_odds_ratio": _sig(math.exp(shrinkage * b * feat.per)),
            "ci_low": _sig(math.exp(lo * feat.per)),
            "ci_high": _sig(math.exp(hi * feat.per)),
            "p_value": _sig(float(res.pvalues[j]), 3),
        })
    return out


def _midpoint_below(values: np.ndarray, t: float) -> float:
    below = values[values < t]
    return float((t + below.max()) / 2) if below.size else float(t / 2)


def _rates(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, sensitivity of p >= t, specificity of p < t) over the distinct p of rows with weight."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    keep = w > 0
    y, p, w = y[keep], p[keep], w[keep]
    uniq = np.unique(p)
    order = np.argsort(p, kind="mergesort")
    ps, wp, wn = p[order], (w * y)[order], (w * (1 - y))[order]
    idx = np.searchsorted(ps, uniq, side="left")  # rows strictly below each threshold
    cp, cn = np.r_[0.0, np.cumsum(wp)], np.r_[0.0, np.cumsum(wn)]
    sens = 1.0 - cp[idx] / cp[-1]
    spec = cn[idx] / cn[-1]
    return uniq, sens, spec


def _cutoff_values(y: np.ndarray, p: np.ndarray, settings: TrainingSettings,
                   w: np.ndarray | None = None) -> tuple[float, float]:
    """(low, high) by the documented rules on (weighted) data; low may lie above high (the caller decides)."""
    uniq, sens, spec = _rates(y, p, w)
    t_low = uniq[sens >= settings.low_sensitivity - 1e-12].max()
    meets = uniq[spec >= settings.high_specificity - 1e-12]
    if meets.size == 0:  # (nearly) constant predictions: only a threshold above every patient is that specific
        return _midpoint_below(uniq, t_low), float(np.nextafter(uniq.max(), np.inf))
    return _midpoint_below(uniq, t_low), _midpoint_below(uniq, meets.min())


def choose_cutoffs(y: np.ndarray, p: np.ndarray, settings: TrainingSettings) -> dict[str, Any]:
    """The low/high cut-offs by the rules in the module docstring, with what they achieve."""
    pos, neg = p[y == 1], p[y == 0]
    uniq, sens, spec = _rates(y, p, None)
    low, high = _cutoff_values(y, p, settings)
    if low > high:
        raise TrainingError(
            f"the two cut-offs cross: the one keeping sensitivity ≥ {settings.low_sensitivity:g} ({low:.3f}) lies "
            f"above the one keeping specificity ≥ {settings.high_specificity:g} ({high:.3f}), so no intermediate "
            "band exists; lower low_sensitivity or high_specificity"
        )
    youden = uniq[int(np.argmax(sens + spec - 1))]
    bands = [band_for(float(v), low, high) for v in p]
    return {
        "low": _sig(low, 9),
        "high": _sig(high, 9),
        "rule": (
            f"low: highest threshold with sensitivity >= {settings.low_sensitivity:g} for persistence "
            f"(a persisting AMR below it is unexpected); high: lowest threshold with specificity >= "
            f"{settings.high_specificity:g} (persistence above it is expected); each placed midway to the "
            "next lower training probability"
        ),
        "sensitivity_at_low": _sig(float((pos >= low).mean())),
        "specificity_at_high": _sig(float((neg < high).mean())),
        "youden_threshold": _sig(float(youden)),
        "training_bands": {b: bands.count(b) for b in BANDS},
        "persisted_by_band": {
            b: int(sum(1 for bb, yy in zip(bands, y) if bb == b and yy == 1)) for b in BANDS
        },
    }


# --------------------------------------------------------------------------- #
# Export


def export_onnx(pipe, settings: TrainingSettings, *, synthetic: bool) -> bytes:
    """Deterministic ONNX bytes: fixed names and opsets, no ZipMap, no random graph name."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        pipe,
        name="amr_persistence",
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": settings.opset, "ai.onnx.ml": settings.ml_opset},
        options={id(pipe): {"zipmap": False}},
    )
    # skl2onnx may list a domain twice; keep one entry per domain (highest version).
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.add(domain=domain, version=versions[domain])
    model.doc_string = "Probability that the AMR persists at the end of decompression (amrwatch)."
    model.graph.doc_string = ""
    meta = {
        "amrwatch.features": ",".join(FEATURE_NAMES),
        "amrwatch.synthetic": str(synthetic).lower(),
    }
    if synthetic:
        meta["amrwatch.notice"] = SYNTHETIC_NOTICE
    del model.metadata_props[:]
    for k in sorted(meta):
        model.metadata_props.add(key=k, value=meta[k])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def onnx_io(blob: bytes) -> dict[str, Any]:
    """The card's description of the graph's inputs and outputs, read from the graph itself."""
    import onnx

    from amrwatch.services.predictor.model import tensor_spec

    proto = onnx.load_model_from_string(blob)
    spec = lambda v: dict(zip(("name", "dtype", "shape"), tensor_spec(v)))  # noqa: E731
    return {
        "input": spec(proto.graph.input[0]),
        "outputs": [spec(o) for o in proto.graph.output],
        "probability_output": PROBABILITY_OUTPUT,
        "positive_class_index": 1,
        "opset": {op.domain or "ai.onnx": op.version for op in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}",
    }


def training_range(X: np.ndarray) -> dict[str, list[float]]:
    """Each factor's [lowest, highest] value in the rows the model was fitted on.

    Why: a logistic model extrapolates without limit, so a factor outside these values (a 35 mm
    retraction when the cohort's deepest was 16 mm) can push p to 0 or 1 with nothing behind it;
    the runtime lists such factors in `prediction.extrapolated` and the decision engine then
    does not trust the band.
    """
    X = np.asarray(X, dtype=float)
    return {f.name: [float(X[:, j].min()), float(X[:, j].max())] for j, f in enumerate(FEATURES)}


def golden_vectors(pipe, X: np.ndarray, cutoffs: dict, settings: TrainingSettings) -> list[dict[str, Any]]:
    """Rows whose sklearn probabilities the runtime re-computes at start-up."""
    rows = [("scenario " + k, v) for k, v in SCENARIO_PATIENTS.items()]
    rows += [(f"training row {i}", row_dict(X[i])) for i in range(min(settings.golden_training_rows, len(X)))]
    rows.append(("range minimum", {f.name: (False if f.kind == "bool" else (int(f.low) if f.kind == "int" else float(f.low))) for f in FEATURES}))
    rows.append(("range maximum", {f.name: (True if f.kind == "bool" else (int(f.high) if f.kind == "int" else float(f.high))) for f in FEATURES}))
    out = []
    for label, inputs in rows:
        x = np.array([[float(inputs[n]) for n in FEATURE_NAMES]])
        p = float(predict_proba(pipe, x)[0])
        out.append({"label": label, "inputs": inputs, "probability": round(p, 9),
                    "band": band_for(p, cutoffs["low"], cutoffs["high"])})
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    return {pkg: md.version(pkg) for pkg in ("scikit-learn", "statsmodels", "skl2onnx", "onnx", "numpy", "scipy")}


# --------------------------------------------------------------------------- #
# The command


def _check_data(X: np.ndarray, y: np.ndarray, settings: TrainingSettings) -> None:
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    if events < settings.min_events or non_events < settings.min_events:
        raise TrainingError(
            f"need at least {settings.min_events} patients whose AMR persisted and {settings.min_events} whose AMR "
            f"disappeared; got {events} and {non_events}"
        )
    for j, feat in enumerate(FEATURES):
        if np.all(X[:, j] == X[0, j]):
            raise TrainingError(
                f"factor {feat.name} has the same value ({X[0, j]:g}) for every patient; its effect cannot be estimated"
            )


def shrunk_pipeline(X: np.ndarray, coef: np.ndarray):
    """The sklearn pipeline (scaler + logistic regression) carrying given coefficients on the standardised
    scale, float32-rounded as the ONNX graph stores them."""
    pipe = fit_pipeline(X, (np.arange(len(X)) % 2).astype(int))  # shapes and fitted state only
    scaler, lr = pipe.named_steps["scaler"], pipe.named_steps["logreg"]
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)  # noqa: E731
    scaler.mean_ = f32(np.asarray(X, dtype=float).mean(axis=0))
    scaler.scale_ = 1.0 / f32(1.0 / np.asarray(X, dtype=float).std(axis=0))
    scaler.var_ = scaler.scale_ ** 2
    lr.coef_ = f32(np.asarray(coef[1:])[None, :])
    lr.intercept_ = f32(np.asarray(coef[:1]))
    return pipe


def _ci(d: dict[str, Any]) -> dict[str, Any]:
    return {"apparent": _sig(d["apparent"]), "optimism": _sig(d["optimism"]), "estimate": _sig(d["corrected"]),
            "ci": [_sig(d["ci"][0]), _sig(d["ci"][1])]}


def riley_sample_size(Z: np.ndarray, y: np.ndarray, beta_ml: np.ndarray, target_shrinkage: float = 0.9) -> dict:
    """Riley et al. (BMJ 2020) criterion 1: the patients needed for an expected uniform shrinkage of at least
    `target_shrinkage`, given this model's Cox–Snell R² (from its likelihood-ratio statistic; optimistic,
    so the figure is a lower bound)."""
    from amrwatch.study import logistic as lg

    n, params = len(y), Z.shape[1] - 1
    p = np.clip(lg.expit(Z @ beta_ml), 1e-15, 1 - 1e-15)
    ll = float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    rate = y.mean()
    ll0 = float(n * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    r2cs = 1.0 - math.exp(-2.0 * (ll - ll0) / n)
    r2_max = 1.0 - math.exp(2.0 * ll0 / n)
    r2_conservative = 0.15 * r2_max  # Riley's default when the R² is not known independently
    s = target_shrinkage

    def needed(r2: float) -> int:
        return math.ceil(params / ((s - 1.0) * math.log(1.0 - r2 / s)))

    n_app, n_cons = needed(r2cs), needed(r2_conservative)
    return {
        "criterion": f"Riley et al. 2020, criterion 1 (expected uniform shrinkage >= {s:g})",
        "cox_snell_r2_apparent": _sig(r2cs, 4),
        "cox_snell_r2_conservative": _sig(r2_conservative, 4),
        "parameters": params,
        "patients_needed_apparent_r2": n_app,
        "patients_needed": n_cons,
        "events_needed": math.ceil(n_cons * rate),
        "patients_available": n,
        "rationale": (f"no formal calculation was possible before the data existed: n is the study's size. With "
                      f"{int(y.sum())} events for {params} parameters ({y.sum() / params:.1f} per parameter) the "
                      f"model needs shrinkage. Riley's criterion with the conservative R² (15 % of the maximum, "
                      f"{r2_conservative:.3f}) asks for {n_cons} patients ({math.ceil(n_cons * rate)} events) for an "
                      f"expected shrinkage of {s:g} — {'met' if n >= n_cons else 'not met, hence the explicit shrinkage'}; "
                      f"with this sample's apparent R² ({r2cs:.3f}, which overfitting inflates) it would ask only "
                      f"{n_app}"),
    }


def fit_and_describe(X: np.ndarray, y: np.ndarray, settings: TrainingSettings, seed: int) -> tuple[Any, dict]:
    """The fitted (shrunk) pipeline and every statistic the card reports about it."""

    _check_data(X, y, settings)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    Z = _design(X, mean, sd)
    rng = np.random.default_rng([seed, 1])  # the shrinkage factor's own stream, apart from validation's
    final = fit_procedure(Z, y, np.ones((1, len(y))), settings.shrinkage_resamples, rng)
    pipe = shrunk_pipeline(X, final["coef"][0])
    p = predict_proba(pipe, X)
    lp = np.log(p / (1.0 - p))
    auc, lo, hi, se = delong_auc(y, p, settings.ci_level)
    m = _metrics(y, lp, None)
    apparent = {k: float(v[0]) for k, v in m.items()}
    cutoffs = choose_cutoffs(y, p, settings)
    apparent["sens_low"] = float(cutoffs["sensitivity_at_low"])
    apparent["spec_high"] = float(cutoffs["specificity_at_high"])
    val = bootstrap_validation(Z, y, settings, seed, apparent)
    scaler, lr = pipe.named_steps["scaler"], pipe.named_steps["logreg"]
    beta_std = lr.coef_[0]
    beta_unit = beta_std / scaler.scale_
    intercept_unit = float(lr.intercept_[0] - np.sum(beta_unit * scaler.mean_))
    shrink = float(final["shrinkage"][0])
    cutoffs["sensitivity_at_low_corrected"] = _ci(val["sens_low"])
    cutoffs["specificity_at_high_corrected"] = _ci(val["spec_high"])
    events = int(y.sum())
    ml_unit = final["ml"][0, 1:] / sd
    sample_size = riley_sample_size(Z, y, final["ml"][0])
    perf = {
        "apparent_auc": _sig(auc),
        "apparent_auc_ci": [_sig(lo), _sig(hi)],
        "auc_ci_level": settings.ci_level,
        "auc_ci_method": "DeLong",
        "auc_se": _sig(se),
        "optimism_corrected_auc": _sig(val["auc"]["corrected"]),
        "auc_optimism": _sig(val["auc"]["optimism"]),
        "brier": _sig(apparent["brier"]),
        "optimism_corrected_brier": _sig(val["brier"]["corrected"]),
        "calibration_apparent": {"intercept": _sig(apparent["cal_intercept"]), "slope": _sig(apparent["cal_slope"])},
        "calibration_optimism_corrected": {"intercept": _sig(val["cal_intercept"]["corrected"]),
                                           "slope": _sig(val["cal_slope"]["corrected"])},
        "optimism_corrected": {
            "auc": _ci(val["auc"]), "brier": _ci(val["brier"]),
            "calibration_intercept": _ci(val["cal_intercept"]), "calibration_slope": _ci(val["cal_slope"]),
            "sensitivity_at_low": _ci(val["sens_low"]), "specificity_at_high": _ci(val["spec_high"]),
        },
        "interval_method": (
            f"{settings.ci_level:.0%} interval of each corrected statistic: the {100 * (1 - settings.ci_level) / 2:g}th "
            f"and {100 * (1 + settings.ci_level) / 2:g}th percentiles of the statistic in the bootstrap resamples "
            "(each model scored on its own resample), shifted by the estimated optimism; for the calibration "
            "intercept and slope, which the procedure fixes on its own resample (0 and 1/shrinkage), the "
            "percentiles of the resample models scored on the original data, centred on the corrected value. "
            "Approximate: an exact interval needs a double bootstrap"),
        **({"comparison_model": val["_comparison"]} if "_comparison" in val else {}),
        "bootstrap_separated_firth": val["_separated"],
        "bootstrap_inner_separated_firth": val["_inner_separated"],
        "validation": (f"bootstrap optimism correction (Harrell), {settings.bootstrap_resamples} resamples, seed {seed}; "
                       "every resample refits the whole procedure: maximum likelihood (Firth where separated), its "
                       f"own shrinkage factor ({settings.nested_shrinkage_resamples} inner resamples), the intercept "
                       "and both cut-offs; separated resamples are fitted by Firth and kept, none is skipped"),
    }
    stats_ = {
        "n": int(len(y)),
        "events": events,
        "events_per_variable": _sig(events / len(FEATURES), 3),
        "sample_size": sample_size,
        "shrinkage": {
            "method": "uniform shrinkage of the maximum-likelihood slopes by the bootstrap calibration slope "
                      "(van Houwelingen & le Cessie 1990; Steyerberg 2019, ch. 13), intercept re-estimated so the "
                      "mean prediction equals the event rate",
            "reason": (
                f"{events} events for {len(FEATURES)} factors ({events / len(FEATURES):.1f} per factor) overfit an "
                "unpenalised model: its predictions are too extreme on new patients (calibration slope < 1). One "
                "factor, estimated by the bootstrap, keeps the study's seven coefficients readable and their ratios "
                "intact; ridge with a cross-validated penalty was the alternative, but its penalty is itself "
                "unstable at this sample size and does not target calibration directly"),
            "factor": _sig(shrink),
            "resamples": settings.shrinkage_resamples,
            "cap": "the factor is kept in [0, 1]: no expansion above 1; 0 (predict the event rate) when the "
                   "bootstrap slope is not positive",
            "separation": "resamples whose outcomes the factors separate (no maximum-likelihood estimate) are "
                          "fitted with Firth's penalised likelihood and kept",
            "unshrunk_log_odds_per_unit": {n: _sig(float(b)) for n, b in zip(FEATURE_NAMES, ml_unit)},
        },
        "performance": perf,
        "coefficients": {
            "intercept_per_unit": _sig(intercept_unit),
            "log_odds_per_unit": {n: _sig(float(b)) for n, b in zip(FEATURE_NAMES, beta_unit)},
            "standardised": {n: _sig(float(b)) for n, b in zip(FEATURE_NAMES, beta_std)},
            "standardised_intercept": _sig(float(lr.intercept_[0])),
            "scaler_mean": {n: _sig(float(m_), 8) for n, m_ in zip(FEATURE_NAMES, scaler.mean_)},
            "scaler_sd": {n: _sig(float(s_), 8) for n, s_ in zip(FEATURE_NAMES, scaler.scale_)},
            "shrunk": True,
        },
        "odds_ratios": odds_ratios(X, y, settings.ci_level, shrink),
        "cutoffs": cutoffs,
    }
    return pipe, stats_


ELIGIBILITY = ("patients whose AMR was detected and still present when decompression started; an AMR that "
               "was never detected, or that disappeared before decompression (during opening or arachnoid "
               "dissection), is outside the population: the predictor is consulted only once decompression "
               "begins with the AMR present")


#: How and when each factor is measured (TRIPOD item 7a), keyed by feature name.
PREDICTOR_MEASUREMENT: dict[str, dict[str, str]] = {
    "duration_years": {"when": "before surgery", "how": "years from the first spasm to the operation, from the "
                       "history; entered by the operator", "source": "operator"},
    "cohen_grade": {"when": "before surgery", "how": "Cohen grade 1-4 at the preoperative visit; entered by the "
                    "operator", "source": "operator"},
    "carbamazepine": {"when": "before surgery", "how": "current carbamazepine use at admission (yes/no); entered "
                      "by the operator", "source": "operator"},
    "vessels": {"when": "during surgery, at exposure of the root exit zone", "how": "number of offending vessels "
                "the surgeon identifies; entered by the operator", "source": "operator"},
    "amr_amplitude_uv": {"when": "during surgery, baseline stage", "how": "median peak-to-peak amplitude of the "
                         "AMR over the baseline stage (or the first good sweeps), the channel with the largest "
                         "response; measured by the analyzer", "source": "analyzer"},
    "retraction_mm": {"when": "during surgery, before decompression", "how": "cerebellar retraction depth "
                      "estimated by the surgeon; entered by the operator", "source": "operator"},
    "displacement": {"when": "during surgery, as decompression is done", "how": "how far the offending vessel "
                     "was moved (1 slight, 2 moderate, 3 marked), graded by the surgeon", "source": "operator"},
}

LIMITATIONS: tuple[str, ...] = (
    "fitted on a synthetic cohort whose effect sizes are assumptions tuned to one study's headline figures; "
    "it says nothing about real patients",
    "internal validation only (bootstrap); no temporal or external validation, and optimism correction estimates "
    "the expected optimism of the procedure, not that of this particular sample (see the README's simulation: "
    "the shipped seed's sample is unusually separable and its corrected AUC over-states fresh performance)",
    "few events per factor; the shrinkage factor is itself estimated with error",
    "displacement is graded during decompression, so the prediction is made late and must never make stopping "
    "more likely because the vessel was moved less (the decision engine's counterfactual check)",
    "linearity on the log-odds scale is assumed for the continuous factors; no interactions",
    "in a registry where this model advised the surgeon, outcomes are affected by the advice (treatment effect): "
    "patients predicted to persist may have been explored further, changing the outcome the model predicts",
)


def tripod_items(synthetic: bool, stats_: dict[str, Any], population: dict[str, Any],
                 settings: TrainingSettings) -> dict[str, Any]:
    """The TRIPOD (2015) / TRIPOD+AI items a model card can state, machine-readably, by item number."""
    perf = stats_["performance"]["optimism_corrected"]
    return {
        "guideline": "TRIPOD 2015 (Collins et al.) with TRIPOD+AI 2024 additions; keys name the item",
        "source_of_data_4a": ("synthetic cohort drawn from amrwatch.study.cohort (documented assumptions)"
                              if synthetic else "an institution's amrwatch registry export (`amrwatch export cohort`)"),
        "eligibility_5a": population["eligibility"],
        "outcome_6a": {
            "definition": "the AMR persists at the end of decompression (label amr_persisted = 1)",
            "channel": "any recording channel whose AMR had been confirmed present: the session persists if any "
                       "such channel still shows the AMR (present, diminished or reappeared) at the end",
            "criterion": "a channel's AMR has disappeared when it is absent in K consecutive assessable sweeps "
                         "(K = 5 by default); a persisting AMR is one not so confirmed absent. An optional reduction "
                         "criterion (≥ 86.5 % of baseline) applies to the runtime decision, not to the label",
            "time_point": "the end of the session's decompression (the last sweeps before `closure`/`end`), as "
                          "classified by the analyzer at `end`",
            "assessed_by": "the analyzer, automatically; blind to the prediction (it never reads predictions)",
            "label_values": {"1": "persisted", "0": "disappeared after decompression started"},
        },
        "predictors_7a": [{"name": n, **PREDICTOR_MEASUREMENT[n]} for n in FEATURE_NAMES],
        "sample_size_8": stats_["sample_size"],
        "missing_data_9": ("complete cases only, no imputation: `amrwatch train --csv` refuses a file with any "
                           "missing factor or label, naming line and column, so nothing is fitted on silently "
                           "imputed values; at runtime a prediction needs all seven factors (the predictor says "
                           "which is missing and predicts nothing)"),
        "model_building_10b": stats_["shrinkage"]["method"],
        "performance_measures_10d": ["AUC (DeLong interval)", "Brier score", "calibration intercept and slope",
                                     "sensitivity at the low cut-off", "specificity at the high cut-off"],
        "internal_validation_10b": stats_["performance"]["validation"],
        "calibration_with_intervals_16": {
            "intercept": perf["calibration_intercept"], "slope": perf["calibration_slope"]},
        "discrimination_with_intervals_16": perf["auc"],
        "risk_groups_11": stats_["cutoffs"]["rule"],
        "limitations_19a": list(LIMITATIONS),
        "intended_use_and_users_4_tripod_ai": ("intraoperative decision support for the surgeon and the "
                                              "neurophysiologist during MVD for hemifacial spasm; not a diagnostic "
                                              "device"),
        "model_hash_tripod_ai": "model_sha256 (above) identifies the exact ONNX file",
        "settings": {"bootstrap_resamples": settings.bootstrap_resamples,
                     "shrinkage_resamples": settings.shrinkage_resamples},
    }


def population_summary(detected: int, persisted: int, ineligible: int, never_detected: int) -> dict[str, Any]:
    """Both populations: every detected AMR (the study's denominator) and the eligible ones (the model's)."""
    eligible = detected - ineligible
    return {
        "eligibility": ELIGIBILITY,
        "never_detected_excluded": never_detected,
        "all_detected": {"n": detected, "persisted": persisted,
                         "persistence": _sig(persisted / detected, 4) if detected else None},
        "disappeared_before_decompression_excluded": ineligible,
        "eligible": {"n": eligible, "persisted": persisted,
                     "persistence": _sig(persisted / eligible, 4) if eligible else None},
        "note": "early disappearances counted as 'disappeared' would lower the persistence the model learns "
                "(they never reach the point where it is consulted), so its predictions would run low",
    }


def train(
    out_dir: str | Path,
    *,
    synthetic_n: int | None = None,
    csv: str | Path | None = None,
    seed: int = 0,
    settings: TrainingSettings | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Fit on a synthetic cohort or an institution's CSV; write model.onnx + model_card.json; return the card."""
    settings = settings or TrainingSettings()
    if (synthetic_n is None) == (csv is None):
        raise ValueError("give exactly one of synthetic_n (a synthetic cohort) or csv (an exported registry)")
    synthetic = synthetic_n is not None
    if synthetic:
        if not 20 <= synthetic_n <= 1_000_000:
            raise ValueError(f"synthetic_n must be in [20, 1000000] patients; got {synthetic_n}")
        X_all, y_all, ok = cohort_mod.DEFAULT.cohort_with_eligibility(synthetic_n, seed)
        X, y = X_all[ok], y_all[ok]
        provenance = {"source": "synthetic", "n": synthetic_n, "seed": seed, **cohort_mod.describe()}
        population = population_summary(len(y_all), int(y_all.sum()), int((~ok).sum()), 0)
    else:
        table = read_cohort(csv)
        X, y = table.X, table.y
        provenance = {
            "source": "csv",
            "file": Path(csv).name,
            "sha256": table.sha256,
            "rows_used": len(y),
            "rows_skipped": len(table.skipped),
            "skipped": [str(s) for s in table.skipped[:50]],
        }
        population = population_summary(len(y) + table.ineligible, int(y.sum()), table.ineligible,
                                         table.never_detected)
    pipe, stats_ = fit_and_describe(X, y, settings, seed)
    blob = export_onnx(pipe, settings, synthetic=synthetic)
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "model": "probability that the AMR persists at the end of decompression among patients whose AMR is present when decompression starts (shrunk logistic regression, 7 factors)",
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "features": [f.spec() for f in FEATURES],
        "feature_order": list(FEATURE_NAMES),
        "onnx": onnx_io(blob),
        "training_data": provenance,
        "training_range": training_range(X),
        "population": population,
        **stats_,
        "golden_vectors": golden_vectors(pipe, X, stats_["cutoffs"], settings),
        "golden_tolerance": 1e-5,
        "software": _versions(),
        "settings": {**asdict(settings), "seed": seed},
        "intended_use": (
            "decision support during MVD for hemifacial spasm, as proposed in a 2025 single-centre study; "
            "an institution should retrain and validate on its own registry (`amrwatch train --csv`)"
        ),
        "tripod": tripod_items(synthetic, stats_, population, settings),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(blob)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if echo is not None:
        echo(format_summary(card))
    return card


def format_summary(card: dict[str, Any]) -> str:
    """The console report: what a clinician reads before trusting the model."""
    perf, cut = card["performance"], card["cutoffs"]
    lines = []
    if card["synthetic"]:
        lines.append(f"*** {card['notice']} ***")
    src = card["training_data"]
    lines.append(
        f"trained on {'a synthetic cohort (seed ' + str(src['seed']) + ')' if card['synthetic'] else src['file']}: "
        f"n = {card['n']}, events = {card['events']} ({card['events'] / card['n']:.1%}), "
        f"events per variable = {card['events_per_variable']:g}"
    )
    pop = card.get("population")
    if pop:
        lines.append(
            f"population: {pop['eligible']['n']} of {pop['all_detected']['n']} detected AMRs still present at the start "
            f"of decompression (persistence {pop['eligible']['persistence']:.1%} vs {pop['all_detected']['persistence']:.1%} "
            f"overall; {pop['disappeared_before_decompression_excluded']} early disappearances excluded)")
    sh = card.get("shrinkage")
    if sh:
        lines.append(f"uniform shrinkage factor {sh['factor']:.3f} (bootstrap calibration slope, {sh['resamples']} "
                     f"resamples); separated resamples fitted by Firth: {perf.get('bootstrap_separated_firth', 0)}")
    lo, hi = perf["apparent_auc_ci"]
    oc = perf.get("optimism_corrected", {})
    iv = lambda k: (f" [{oc[k]['ci'][0]:.3f}–{oc[k]['ci'][1]:.3f}]" if k in oc else "")  # noqa: E731
    lines.append(
        f"AUC apparent {perf['apparent_auc']:.3f} ({perf['auc_ci_level']:.0%} CI {lo:.3f}–{hi:.3f}, DeLong); "
        f"optimism-corrected {perf['optimism_corrected_auc']:.3f}{iv('auc')} "
        f"({card['settings']['bootstrap_resamples']} bootstrap resamples)"
    )
    cal = perf["calibration_optimism_corrected"]
    lines.append(
        f"calibration (optimism-corrected): intercept {cal['intercept']:+.3f}{iv('calibration_intercept')}, "
        f"slope {cal['slope']:.3f}{iv('calibration_slope')}; "
        f"Brier {perf['brier']:.3f} (corrected {perf['optimism_corrected_brier']:.3f}{iv('brier')})"
    )
    lines.append("odds ratios (95% CI), statsmodels:")
    for o in card["odds_ratios"]:
        lines.append(
            f"  {o['feature']:<18} {o['odds_ratio']:8.3f} ({o['ci_low']:.3f}–{o['ci_high']:.3f})  "
            f"{o['per_label']}, p = {o['p_value']:.3g}"
        )
    lines.append(
        f"bands: low < {cut['low']:.3f} (sensitivity {cut['sensitivity_at_low']:.2f}) ≤ intermediate < "
        f"{cut['high']:.3f} ≤ high (specificity {cut['specificity_at_high']:.2f}); Youden threshold {cut['youden_threshold']:.3f}"
    )
    if "sensitivity_at_low_corrected" in cut:
        a, b = cut["sensitivity_at_low_corrected"], cut["specificity_at_high_corrected"]
        lines.append(f"optimism-corrected: sensitivity at low {a['estimate']:.2f} [{a['ci'][0]:.2f}–{a['ci'][1]:.2f}], "
                     f"specificity at high {b['estimate']:.2f} [{b['ci'][0]:.2f}–{b['ci'][1]:.2f}]")
    lines.append("features (unit, allowed range): " + ", ".join(
        f"{f['name']} ({f['unit']}, {f['min']:g}–{f['max']:g})" for f in card["features"]))
    if not card["synthetic"]:
        lines.append(f"training file sha256 {src['sha256']} ({src['rows_skipped']} unlabelled rows skipped)")
    lines.append(f"model sha256 {card['model_sha256']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Recalibration (`amrwatch train --recalibrate --csv FILE`)


def _card_coefficients(card: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scaler mean, scaler sd, coef [intercept, slopes]) on the standardised scale, from a card."""
    c = card["coefficients"]
    mean = np.array([c["scaler_mean"][n] for n in FEATURE_NAMES], dtype=float)
    sd = np.array([c["scaler_sd"][n] for n in FEATURE_NAMES], dtype=float)
    coef = np.r_[c["standardised_intercept"], [c["standardised"][n] for n in FEATURE_NAMES]].astype(float)
    return mean, sd, coef


def recalibrate(out_dir: str | Path, *, csv: str | Path, base_dir: str | Path | None = None,
                settings: TrainingSettings | None = None, echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Logistic recalibration of an existing model on an institution's registry: keep the model's linear
    predictor lp, fit outcome ~ a + b·lp (statsmodels), and export the model with intercept a + b·α and
    slopes b·β; cut-offs re-chosen by the same rules on the registry. The usual first step before
    refitting (Steyerberg ch. 20): two parameters, so it needs far fewer events than a new model."""
    import statsmodels.api as sm

    from amrwatch.services.predictor.model import DEFAULT_DIR, LoadedModel, ModelInvalid

    settings = settings or TrainingSettings()
    base = Path(base_dir) if base_dir else DEFAULT_DIR
    try:
        base_model = LoadedModel.load(base / MODEL_FILE, base / CARD_FILE)
    except ModelInvalid as err:
        raise TrainingError(f"the model to recalibrate failed its checks: {err}") from None
    base_card = json.loads((base / CARD_FILE).read_text(encoding="utf-8"))
    if "coefficients" not in base_card:
        raise TrainingError(f"{base / CARD_FILE} records no coefficients; only amrwatch logistic models can be "
                            "recalibrated")
    table = read_cohort(csv)
    X, y = table.X, table.y
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    if min(events, non_events) < settings.min_events:
        raise TrainingError(f"recalibration needs at least {settings.min_events} patients whose AMR persisted and "
                            f"{settings.min_events} whose AMR disappeared; got {events} and {non_events}")
    mean, sd, coef = _card_coefficients(base_card)
    lp = coef[0] + ((X - mean) / sd) @ coef[1:]
    fit = sm.GLM(y, sm.add_constant(lp, has_constant="add"), family=sm.families.Binomial()).fit(tol=1e-12)
    a, b = (float(v) for v in fit.params)
    ci = np.asarray(fit.conf_int(alpha=1 - settings.ci_level))
    new = np.r_[a + b * coef[0], b * coef[1:]]
    pipe = shrunk_pipeline(X, new)
    # keep the base model's standardisation (the coefficients are on its scale)
    f32 = lambda v: np.asarray(v, dtype=np.float32).astype(np.float64)  # noqa: E731
    scaler = pipe.named_steps["scaler"]
    scaler.mean_, scaler.scale_ = f32(mean), 1.0 / f32(1.0 / sd)
    scaler.var_ = scaler.scale_ ** 2
    p_before = np.asarray(base_model.probabilities(X), dtype=float)
    p = predict_proba(pipe, X)
    auc, lo, hi, se = delong_auc(y, p, settings.ci_level)
    ci_before, cs_before = calibration(y, p_before)
    ci_after, cs_after = calibration(y, p)
    cutoffs = choose_cutoffs(y, p, settings)
    synthetic = bool(base_card.get("synthetic"))
    blob = export_onnx(pipe, settings, synthetic=synthetic)
    lr = pipe.named_steps["logreg"]
    beta_unit = lr.coef_[0] / scaler.scale_
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "model": base_card.get("model", "") + " — recalibrated on an institution's registry",
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "features": [f.spec() for f in FEATURES],
        "feature_order": list(FEATURE_NAMES),
        "onnx": onnx_io(blob),
        "training_data": {"source": "csv", "file": Path(csv).name, "sha256": table.sha256, "rows_used": len(y),
                          "rows_skipped": len(table.skipped), "skipped": [str(x) for x in table.skipped[:50]]},
        "training_range": base_card.get("training_range") or training_range(X),
        "population": population_summary(len(y) + table.ineligible, events, table.ineligible, table.never_detected),
        "recalibration": {
            "method": "logistic recalibration: outcome ~ a + b · (the base model's linear predictor), statsmodels GLM",
            "base_model_sha256": base_model.sha256,
            "base_synthetic": bool(base_card.get("synthetic")),
            "intercept_a": _sig(a), "intercept_a_ci": [_sig(ci[0, 0]), _sig(ci[0, 1])],
            "slope_b": _sig(b), "slope_b_ci": [_sig(ci[1, 0]), _sig(ci[1, 1])],
            "calibration_before": {"intercept": _sig(ci_before), "slope": _sig(cs_before)},
            "calibration_after": {"intercept": _sig(ci_after), "slope": _sig(cs_after)},
            "note": "apparent figures on the registry the recalibration was fitted on; two parameters overfit little, "
                    "but validate on later patients before relying on it",
        },
        "n": int(len(y)),
        "events": events,
        "events_per_variable": _sig(events / 2, 3),
        "performance": {
            "apparent_auc": _sig(auc), "apparent_auc_ci": [_sig(lo), _sig(hi)], "auc_ci_level": settings.ci_level,
            "auc_ci_method": "DeLong", "auc_se": _sig(se), "brier": _sig(brier(y, p)),
            "calibration_apparent": {"intercept": _sig(ci_after), "slope": _sig(cs_after)},
            "validation": "none beyond apparent: a recalibration (2 parameters) of a model fitted elsewhere",
        },
        "coefficients": {
            "intercept_per_unit": _sig(float(lr.intercept_[0] - np.sum(beta_unit * scaler.mean_))),
            "log_odds_per_unit": {n: _sig(float(v)) for n, v in zip(FEATURE_NAMES, beta_unit)},
            "standardised": {n: _sig(float(v)) for n, v in zip(FEATURE_NAMES, lr.coef_[0])},
            "standardised_intercept": _sig(float(lr.intercept_[0])),
            "scaler_mean": {n: _sig(float(m), 8) for n, m in zip(FEATURE_NAMES, scaler.mean_)},
            "scaler_sd": {n: _sig(float(v), 8) for n, v in zip(FEATURE_NAMES, scaler.scale_)},
        },
        "cutoffs": cutoffs,
        "golden_vectors": golden_vectors(pipe, X, cutoffs, settings),
        "golden_tolerance": 1e-5,
        "software": _versions(),
        "settings": {**asdict(settings), "recalibrated": True},
        "intended_use": base_card.get("intended_use"),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(blob)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if echo is not None:
        r = card["recalibration"]
        echo("\n".join([
            *([f"*** {card['notice']} ***"] if synthetic else []),
            f"recalibrated model {base_model.sha256[:16]}… on {Path(csv).name}: n = {len(y)}, events = {events}",
            f"a = {r['intercept_a']:+.3f} [{r['intercept_a_ci'][0]:+.3f}, {r['intercept_a_ci'][1]:+.3f}], "
            f"b = {r['slope_b']:.3f} [{r['slope_b_ci'][0]:.3f}, {r['slope_b_ci'][1]:.3f}]",
            f"calibration before: intercept {ci_before:+.3f}, slope {cs_before:.3f}; after: intercept "
            f"{ci_after:+.3f}, slope {cs_after:.3f}; AUC {auc:.3f} (unchanged by recalibration)",
            f"bands: low < {cutoffs['low']:.3f} ≤ intermediate < {cutoffs['high']:.3f} ≤ high",
            f"model sha256 {card['model_sha256']}"]))
    return card
