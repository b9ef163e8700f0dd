"""Fit, validate and export the persistence model (`amrwatch train`).

A model a clinician can read: standardisation + unpenalised logistic
regression, the same model the study describes, so the coefficients and
odds ratios printed here are the model. With ~5 events per variable the
apparent AUC flatters it; the card therefore reports the bootstrap
optimism-corrected AUC (Harrell: refit on each resample, score it on the
resample and on the original data, subtract the mean difference), the
calibration slope and intercept the same way, and the Brier score.

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

Reproducibility: the fit is solved to machine precision (Newton) and its
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

CARD_VERSION = 1
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
    low_sensitivity: float = 0.95
    high_specificity: float = 0.90
    ci_level: float = 0.95
    min_events: int = 10
    """Fewer persisting (or disappearing) patients than this cannot be fitted sensibly."""
    opset: int = 17
    ml_opset: int = 3
    golden_training_rows: int = 4

    def __post_init__(self) -> None:
        checks = [
            ("bootstrap_resamples", self.bootstrap_resamples, 10, 100_000),
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


def bootstrap_optimism(X: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Harrell's optimism: mean over resamples of (score on the resample − score on the original).

    A resample whose outcomes the factors separate perfectly has no maximum-
    likelihood fit (the coefficients run off to infinity and the calibration
    intercept with them); such resamples are skipped and counted
    (`separated_skipped`) rather than averaged into nonsense."""
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs: dict[str, list[float]] = {}
    done = separated = 0
    while done < resamples:
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.min() == yb.max():
            continue  # one outcome only: nothing to fit
        pipe = fit_pipeline(X[idx], yb)
        pb = predict_proba(pipe, X[idx])
        if pb[yb == 1].min() > pb[yb == 0].max():
            separated += 1
            if separated > 10 * resamples:
                raise TrainingError("nearly every bootstrap resample separates the outcomes perfectly; "
                                    "the data are too few or too clean for an optimism correction")
            continue
        on_boot = _scores(yb, pb)
        on_orig = _scores(y, predict_proba(pipe, X))
        for k in on_boot:
            diffs.setdefault(k, []).append(on_boot[k] - on_orig[k])
        done += 1
    out = {k: float(np.mean(v)) for k, v in diffs.items()}
    out["separated_skipped"] = float(separated)
    return out


def odds_ratios(X: np.ndarray, y: np.ndarray, level: float = 0.95) -> list[dict[str, Any]]:
    """Per-factor odds ratios (per the feature's reporting increment) with Wald CIs, by statsmodels."""
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
            "ci_low": _sig(math.exp(lo * feat.per)),
            "ci_high": _sig(math.exp(hi * feat.per)),
            "p_value": _sig(float(res.pvalues[j]), 3),
        })
    return out


def _midpoint_below(values: np.ndarray, t: float) -> float:
    below = values[values < t]
    return float((t + below.max()) / 2) if below.size else float(t / 2)


def choose_cutoffs(y: np.ndarray, p: np.ndarray, settings: TrainingSettings) -> dict[str, Any]:
    """The low/high cut-offs by the rules in the module docstring, with what they achieve."""
    pos, neg = p[y == 1], p[y == 0]
    uniq = np.unique(p)
    sens = np.array([(pos >= t).mean() for t in uniq])
    spec = np.array([(neg < t).mean() for t in uniq])
    t_low = uniq[sens >= settings.low_sensitivity].max()
    t_high = uniq[spec >= settings.high_specificity].min()
    low, high = _midpoint_below(uniq, t_low), _midpoint_below(uniq, t_high)
    if low > high:
        raise TrainingError(
            f"the model cannot separate the outcomes well enough: the cut-off keeping sensitivity ≥ "
            f"{settings.low_sensitivity:g} ({low:.3f}) lies above the one keeping specificity ≥ "
            f"{settings.high_specificity:g} ({high:.3f})"
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


def fit_and_describe(X: np.ndarray, y: np.ndarray, settings: TrainingSettings, seed: int) -> tuple[Any, dict]:
    """The fitted pipeline and every statistic the card reports about it."""
    _check_data(X, y, settings)
    pipe = fit_pipeline(X, y)
    p = predict_proba(pipe, X)
    auc, lo, hi, se = delong_auc(y, p, settings.ci_level)
    apparent = _scores(y, p)
    optimism = bootstrap_optimism(X, y, settings.bootstrap_resamples, seed)
    corrected = {k: apparent[k] - optimism[k] for k in apparent}
    scaler, lr = pipe.named_steps["scaler"], pipe.named_steps["logreg"]
    beta_std = lr.coef_[0]
    beta_unit = beta_std / scaler.scale_
    intercept_unit = float(lr.intercept_[0] - np.sum(beta_unit * scaler.mean_))
    cutoffs = choose_cutoffs(y, p, settings)
    events = int(y.sum())
    stats_ = {
        "n": int(len(y)),
        "events": events,
        "events_per_variable": _sig(events / len(FEATURES), 3),
        "performance": {
            "apparent_auc": _sig(auc),
            "apparent_auc_ci": [_sig(lo), _sig(hi)],
            "auc_ci_level": settings.ci_level,
            "auc_ci_method": "DeLong",
            "auc_se": _sig(se),
            "optimism_corrected_auc": _sig(corrected["auc"]),
            "auc_optimism": _sig(optimism["auc"]),
            "bootstrap_separated_skipped": int(optimism["separated_skipped"]),
            "brier": _sig(apparent["brier"]),
            "optimism_corrected_brier": _sig(corrected["brier"]),
            "calibration_apparent": {"intercept": round(apparent["cal_intercept"], 4) + 0.0, "slope": round(apparent["cal_slope"], 4)},
            "calibration_optimism_corrected": {
                "intercept": _sig(corrected["cal_intercept"]),
                "slope": _sig(corrected["cal_slope"]),
            },
            "validation": f"bootstrap optimism correction (Harrell), {settings.bootstrap_resamples} resamples, seed {seed}",
        },
        "coefficients": {
            "intercept_per_unit": _sig(intercept_unit),
            "log_odds_per_unit": {n: _sig(float(b)) for n, b in zip(FEATURE_NAMES, beta_unit)},
            "standardised": {n: _sig(float(b)) for n, b in zip(FEATURE_NAMES, beta_std)},
            "standardised_intercept": _sig(float(lr.intercept_[0])),
            "scaler_mean": {n: _sig(float(m), 8) for n, m in zip(FEATURE_NAMES, scaler.mean_)},
            "scaler_sd": {n: _sig(float(s), 8) for n, s in zip(FEATURE_NAMES, scaler.scale_)},
        },
        "odds_ratios": odds_ratios(X, y, settings.ci_level),
        "cutoffs": cutoffs,
    }
    return pipe, stats_


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
        X, y = cohort_mod.synthetic_cohort(synthetic_n, seed)
        provenance = {"source": "synthetic", "n": synthetic_n, "seed": seed, **cohort_mod.describe()}
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
    pipe, stats_ = fit_and_describe(X, y, settings, seed)
    blob = export_onnx(pipe, settings, synthetic=synthetic)
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "model": "probability that the AMR persists at the end of decompression (logistic regression, 7 factors)",
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "features": [f.spec() for f in FEATURES],
        "feature_order": list(FEATURE_NAMES),
        "onnx": onnx_io(blob),
        "training_data": provenance,
        "training_range": training_range(X),
        **stats_,
        "golden_vectors": golden_vectors(pipe, X, stats_["cutoffs"], settings),
        "golden_tolerance": 1e-5,
        "software": _versions(),
        "settings": {**asdict(settings), "seed": seed},
        "intended_use": (
            "decision support during MVD for hemifacial spasm, as proposed in a 2025 single-centre study; "
            "an institution should retrain and validate on its own registry (`amrwatch train --csv`)"
        ),
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
    lo, hi = perf["apparent_auc_ci"]
    lines.append(
        f"AUC apparent {perf['apparent_auc']:.3f} ({perf['auc_ci_level']:.0%} CI {lo:.3f}–{hi:.3f}, DeLong); "
        f"optimism-corrected {perf['optimism_corrected_auc']:.3f} ({card['settings']['bootstrap_resamples']} bootstrap resamples"
        f"{'; ' + str(perf['bootstrap_separated_skipped']) + ' perfectly separated resample(s) skipped' if perf.get('bootstrap_separated_skipped') else ''})"
    )
    cal = perf["calibration_optimism_corrected"]
    lines.append(
        f"calibration (optimism-corrected): intercept {cal['intercept']:+.3f}, slope {cal['slope']:.3f}; "
        f"Brier {perf['brier']:.3f} (corrected {perf['optimism_corrected_brier']:.3f})"
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
    lines.append("features (unit, allowed range): " + ", ".join(
        f"{f['name']} ({f['unit']}, {f['min']:g}–{f['max']:g})" for f in card["features"]))
    if not card["synthetic"]:
        lines.append(f"training file sha256 {src['sha256']} ({src['rows_skipped']} unlabelled rows skipped)")
    lines.append(f"model sha256 {card['model_sha256']}")
    return "\n".join(lines)
