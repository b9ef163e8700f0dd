"""The report's numbers, recomputed here from the exported CSV alone with scipy, statsmodels,
sklearn and hand-written Kaplan–Meier/log-rank/DeLong, must agree to 1e-6 (relative)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.metrics import roc_auc_score

from amrwatch.services.predictor.model import LoadedModel

from .conftest import N_STUDY

SEVEN = ["duration_years", "cohen_grade", "carbamazepine", "vessels", "amr_amplitude_uv", "retraction_mm",
         "displacement"]
CONTINUOUS = {"duration_years", "amr_amplitude_uv", "retraction_mm"}
PER = {"amr_amplitude_uv": 100.0}
TIMEPOINTS = ["1w", "3m", "6m", "1y"]
DAYS = {"1w": 7, "3m": 91, "6m": 182, "1y": 365}
Z = stats.norm.ppf(0.975)


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@pytest.fixture(scope="module")
def frame(study) -> pd.DataFrame:
    df = pd.read_csv(study.csv, dtype={"session_id": str})
    df["carbamazepine"] = df["carbamazepine"].map({"yes": 1.0, "no": 0.0})
    return df


@pytest.fixture(scope="module")
def report(study) -> dict:
    return json.loads((study.report_dir / "report.json").read_text())["results"]


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["amr_persisted"].notna()]


def test_the_report_of_the_study_sized_registry_takes_under_30_s(study):
    print(f"report of {N_STUDY} sessions: {study.report_seconds:.2f} s")
    assert study.report_seconds < 30.0


def test_disappearance_rate_and_wilson_interval(frame, report):
    lab = labelled(frame)
    k, n = int((lab["amr_persisted"] == 0).sum()), len(lab)
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    d = report["courses"]["disappearance"]
    assert (d["disappeared"], d["n"]) == (k, n)
    assert same(d["rate"], k / n) and same(d["ci"][0], ci.low) and same(d["ci"][1], ci.high)
    assert report["courses"]["counts"] == frame["course"].value_counts().reindex(
        list(report["courses"]["counts"]), fill_value=0).to_dict()


def test_each_factor_is_compared_with_the_test_the_data_warrant(frame, report):
    lab = labelled(frame)
    by_name = {f["feature"]: f for f in report["factors"]}
    for name in SEVEN:
        a = lab.loc[lab["amr_persisted"] == 1, name].dropna().to_numpy(float)
        b = lab.loc[lab["amr_persisted"] == 0, name].dropna().to_numpy(float)
        got = by_name[name]["test"]
        if name == "carbamazepine":
            table = np.array([[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]])
            expected = table.sum(1)[:, None] * table.sum(0)[None, :] / table.sum()
            if expected.min() >= 5:
                want, p = "chi-square (Yates)", stats.chi2_contingency(table, correction=True).pvalue
            else:
                want, p = "Fisher's exact", stats.fisher_exact(table).pvalue
        elif (name in CONTINUOUS and stats.shapiro(a).pvalue > 0.05 and stats.shapiro(b).pvalue > 0.05
              and a.std() > 0 and b.std() > 0):
            want, p = "Welch's t-test", stats.ttest_ind(a, b, equal_var=False).pvalue
        else:
            want, p = "Mann-Whitney U", stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        assert got["test"] == want, name
        assert same(got["p_value"], float(p)), (name, got["p_value"], p)


def delong(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    se = math.sqrt(psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg))
    return auc, max(0.0, auc - Z * se), min(1.0, auc + Z * se)


def test_multivariable_odds_ratios_intervals_p_values_and_auc(frame, report):
    lab = labelled(frame).dropna(subset=SEVEN)
    X = sm.add_constant(lab[SEVEN].to_numpy(float))
    y = lab["amr_persisted"].to_numpy(int)
    fit = sm.GLM(y, X, family=sm.families.Binomial()).fit(tol=1e-14)  # the same likelihood by another route than Logit
    ci = fit.conf_int(alpha=0.05)
    mv = report["multivariable"]
    assert mv["available"] and (mv["n"], mv["events"]) == (len(y), int(y.sum()))
    for j, (name, row) in enumerate(zip(SEVEN, mv["odds_ratios"]), start=1):
        per = PER.get(name, 1.0)
        assert row["feature"] == name
        assert same(row["odds_ratio"], math.exp(fit.params[j] * per)), name
        assert same(row["ci"][0], math.exp(ci[j, 0] * per)) and same(row["ci"][1], math.exp(ci[j, 1] * per)), name
        assert same(row["p_value"], fit.pvalues[j]), name
    auc, lo, hi = delong(y, np.asarray(fit.predict()))
    assert same(auc, roc_auc_score(y, fit.predict()))
    assert same(mv["auc"]["value"], auc) and same(mv["auc"]["ci"][0], lo) and same(mv["auc"]["ci"][1], hi)
    assert 0.0 < mv["auc"]["optimism"] < 0.1 and same(mv["auc"]["corrected"], auc - mv["auc"]["optimism"])


def test_outcome_by_amr_status_at_every_follow_up_point(frame, report):
    lab = labelled(frame)
    for tp, got in zip(TIMEPOINTS, report["outcomes"]):
        seen = lab[lab[f"grade_{tp}"].notna()]
        spasm = seen[f"grade_{tp}"] > 0
        table = np.array([[int((spasm & (seen["amr_persisted"] == g)).sum()),
                           int((~spasm & (seen["amr_persisted"] == g)).sum())] for g in (1, 0)])
        assert got["timepoint"] == tp and got["test"]["table"] == table.tolist()
        expected = table.sum(1)[:, None] * table.sum(0)[None, :] / table.sum()
        if expected.min() >= 5:
            want, p = "chi-square (Yates)", stats.chi2_contingency(table, correction=True).pvalue
        else:
            want, p = "Fisher's exact", stats.fisher_exact(table).pvalue
        assert got["test"]["test"] == want and same(got["test"]["p_value"], p), tp
        for i, g in enumerate(("persisted", "disappeared")):
            ci = stats.binomtest(int(table[i, 0]), int(table[i].sum())).proportion_ci(0.95, method="wilson")
            assert same(got[g]["rate"], table[i, 0] / table[i].sum())
            assert same(got[g]["ci"][0], ci.low) and same(got[g]["ci"][1], ci.high)
    # The published association holds in the synthetic data (persisted worse at 3 months, p < 0.01).
    assert report["outcomes"][1]["test"]["p_value"] < 0.01


def kaplan_meier(t: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times = np.unique(t[e == 1])
    s, out = 1.0, []
    for u in times:
        at_risk = (t >= u).sum()
        s *= 1.0 - ((t == u) & (e == 1)).sum() / at_risk
        out.append(s)
    return times, np.array(out)


def logrank(t: np.ndarray, e: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    o_minus_e, var = 0.0, 0.0
    for u in np.unique(t[e == 1]):
        n = (t >= u).sum()
        n1 = ((t >= u) & (g == 1)).sum()
        d = ((t == u) & (e == 1)).sum()
        d1 = ((t == u) & (e == 1) & (g == 1)).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    chi2 = o_minus_e**2 / var
    return chi2, float(stats.chi2.sf(chi2, 1))


def test_time_to_relief_curves_and_log_rank(frame, report):
    lab = labelled(frame)
    lab = lab[lab["days_to_relief"].notna() | lab["followup_days"].notna()]
    t = np.where(lab["days_to_relief"].notna(), lab["days_to_relief"], lab["followup_days"]).astype(float)
    e = lab["days_to_relief"].notna().to_numpy(int)
    g = lab["amr_persisted"].to_numpy(int)
    ttr = report["time_to_relief"]
    for code, name in ((1, "persisted"), (0, "disappeared")):
        times, surv = kaplan_meier(t[g == code], e[g == code])
        c = ttr["curves"][name]
        assert c["time"] == [0.0, *times.tolist()]
        assert all(same(a, b) for a, b in zip(c["survival"][1:], surv))
        median = times[np.nonzero(surv <= 0.5)[0][0]] if (surv <= 0.5).any() else None
        assert c["median_days"] == median
        for tp in TIMEPOINTS:
            idx = np.searchsorted(times, DAYS[tp], side="right") - 1
            assert same(c["relieved_by"][tp], 1.0 - (surv[idx] if idx >= 0 else 1.0))
    chi2, p = logrank(t, e, g)
    assert same(ttr["logrank"]["statistic"], chi2) and same(ttr["logrank"]["p_value"], p)
    # Persistent AMR: later relief, as published (~3 months for many).
    assert ttr["curves"]["persisted"]["median_days"] > ttr["curves"]["disappeared"]["median_days"]


def test_external_validation_of_the_shipped_model(frame, report):
    lab = labelled(frame).dropna(subset=SEVEN)
    model = LoadedModel.load()
    p = model.probabilities(lab[SEVEN].to_numpy(float))
    y = lab["amr_persisted"].to_numpy(int)
    v = report["validation"]
    auc, lo, hi = delong(y, p)
    assert v["available"] and v["model_sha256"] == model.sha256 and v["synthetic"] is True
    assert same(v["auc"]["value"], roc_auc_score(y, p)) and same(v["auc"]["ci"][0], lo) and same(v["auc"]["ci"][1], hi)
    assert same(v["brier"], float(np.mean((p - y) ** 2)))
    low, high = model.cutoffs
    assert same(v["sensitivity_at_low"], float((p[y == 1] >= low).mean()))
    assert same(v["specificity_at_high"], float((p[y == 0] < high).mean()))
    lp = np.log(p / (1 - p))
    slope = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit().params[1]
    assert same(v["calibration_fit"]["slope"], slope)
    assert not v["trained_on_this_export"]


def test_this_registry_exercises_every_kind_of_test(report):
    """If a change of seed or generator made one test kind disappear, the checks above would skip it silently."""
    used = {f["test"]["test"] for f in report["factors"]} | {o["test"]["test"] for o in report["outcomes"]}
    assert {"Welch's t-test", "Mann-Whitney U", "chi-square (Yates)", "Fisher's exact"} <= used, used
