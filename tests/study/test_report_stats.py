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


def eligible(df: pd.DataFrame) -> pd.DataFrame:
    """The model's population: the export's own eligibility column (AMR present when decompression started)."""
    return df[df["amr_persisted"].notna() & (df["eligible"] == "yes")]


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
        else:  # continuous and ordinal: Mann–Whitney, chosen in advance (no normality pre-test)
            want, p = "Mann-Whitney U", stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        assert got["test"] == want, name
        assert same(got["p_value"], float(p)), (name, got["p_value"], p)
        if name not in CONTINUOUS and name != "carbamazepine":  # ordinal: median and quartiles are scale values
            d = by_name[name]["persisted"]
            assert d["median"] == float(np.percentile(a, 50, method="inverted_cdf")) and d["median"].is_integer()
            assert d["q1"].is_integer() and d["q3"].is_integer()


def delong(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    se = math.sqrt(psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg))
    return auc, max(0.0, auc - Z * se), min(1.0, auc + Z * se)


def test_multivariable_odds_ratios_intervals_p_values_and_auc(frame, report):
    lab = eligible(frame).dropna(subset=SEVEN)
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
    lab = eligible(frame).dropna(subset=SEVEN)
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
    assert {"Mann-Whitney U", "chi-square (Yates)", "Fisher's exact"} <= used, used
    assert "Welch's t-test" not in used, "no test is chosen by a normality pre-test"


def test_decision_curve_net_benefit(frame, report):
    lab = eligible(frame).dropna(subset=SEVEN)
    p = LoadedModel.load().probabilities(lab[SEVEN].to_numpy(float))
    y = lab["amr_persisted"].to_numpy(int)
    d = report["validation"]["decision_curve"]
    n = len(y)
    for t, nb, nb_all in zip(d["thresholds"], d["model"], d["treat_all"]):
        tp = int(((p >= t) & (y == 1)).sum())
        fp = int(((p >= t) & (y == 0)).sum())
        assert same(nb, tp / n - fp / n * t / (1 - t)), t
        assert same(nb_all, y.mean() - (1 - y.mean()) * t / (1 - t)), t


def test_smoothed_calibration_is_statsmodels_lowess(frame, report):
    from statsmodels.nonparametric.smoothers_lowess import lowess

    lab = eligible(frame).dropna(subset=SEVEN)
    p = np.asarray(LoadedModel.load().probabilities(lab[SEVEN].to_numpy(float)), dtype=float)
    y = lab["amr_persisted"].to_numpy(float)
    sc = report["validation"]["smoothed_calibration"]
    grid = np.array(sc["grid"])
    assert same(grid[0], np.quantile(p, 0.01)) and same(grid[-1], np.quantile(p, 0.99))
    fit = lowess(y, p, frac=2 / 3, it=0, delta=0.005 * (grid[-1] - grid[0]))
    want = np.clip(np.interp(grid, fit[:, 0], fit[:, 1]), 0, 1)
    assert all(same(a, b) for a, b in zip(sc["observed"], want))
    assert all(lo <= hi for lo, hi in zip(sc["band_low"], sc["band_high"]))


def test_kaplan_meier_bands_and_numbers_at_risk(frame, report):
    lab = labelled(frame)
    lab = lab[lab["days_to_relief"].notna() | lab["followup_days"].notna()]
    t = np.where(lab["days_to_relief"].notna(), lab["days_to_relief"], lab["followup_days"]).astype(float)
    e = lab["days_to_relief"].notna().to_numpy(int)
    g = lab["amr_persisted"].to_numpy(int)
    ttr = report["time_to_relief"]
    for code, name in ((1, "persisted"), (0, "disappeared")):
        tt, ee = t[g == code], e[g == code]
        c = ttr["curves"][name]
        assert c["at_risk"] == {"0": len(tt), **{tp: int((tt >= DAYS[tp]).sum()) for tp in TIMEPOINTS}}
        # Greenwood variance and the log-log interval, by hand
        s_, var_sum = 1.0, 0.0
        for i, u in enumerate(np.unique(tt[ee == 1])):
            n_u = (tt >= u).sum()
            d_u = ((tt == u) & (ee == 1)).sum()
            s_ *= 1 - d_u / n_u
            var_sum += d_u / (n_u * (n_u - d_u)) if n_u > d_u else 0.0
            if 0 < s_ < 1:
                se_log = math.sqrt(var_sum)  # se of log S
                theta = Z * se_log / abs(math.log(s_))
                assert same(c["ci_low"][i + 1], s_ ** math.exp(theta)), (name, u)
                assert same(c["ci_high"][i + 1], s_ ** math.exp(-theta)), (name, u)
    by_visit = int((lab["relief_dated_by"] == "first_cured_followup").sum())
    assert ttr["interval_censored"] == by_visit


def test_final_ratio_as_a_predictor_of_spasm_at_one_year(frame, report):
    from sklearn.metrics import roc_curve

    d = frame[frame["final_pct_of_baseline"].notna() & frame["grade_1y"].notna()]
    x = d["final_pct_of_baseline"].to_numpy(float)
    y = (d["grade_1y"] > 0).to_numpy(int)
    r = report["ratio"]
    auc, lo, hi = delong(y, x)
    assert r["available"] and (r["n"], r["events"]) == (len(y), int(y.sum()))
    assert same(r["auc"]["value"], roc_auc_score(y, x)) and same(r["auc"]["ci"][0], lo) and same(r["auc"]["ci"][1], hi)
    fpr, tpr, thr = roc_curve(y, x)
    ok = np.isfinite(thr)
    best = thr[ok][np.argmax((tpr - fpr)[ok])]
    assert same(r["best_threshold_pct"], best)
    assert r["best_threshold_ci"][0] <= r["best_threshold_ci"][1]
    assert same(r["at_criterion"]["sensitivity"], float(np.mean(x[y == 1] > 13.5)))
    assert same(r["at_criterion"]["specificity"], float(np.mean(x[y == 0] <= 13.5)))


def test_outcomes_by_band_and_implied_decision(frame, report):
    el = frame[frame["eligible"] == "yes"]
    obb = report["validation"]["outcomes_by_band"]
    for tp in TIMEPOINTS:
        for band in ("low", "intermediate", "high"):
            seen = el[(el["predicted_band"] == band) & el[f"grade_{tp}"].notna()]
            got = obb["by_band"][band][tp]
            assert (got["n"], got["spasm"]) == (len(seen), int((seen[f"grade_{tp}"] > 0).sum())), (band, tp)
        pers = el[(el["course"] == "persisted") & (el["predicted_band"] == "high") & el[f"grade_{tp}"].notna()]
        got = obb["by_decision"]["termination_acceptable"][tp]
        assert (got["n"], got["spasm"]) == (len(pers), int((pers[f"grade_{tp}"] > 0).sum()))


# --------------------------------------------------------------------------- #
# Per recording site and direction, and the Pan et al. criterion (issue #17)

SITES = ["ZYG_mentalis", "ZYG_orbicularis_oris", "MAR_orbicularis_oculi"]
SEED, RESAMPLES, MIN_EVENTS = 0, 200, 5  # ReportSettings defaults: seed, ratio_threshold_resamples, ratio_min_events


def youden(y: np.ndarray, x: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, x)
    ok = np.isfinite(thr)
    return float(thr[ok][np.argmax((tpr - fpr)[ok])])


def test_per_channel_columns_follow_the_largest_channel_rule(frame):
    """A direction's figure is its largest channel's, the session's the largest of all (synthetic montage:
    ZYG = mentalis + orbicularis oris, MAR = orbicularis oculi)."""
    f = frame[frame["final_pct_of_baseline"].notna()]
    sites = f[[f"final_pct_{s}" for s in SITES]]
    assert len(f) > 100 and sites.notna().any(axis=1).all()
    assert np.allclose(f["final_pct_ZYG"].fillna(-1), sites.iloc[:, :2].max(axis=1).fillna(-1))
    assert np.allclose(f["final_pct_MAR"].fillna(-1), f["final_pct_MAR_orbicularis_oculi"].fillna(-1))
    assert np.allclose(f["final_pct_of_baseline"], sites.max(axis=1))
    # the synthetic second channel correlates with the first but is not a copy of it
    both = f[sites.iloc[:, :2].notna().all(axis=1)]
    r = np.corrcoef(np.log(both["final_pct_ZYG_mentalis"] + 0.1), np.log(both["final_pct_ZYG_orbicularis_oris"] + 0.1))
    assert 0.5 < r[0, 1] < 0.99
    assert frame.loc[frame["final_pct_of_baseline"].isna(), [f"final_pct_{s}" for s in SITES]].isna().all().all()


def test_final_ratio_per_site_and_direction(frame, report):
    pc = report["ratio"]["per_channel"]
    assert pc["timepoint"] == "1y" and [e["key"] for e in pc["entries"]] == [*SITES, "ZYG", "MAR"]
    for e in pc["entries"]:
        d = frame[frame[f"final_pct_{e['key']}"].notna() & frame["grade_1y"].notna()]
        x = d[f"final_pct_{e['key']}"].to_numpy(float)
        y = (d["grade_1y"] > 0).to_numpy(int)
        assert (e["n"], e["events"]) == (len(y), int(y.sum())), e["key"]
        # every site of this registry has enough events: otherwise the checks below would be skipped silently
        assert e["available"] and min(y.sum(), (1 - y).sum()) >= MIN_EVENTS, e["key"]
        auc, lo, hi = delong(y, x)
        assert same(e["auc"]["value"], roc_auc_score(y, x)) and same(e["auc"]["value"], auc), e["key"]
        assert same(e["auc"]["ci"][0], lo) and same(e["auc"]["ci"][1], hi), e["key"]
        best = youden(y, x)
        assert same(e["best_threshold_pct"], best), e["key"]
        rng = np.random.default_rng(SEED)
        boots = []
        for _ in range(RESAMPLES):
            idx = rng.integers(0, len(y), len(y))
            if 0 < y[idx].sum() < len(idx):
                boots.append(youden(y[idx], x[idx]))
        blo, bhi = np.percentile(boots, [2.5, 97.5])
        assert e["best_threshold_resamples"] == len(boots) > 150, e["key"]
        assert same(e["best_threshold_ci"][0], blo) and same(e["best_threshold_ci"][1], bhi), e["key"]
        assert same(e["at_best"]["sensitivity"], float(np.mean(x[y == 1] >= best)))
        assert same(e["at_best"]["specificity"], float(np.mean(x[y == 0] < best)))


def test_pan_criterion_reproduced_as_a_fixed_cut(frame, report):
    """Pan et al.: reduction ≥ 86.5 % in the mentalis (final ≤ 13.5 % of baseline) predicts complete
    resolution (grade 0) at 6 months. The 2×2 table and Wilson intervals, recomputed with scipy."""
    pan = report["ratio"]["pan"]
    d = frame[frame["final_pct_ZYG_mentalis"].notna() & frame["grade_6m"].notna()]
    met = (d["final_pct_ZYG_mentalis"] <= 100 - 86.5).to_numpy()
    resolved = (d["grade_6m"] == 0).to_numpy()
    a, b = int((met & resolved).sum()), int((met & ~resolved).sum())
    c, dd = int((~met & resolved).sum()), int((~met & ~resolved).sum())
    assert pan["available"] and (pan["site"], pan["timepoint"], pan["final_at_most_pct"]) == ("ZYG_mentalis", "6m", 13.5)
    assert pan["table"] == {"met_resolved": a, "met_spasm": b, "not_met_resolved": c, "not_met_spasm": dd}
    for key, k, n in (("sensitivity", a, a + c), ("specificity", dd, b + dd), ("ppv", a, a + b), ("npv", dd, c + dd)):
        got = pan[key]
        assert (got["k"], got["n"]) == (k, n), key
        if n < MIN_EVENTS:
            assert not got["available"] and got["reason"].startswith(f"not estimable (n < {MIN_EVENTS})"), key
            continue
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert got["available"] and same(got["value"], k / n), key
        assert same(got["ci"][0], ci.low) and same(got["ci"][1], ci.high), key
    assert all(pan[k]["available"] for k in ("sensitivity", "specificity", "ppv", "npv")), \
        "this registry must exercise every proportion"
