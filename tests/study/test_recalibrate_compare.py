"""`amrwatch train --recalibrate` and `amrwatch report --compare`, recomputed with statsmodels, sklearn and an
independent (mid-rank) DeLong."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from amrwatch.services.predictor.model import LoadedModel
from amrwatch.study.report import make_report

SEVEN = ["duration_years", "cohen_grade", "carbamazepine", "vessels", "amr_amplitude_uv", "retraction_mm",
         "displacement"]


@pytest.fixture(scope="module")
def recal(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("recal")
    r = subprocess.run([sys.executable, "-m", "amrwatch", "train", "--recalibrate", "--csv", str(study.csv),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "recalibrated model" in r.stdout and "synthetic" in r.stdout
    return out


@pytest.fixture(scope="module")
def eligible_rows(study):
    df = pd.read_csv(study.csv, dtype={"session_id": str})
    df["carbamazepine"] = df["carbamazepine"].map({"yes": 1.0, "no": 0.0})
    df = df[df["amr_persisted"].notna() & (df["eligible"] == "yes")].dropna(subset=SEVEN)
    return df[SEVEN].to_numpy(float), df["amr_persisted"].to_numpy(int)


def test_recalibration_is_the_logistic_fit_on_the_base_linear_predictor(recal, eligible_rows):
    X, y = eligible_rows
    base = LoadedModel.load()
    p0 = np.asarray(base.probabilities(X), dtype=float)
    lp = np.log(p0 / (1 - p0))
    fit = sm.Logit(y, sm.add_constant(lp)).fit(disp=0)
    card = json.loads((recal / "model_card.json").read_text())
    r = card["recalibration"]
    assert r["base_model_sha256"] == base.sha256 and card["synthetic"] is True
    assert r["intercept_a"] == pytest.approx(fit.params[0], abs=2e-3)  # base lp read through float32 ONNX
    assert r["slope_b"] == pytest.approx(fit.params[1], abs=2e-3)
    new = LoadedModel.load(recal / "model.onnx", recal / "model_card.json")
    p1 = np.asarray(new.probabilities(X), dtype=float)
    want = 1 / (1 + np.exp(-(fit.params[0] + fit.params[1] * lp)))
    assert np.max(np.abs(p1 - want)) < 1e-3
    lp1 = np.log(p1 / (1 - p1))
    after = sm.Logit(y, sm.add_constant(lp1)).fit(disp=0).params
    assert abs(after[0]) < 0.01 and after[1] == pytest.approx(1.0, abs=0.01), "calibrated on the registry"


def delong_midrank(y, p1, p2):
    """Sun & Xu's fast DeLong with mid-ranks: an independent route to the paired variance."""
    m, n = int(y.sum()), int(len(y) - y.sum())
    v10, v01 = [], []
    for p in (p1, p2):
        pos, neg = p[y == 1], p[y == 0]
        tz, tx, ty = stats.rankdata(np.r_[pos, neg]), stats.rankdata(pos), stats.rankdata(neg)
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    aucs = [v.mean() for v in v10]
    s = np.cov(np.vstack(v10)) / m + np.cov(np.vstack(v01)) / n
    se = math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    z = (aucs[0] - aucs[1]) / se
    return aucs, se, z, 2 * stats.norm.sf(abs(z))


@pytest.fixture(scope="module")
def retrained(study, tmp_path_factory):
    from amrwatch.study.training import TrainingSettings, train

    out = tmp_path_factory.mktemp("retrained")
    train(out, csv=study.csv, settings=TrainingSettings(bootstrap_resamples=20, shrinkage_resamples=50,
                                                         nested_shrinkage_resamples=10), echo=None)
    return out


def test_report_compares_two_models_on_the_same_patients(study, retrained, eligible_rows, tmp_path):
    X, y = eligible_rows
    recal = retrained  # a model refitted on the registry: a different ranking, so the AUCs differ
    make_report(study.data, tmp_path / "rep", compare_dir=recal)
    res = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]["comparison"]
    assert res["available"] and res["n"] == len(y)
    p1 = np.asarray(LoadedModel.load().probabilities(X), dtype=float)
    p2 = np.asarray(LoadedModel.load(recal / "model.onnx", recal / "model_card.json").probabilities(X), dtype=float)
    aucs, se, z, p = delong_midrank(y, p1, p2)
    d = res["delong"]
    assert se > 0 and d["difference"] != 0
    assert d["auc_1"] == pytest.approx(aucs[0], abs=1e-9) and d["auc_2"] == pytest.approx(aucs[1], abs=1e-9)
    assert d["se"] == pytest.approx(se, rel=1e-6) and d["p_value"] == pytest.approx(p, rel=1e-6, abs=1e-12)
    for m, pp in zip(res["models"], (p1, p2)):
        low = m["cutoffs"][0]
        t = round(low, 6)
        nb = ((pp >= t) & (y == 1)).sum() / len(y) - ((pp >= t) & (y == 0)).sum() / len(y) * t / (1 - t)
        assert m["net_benefit_at_cutoffs"]["low"] == pytest.approx(nb, abs=1e-12)
        slope = sm.GLM(y, sm.add_constant(np.log(pp / (1 - pp))), family=sm.families.Binomial()).fit().params[1]
        assert m["calibration"]["slope"] == pytest.approx(slope, rel=1e-6)
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "Two models on this registry" in page and "DeLong" in page
    assert (tmp_path / "rep" / "figures" / "comparison.png").stat().st_size > 1000
