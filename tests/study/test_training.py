"""Training: the statistics are right, and sklearn, the ONNX file and the card describe one model."""

import hashlib
import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from amrwatch.study.cohort import synthetic_cohort
from amrwatch.services.predictor.features import FEATURES
from amrwatch.study.training import (
    TrainingError,
    TrainingSettings,
    bootstrap_optimism,
    calibration,
    choose_cutoffs,
    delong_auc,
    export_onnx,
    fit_pipeline,
    predict_proba,
    train,
)


@pytest.fixture(scope="module")
def fitted():
    x, y = synthetic_cohort(157, 11)
    pipe = fit_pipeline(x, y)
    blob = export_onnx(pipe, TrainingSettings(), synthetic=True)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return x, y, pipe, sess


def ort_p(sess, x):
    return sess.run(["probabilities"], {"factors": np.asarray(x, dtype=np.float32)})[0][:, 1]


def test_sklearn_and_onnxruntime_agree_on_held_out_rows(fitted):
    _, _, pipe, sess = fitted
    held_out, _ = synthetic_cohort(2000, 999)
    d = np.abs(predict_proba(pipe, held_out) - ort_p(sess, held_out))
    print(f"\nheld-out max |Δp| = {d.max():.2e}")
    assert d.max() <= 1e-5


def _value(f):
    if f.kind == "bool":
        return st.booleans()
    if f.kind == "int":
        return st.integers(int(f.low), int(f.high))
    return st.floats(f.low, f.high, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None)
@given(st.tuples(*[_value(f) for f in FEATURES]))
def test_sklearn_and_onnxruntime_agree_on_any_valid_input(fitted, row):
    _, _, pipe, sess = fitted
    x = np.array([[float(v) for v in row]])
    assert abs(predict_proba(pipe, x)[0] - ort_p(sess, x)[0]) <= 1e-5


def test_onnx_graph_has_a_plain_probability_tensor(fitted):
    _, _, _, sess = fitted
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    assert sess.get_outputs()[1].type == "tensor(float)", "no ZipMap: a tensor, not a sequence of maps"
    assert [i.name for i in sess.get_inputs()] == ["factors"]


def test_same_data_gives_byte_identical_files(tmp_path, quick):
    a = train(tmp_path / "a", synthetic_n=120, seed=5, settings=quick, echo=None)
    b = train(tmp_path / "b", synthetic_n=120, seed=5, settings=quick, echo=None)
    c = train(tmp_path / "c", synthetic_n=120, seed=6, settings=quick, echo=None)
    for name in ("model.onnx", "model_card.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["model_sha256"] == b["model_sha256"] != c["model_sha256"]
    assert a["model_sha256"] == hashlib.sha256((tmp_path / "a" / "model.onnx").read_bytes()).hexdigest()


def test_delong_matches_the_midrank_formulation():
    """Sun & Xu's fast DeLong (mid-ranks) is an independent route to the same variance."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30, int), np.zeros(90, int)]
    p = np.round(rng.normal(y * 1.2, 1.0), 1)  # rounded: ties are exercised
    auc, lo, hi, se = delong_auc(y, p)
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    tz, tx, ty = stats.rankdata(np.r_[pos, neg]), stats.rankdata(pos), stats.rankdata(neg)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    se_ref = math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert se == pytest.approx(se_ref, rel=1e-10)
    assert lo == pytest.approx(auc - 1.959964 * se_ref, abs=1e-6) and hi == pytest.approx(auc + 1.959964 * se_ref, abs=1e-6)


def test_calibration_slope_and_intercept_measure_miscalibration(fitted):
    x, y, pipe, _ = fitted
    p = predict_proba(pipe, x)
    i0, s0 = calibration(y, p)
    assert abs(i0) < 1e-4 and s0 == pytest.approx(1.0, abs=1e-4), "an MLE fit is calibrated on its own data"
    lp = np.log(p / (1 - p))
    _, s2 = calibration(y, 1 / (1 + np.exp(-2 * lp)))
    assert s2 == pytest.approx(0.5, abs=1e-3), "over-confident predictions give a slope below 1"
    i_shift, _ = calibration(y, 1 / (1 + np.exp(-(lp + 1.0))))
    assert i_shift == pytest.approx(-1.0, abs=1e-3), "predictions too high by 1 logit: intercept -1"


def test_optimism_correction_sees_through_noise():
    """Outcomes unrelated to the factors: the apparent AUC flatters, the corrected one should not."""
    x, _ = synthetic_cohort(157, 12)
    apparent, corrected = [], []
    for seed in range(6):
        y = (np.random.default_rng(seed).random(157) < 0.22).astype(int)
        a = roc_auc_score(y, predict_proba(fit_pipeline(x, y), x))
        apparent.append(a)
        corrected.append(a - bootstrap_optimism(x, y, 30, seed=0)["auc"])
    print(f"\nnoise: mean apparent AUC {np.mean(apparent):.3f}, optimism-corrected {np.mean(corrected):.3f}")
    assert np.mean(apparent) > 0.6
    assert abs(np.mean(corrected) - 0.5) < 0.06


def test_cutoffs_follow_their_documented_rules(fitted):
    x, y, pipe, _ = fitted
    p = predict_proba(pipe, x)
    s = TrainingSettings()
    cut = choose_cutoffs(y, p, s)
    sens = lambda t: np.mean(p[y == 1] >= t)  # noqa: E731
    spec = lambda t: np.mean(p[y == 0] < t)  # noqa: E731
    above_low = np.sort(p[p > cut["low"]])[0]
    assert sens(cut["low"]) >= 0.95 and sens(np.nextafter(above_low, 1)) < 0.95, "low is the highest such threshold"
    below_high = np.sort(p[p < cut["high"]])[-1]
    assert spec(cut["high"]) >= 0.90 and spec(below_high) < 0.90, "high is the lowest such threshold"
    assert not np.any(np.isin(p, [cut["low"], cut["high"]])), "no training patient sits on a cut-off"


def test_card_reports_everything_the_issue_lists(trained):
    out, card = trained
    disk = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert disk == card
    perf = card["performance"]
    pop = card["population"]
    assert pop["all_detected"]["n"] == 157 and card["n"] == pop["eligible"]["n"] < 157
    assert pop["eligible"]["persistence"] > pop["all_detected"]["persistence"]
    assert card["events_per_variable"] == pytest.approx(card["events"] / 7, abs=0.01)
    lo, hi = perf["apparent_auc_ci"]
    assert lo < perf["apparent_auc"] < hi and perf["auc_ci_method"] == "DeLong"
    assert perf["optimism_corrected_auc"] < perf["apparent_auc"]
    s = card["shrinkage"]["factor"]
    assert 0 < s < 1, "shrinkage expected at ~5 events per variable"
    assert perf["calibration_apparent"]["slope"] == pytest.approx(1 / s, rel=2e-3), "shrunk model: slope 1/s on its data"
    for name, d in perf["optimism_corrected"].items():
        assert d["ci"][0] <= d["estimate"] <= d["ci"][1], name
        assert d["estimate"] == pytest.approx(d["apparent"] - d["optimism"], rel=1e-5, abs=1e-5), name
    assert 0 < perf["brier"] < perf["optimism_corrected_brier"] < 0.25
    assert [f["name"] for f in card["features"]] == card["feature_order"]
    assert all({"unit", "min", "max"} <= set(f) for f in card["features"])
    assert card["synthetic"] is True and card["notice"] == "synthetic — not for clinical use"
    assert card["training_data"]["seed"] == 3 and card["training_data"]["n"] == 157
    assert card["training_data"]["effects_log_odds_per_unit"]["displacement"] < 0
    assert "sensitivity >= 0.95" in card["cutoffs"]["rule"]
    assert card["cutoffs"]["sensitivity_at_low_corrected"]["estimate"] <= card["cutoffs"]["sensitivity_at_low"] + 1e-9


def test_odds_ratios_from_statsmodels_match_the_exported_model(trained):
    _, card = trained
    unit = card["coefficients"]["log_odds_per_unit"]
    unshrunk = card["shrinkage"]["unshrunk_log_odds_per_unit"]
    s = card["shrinkage"]["factor"]
    for o in card["odds_ratios"]:
        assert o["log_odds_per_unit"] == pytest.approx(unshrunk[o["feature"]], rel=1e-4), o["feature"]
        assert s * o["log_odds_per_unit"] == pytest.approx(unit[o["feature"]], rel=1e-4), o["feature"]
        assert o["ci_low"] < o["odds_ratio"] < o["ci_high"]
        assert o["odds_ratio"] == pytest.approx(math.exp(o["log_odds_per_unit"] * o["per"]), rel=1e-5)
        assert o["shrunk_odds_ratio"] == pytest.approx(math.exp(unit[o["feature"]] * o["per"]), rel=1e-4)


def test_console_summary_states_the_key_figures(tmp_path, quick):
    lines = []
    card = train(tmp_path, synthetic_n=157, seed=3, settings=quick, echo=lines.append)
    text = lines[0]
    assert text.startswith("*** synthetic — not for clinical use ***")
    assert f"AUC apparent {card['performance']['apparent_auc']:.3f}" in text
    assert f"optimism-corrected {card['performance']['optimism_corrected_auc']:.3f}" in text
    assert "amr_amplitude_uv" in text and "per 100 µV" in text
    assert "retraction_mm (mm, 0–40)" in text
    assert card["model_sha256"] in text


def test_unusable_data_is_refused(tmp_path):
    x, y = synthetic_cohort(157, 2)
    with pytest.raises(TrainingError, match="need at least 10 patients whose AMR persisted"):
        train(tmp_path, synthetic_n=30, seed=1, echo=None)
    with pytest.raises(ValueError, match="give exactly one of"):
        train(tmp_path, echo=None)
    with pytest.raises(ValueError, match="bootstrap_resamples must be in"):
        TrainingSettings(bootstrap_resamples=0)
    from amrwatch.study.training import fit_and_describe

    x[:, 3] = 1.0
    with pytest.raises(TrainingError, match="factor vessels has the same value"):
        fit_and_describe(x, y, TrainingSettings(bootstrap_resamples=10), 0)


def test_separated_bootstrap_resamples_are_fitted_by_firth_not_skipped():
    """A tiny, nearly separable cohort: separated resamples are fitted (Firth), kept, and counted."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 7))
    y = (x[:, 0] > 0.3).astype(int)  # one factor separates the outcomes perfectly
    y[:3] = 1 - y[:3]  # ...almost: the full data have an MLE, many resamples do not
    opt = bootstrap_optimism(x, y, 30, seed=0)
    assert opt["separated_firth"] >= 1
    assert all(np.isfinite(v) and abs(v) < 50 for v in opt.values())
