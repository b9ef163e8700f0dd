"""The 2025 study's analysis, run on a registry's cohort (numbers only; no plotting).

Why every result is either numbers or a sentence: registries start small.
A test that cannot be run on the data at hand (too few patients in a group,
no events, a factor that separates the groups perfectly) returns
`{"available": False, "reason": "..."}` saying why, never a NaN or a number
computed from nothing. The report prints the sentence.

Test choice, stated once here and in the report's methods:

- continuous factors: Welch's t-test when the Shapiro–Wilk test does not
  reject normality (p > `normality_alpha`) in either group and both groups
  vary, otherwise the two-sided Mann–Whitney U test; ordinal factors
  (grades, counts): always Mann–Whitney U;
- binary factors and 2×2 outcome tables: Pearson's chi-square with Yates'
  continuity correction when every expected count is ≥ `min_expected_count`,
  otherwise Fisher's exact test (two-sided);
- proportions: Wilson score intervals;
- multivariable model: unpenalised logistic regression of persistence on the
  seven factors (statsmodels, Newton), Wald confidence intervals, AUC with
  DeLong's interval, optimism by Harrell's bootstrap;
- time to relief: Kaplan–Meier by AMR status (statsmodels), log-rank test;
  patients without relief are censored at their last follow-up point.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amrwatch.proto.messages import COURSES
from amrwatch.services.predictor.features import FEATURES
from amrwatch.study.cohort_table import CohortRow
from amrwatch.registry.outcomes import FollowUpSettings
from amrwatch.registry.store import OUTCOME_CLASSES, TIMEPOINTS

GROUPS = ("persisted", "disappeared")


@dataclass(frozen=True)
class ReportSettings:
    ci_level: float = 0.95
    normality_alpha: float = 0.05
    min_expected_count: float = 5.0
    min_group_size: int = 3
    """Per group, for a two-group comparison of a factor (Shapiro–Wilk needs 3)."""
    min_events: int = 10
    """Persisted and disappeared patients each, for the multivariable model (as `amrwatch train`)."""
    bootstrap_resamples: int = 200
    seed: int = 0
    calibration_bins: int = 10
    min_per_calibration_bin: int = 10
    figure_size_in: tuple[float, float] = (6.4, 4.0)
    dpi: int = 100
    follow_up: FollowUpSettings = field(default_factory=FollowUpSettings)

    def __post_init__(self) -> None:
        checks = [("ci_level", self.ci_level, 0.5, 0.999), ("normality_alpha", self.normality_alpha, 0.001, 0.5),
                  ("min_expected_count", self.min_expected_count, 0.0, 100.0),
                  ("min_group_size", self.min_group_size, 3, 1000), ("min_events", self.min_events, 2, 10_000),
                  ("bootstrap_resamples", self.bootstrap_resamples, 0, 100_000),
                  ("calibration_bins", self.calibration_bins, 2, 100),
                  ("min_per_calibration_bin", self.min_per_calibration_bin, 1, 10_000), ("dpi", self.dpi, 50, 600)]
        for name, v, lo, hi in checks:
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}]; got {v}")
        w, h = self.figure_size_in
        if not (2.0 <= w <= 20.0 and 2.0 <= h <= 20.0):
            raise ValueError(f"figure_size_in must be two sizes in [2, 20] inches; got {self.figure_size_in}")


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _finite(*xs: float) -> bool:
    return all(x is not None and math.isfinite(float(x)) for x in xs)


def wilson(k: int, n: int, level: float) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def _group(row: CohortRow) -> str | None:
    return None if row.label is None else ("persisted" if row.label == 1 else "disappeared")


# --------------------------------------------------------------------------- #
# AMR course


def course_summary(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    counts = {c: sum(1 for r in rows if r.course == c) for c in COURSES}
    n_all = len(rows)
    out: dict[str, Any] = {"n_sessions": n_all, "counts": counts,
                           "percent": {c: (100.0 * k / n_all if n_all else None) for c, k in counts.items()}}
    labelled = [r for r in rows if r.label is not None]
    n = len(labelled)
    if n == 0:
        out["disappearance"] = unavailable("no operation had an AMR to lose: every course is 'never detected', "
                                           "so no disappearance rate exists")
        return out
    k = sum(1 for r in labelled if r.label == 0)
    lo, hi = wilson(k, n, s.ci_level)
    early = counts["disappeared_before_decompression"]
    disappearance: dict[str, Any] = {"available": True, "n": n, "disappeared": k, "persisted": n - k,
                                     "rate": k / n, "ci": [lo, hi], "ci_level": s.ci_level, "ci_method": "Wilson"}
    if k:
        elo, ehi = wilson(early, k, s.ci_level)
        disappearance["early_share"] = {"k": early, "n": k, "rate": early / k, "ci": [elo, ehi]}
    out["disappearance"] = disappearance
    return out


# --------------------------------------------------------------------------- #
# Factors by AMR status


def _describe(values: np.ndarray, kind: str, normal: bool) -> dict[str, Any]:
    if len(values) == 0:
        return {"n": 0}
    if kind == "bool":
        k = int(values.sum())
        return {"n": int(len(values)), "yes": k, "percent": 100.0 * k / len(values)}
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    d = {"n": int(len(values)), "median": med, "q1": q1, "q3": q3}
    if len(values) >= 2:
        d.update(mean=float(values.mean()), sd=float(values.std(ddof=1)))
    d["shown"] = "mean_sd" if normal and "sd" in d else "median_iqr"
    return d


def two_by_two(table: np.ndarray, s: ReportSettings) -> dict[str, Any]:
    """Chi-square (Yates) or Fisher's exact on a 2×2 table of counts, by the expected counts."""
    from scipy import stats
    from scipy.stats.contingency import expected_freq

    table = np.asarray(table, dtype=int)
    if (table.sum(axis=1) == 0).any() or (table.sum(axis=0) == 0).any():
        return unavailable("a row or column of the 2×2 table is empty, so the groups cannot be compared")
    expected = expected_freq(table)
    if float(expected.min()) >= s.min_expected_count:
        chi2, p, _, _ = stats.chi2_contingency(table, correction=True)
        res = {"test": "chi-square (Yates)", "statistic": float(chi2), "p_value": float(p)}
    else:
        odds, p = stats.fisher_exact(table, alternative="two-sided")
        res = {"test": "Fisher's exact", "statistic": None, "p_value": float(p)}
    res.update(available=True, min_expected=float(expected.min()), table=table.tolist())
    if not _finite(res["p_value"]):
        return unavailable(f"{res['test']} gave no finite p-value on the table {table.tolist()}")
    return res


def factor_comparison(rows: list[CohortRow], s: ReportSettings) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    for feat in FEATURES:
        vals = {g: np.array([float(r.factors[feat.name]) for r in rows
                             if _group(r) == g and r.factors[feat.name] is not None]) for g in GROUPS}
        a, b = vals["persisted"], vals["disappeared"]
        entry: dict[str, Any] = {"feature": feat.name, "label": feat.label, "unit": feat.unit, "kind": feat.kind}
        normal = False
        if feat.kind == "bool":
            table = np.array([[int(a.sum()), int(len(a) - a.sum())], [int(b.sum()), int(len(b) - b.sum())]])
            if len(a) == 0 or len(b) == 0:
                test = unavailable(f"needs patients in both groups; {len(a)} persisted and {len(b)} disappeared "
                                   f"have a value")
            else:
                test = two_by_two(table, s)
                if not test["available"]:
                    test = unavailable(f"every patient with a value has the same answer "
                                       f"({'yes' if a.sum() + b.sum() else 'no'}), so there is nothing to compare")
        elif min(len(a), len(b)) < s.min_group_size:
            test = unavailable(f"needs at least {s.min_group_size} patients with a value in each group; "
                               f"got {len(a)} persisted and {len(b)} disappeared")
        elif np.all(np.concatenate([a, b]) == a[0]):
            test = unavailable(f"every patient has the same value ({a[0]:g} {feat.unit}), so there is nothing to compare")
        else:
            if feat.kind == "float":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # constant group: Shapiro warns, p = 1
                    p_a = float(stats.shapiro(a).pvalue)
                    p_b = float(stats.shapiro(b).pvalue)
                # A group without spread is not "normal" (Shapiro says p = 1, a t statistic would be infinite).
                normal = (_finite(p_a, p_b) and p_a > s.normality_alpha and p_b > s.normality_alpha
                          and a.std() > 0 and b.std() > 0)
                entry["shapiro_p"] = {"persisted": p_a if _finite(p_a) else None,
                                      "disappeared": p_b if _finite(p_b) else None}
            if normal:
                r = stats.ttest_ind(a, b, equal_var=False)
                test = {"test": "Welch's t-test", "statistic": float(r.statistic), "p_value": float(r.pvalue)}
            else:
                r = stats.mannwhitneyu(a, b, alternative="two-sided")
                test = {"test": "Mann-Whitney U", "statistic": float(r.statistic), "p_value": float(r.pvalue)}
            test["available"] = True
            if not _finite(test["p_value"], test["statistic"]):
                test = unavailable(f"{test['test']} gave no finite result on these values")
        entry["persisted"] = _describe(a, feat.kind, normal)
        entry["disappeared"] = _describe(b, feat.kind, normal)
        entry["test"] = test
        out.append(entry)
    return out


# --------------------------------------------------------------------------- #
# Multivariable model


def design(rows: list[CohortRow]) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, y, n_incomplete): labelled rows with all seven factors, in FEATURE_NAMES order."""
    usable = [r for r in rows if r.label is not None and r.complete]
    incomplete = sum(1 for r in rows if r.label is not None and not r.complete)
    X = np.array([[float(r.factors[f.name]) for f in FEATURES] for r in usable], dtype=float).reshape(-1, len(FEATURES))
    y = np.array([r.label for r in usable], dtype=int)
    return X, y, incomplete


def calibration_bins(y: np.ndarray, p: np.ndarray, s: ReportSettings) -> list[dict[str, Any]]:
    """Patients in groups of similar predicted risk: mean prediction vs observed proportion (Wilson CI)."""
    k = int(min(s.calibration_bins, max(1, len(y) // s.min_per_calibration_bin)))
    order = np.argsort(p, kind="stable")
    out = []
    for idx in np.array_split(order, k):
        if len(idx) == 0:
            continue
        obs = int(y[idx].sum())
        lo, hi = wilson(obs, len(idx), s.ci_level)
        out.append({"n": int(len(idx)), "mean_predicted": float(p[idx].mean()), "observed": obs / len(idx),
                    "ci": [lo, hi]})
    return out


def roc_points(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}


def _auc_optimism(X: np.ndarray, y: np.ndarray, s: ReportSettings) -> float:
    """Harrell's bootstrap optimism of the AUC, with the trainer's own pipeline."""
    from sklearn.metrics import roc_auc_score

    from amrwatch.study.training import fit_pipeline, predict_proba

    rng = np.random.default_rng(s.seed)
    diffs = []
    while len(diffs) < s.bootstrap_resamples:
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        pipe = fit_pipeline(X[idx], y[idx])
        diffs.append(roc_auc_score(y[idx], predict_proba(pipe, X[idx])) - roc_auc_score(y, predict_proba(pipe, X)))
    return float(np.mean(diffs))


def multivariable(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    from amrwatch.study.training import TrainingError, delong_auc

    X, y, incomplete = design(rows)
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    base = {"n": int(len(y)), "events": events, "non_events": non_events, "excluded_incomplete": incomplete}
    if events < s.min_events or non_events < s.min_events:
        return {**base, **unavailable(
            f"the model of seven factors needs at least {s.min_events} patients whose AMR persisted and "
            f"{s.min_events} whose AMR disappeared (with all seven factors recorded); the registry has "
            f"{events} and {non_events}")}
    for j, feat in enumerate(FEATURES):
        if np.all(X[:, j] == X[0, j]):
            return {**base, **unavailable(f"{feat.label} has the same value ({X[0, j]:g}) for every patient, "
                                          "so its effect cannot be estimated")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, sm.add_constant(X, has_constant="add")).fit(method="newton", maxiter=100, disp=0)
        except np.linalg.LinAlgError:
            return {**base, **unavailable("the factors are collinear (the design matrix is singular), so the model "
                                          "cannot be estimated; more patients are needed")}
    trouble = [w for w in caught if issubclass(w.category, (PerfectSeparationWarning, ConvergenceWarning))]
    if trouble or not res.mle_retvals.get("converged", False) or not np.all(np.isfinite(res.bse)):
        return {**base, **unavailable("the maximum-likelihood fit did not converge: some combination of factors "
                                      "separates persisted from disappeared perfectly, so odds ratios would be "
                                      "infinite; more patients are needed")}
    ci = np.asarray(res.conf_int(alpha=1 - s.ci_level))
    table = []
    for j, feat in enumerate(FEATURES, start=1):
        b = float(res.params[j])
        table.append({"feature": feat.name, "label": feat.label, "per": feat.per, "per_label": feat.per_label,
                      "coef": b, "se": float(res.bse[j]), "odds_ratio": math.exp(b * feat.per),
                      "ci": [math.exp(ci[j, 0] * feat.per), math.exp(ci[j, 1] * feat.per)],
                      "p_value": float(res.pvalues[j])})
    p = np.asarray(res.predict(), dtype=float)
    try:
        auc, lo, hi, se = delong_auc(y, p, s.ci_level)
    except TrainingError as err:  # pragma: no cover - min_events ≥ 2 guarantees both classes
        return {**base, **unavailable(str(err))}
    out = {**base, "available": True, "intercept": float(res.params[0]), "odds_ratios": table,
           "log_likelihood": float(res.llf), "pseudo_r2": float(res.prsquared),
           "events_per_variable": events / len(FEATURES),
           "auc": {"value": auc, "ci": [lo, hi], "se": se, "method": "DeLong"},
           "roc": roc_points(y, p), "calibration": calibration_bins(y, p, s)}
    if s.bootstrap_resamples:
        opt = _auc_optimism(X, y, s)
        out["auc"].update(optimism=opt, corrected=auc - opt, resamples=s.bootstrap_resamples)
    return out


# --------------------------------------------------------------------------- #
# Outcomes


def outcomes_by_status(rows: list[CohortRow], s: ReportSettings) -> list[dict[str, Any]]:
    out = []
    for tp in TIMEPOINTS:
        seen = [r for r in rows if r.label is not None and r.grades[tp] is not None]
        entry: dict[str, Any] = {"timepoint": tp, "n": len(seen)}
        table = np.zeros((2, 2), dtype=int)  # rows persisted/disappeared; columns spasm/no spasm
        for r in seen:
            table[0 if r.label == 1 else 1, 0 if r.grades[tp] > 0 else 1] += 1
        for i, g in enumerate(GROUPS):
            n_g, k = int(table[i].sum()), int(table[i, 0])
            grp: dict[str, Any] = {"n": n_g, "spasm": k,
                                   "classes": {c: sum(1 for r in seen if _group(r) == g and r.classes[tp] == c)
                                               for c in OUTCOME_CLASSES}}
            if n_g:
                grp["rate"] = k / n_g
                grp["ci"] = list(wilson(k, n_g, s.ci_level))
            entry[g] = grp
        if table[0].sum() == 0 or table[1].sum() == 0:
            entry["test"] = unavailable(f"at {tp}, follow-up exists for {int(table[0].sum())} patients whose AMR "
                                        f"persisted and {int(table[1].sum())} whose AMR disappeared; both groups "
                                        "are needed for a comparison")
        elif table[:, 0].sum() == 0:
            entry["test"] = unavailable(f"every patient followed up at {tp} is free of spasm, so the groups "
                                        "cannot differ")
        elif table[:, 1].sum() == 0:
            entry["test"] = unavailable(f"every patient followed up at {tp} still has spasm, so the groups "
                                        "cannot differ")
        else:
            entry["test"] = two_by_two(table, s)
        out.append(entry)
    return out


def time_to_relief(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    """Kaplan–Meier of 'still in spasm' by AMR status, with the log-rank test."""
    from statsmodels.duration.survfunc import SurvfuncRight, survdiff

    data = {g: [] for g in GROUPS}
    for r in rows:
        g = _group(r)
        if g is None:
            continue
        if r.days_to_relief is not None:
            data[g].append((float(r.days_to_relief), 1))
        elif r.followup_days is not None:
            data[g].append((float(r.followup_days), 0))
    out: dict[str, Any] = {"censoring": "patients without relief are censored at their last follow-up point"}
    curves: dict[str, Any] = {}
    for g in GROUPS:
        if len(data[g]) < 2:
            curves[g] = unavailable(f"{len(data[g])} patient(s) whose AMR {g} have follow-up; a curve needs 2")
            continue
        t = np.array([d[0] for d in data[g]])
        e = np.array([d[1] for d in data[g]])
        if e.sum() == 0:
            curves[g] = {"available": True, "n": int(len(t)), "events": 0, "time": [0.0], "survival": [1.0],
                         "censored_times": sorted(float(x) for x in t), "median_days": None,
                         "relieved_by": {tp: 0.0 for tp in TIMEPOINTS}}
            continue
        sf = SurvfuncRight(t, e)
        times, surv = np.asarray(sf.surv_times, dtype=float), np.asarray(sf.surv_prob, dtype=float)
        below = np.nonzero(surv <= 0.5)[0]
        days = s.follow_up.timepoint_days

        def at(day: float) -> float:
            i = np.searchsorted(times, day, side="right") - 1
            return 1.0 if i < 0 else float(surv[i])

        curves[g] = {"available": True, "n": int(len(t)), "events": int(e.sum()),
                     "time": [0.0, *times.tolist()], "survival": [1.0, *surv.tolist()],
                     "censored_times": sorted(float(x) for x, ev in zip(t, e) if ev == 0),
                     "median_days": float(times[below[0]]) if below.size else None,
                     "relieved_by": {tp: 1.0 - at(days[tp]) for tp in TIMEPOINTS}}
    out["curves"] = curves
    if not all(curves[g]["available"] for g in GROUPS):
        out["logrank"] = unavailable("both AMR groups need follow-up for a log-rank test")
    elif curves["persisted"]["events"] + curves["disappeared"]["events"] == 0:
        out["logrank"] = unavailable("no patient has a recorded relief, so the curves cannot differ")
    else:
        t = np.array([d[0] for g in GROUPS for d in data[g]])
        e = np.array([d[1] for g in GROUPS for d in data[g]])
        grp = np.array([g for g in GROUPS for _ in data[g]])
        chi2, p = survdiff(t, e, grp)
        out["logrank"] = ({"available": True, "test": "log-rank", "statistic": float(chi2), "p_value": float(p)}
                          if _finite(chi2, p) else unavailable("the log-rank test gave no finite p-value"))
    return out


# --------------------------------------------------------------------------- #
# The current model on the registry


def validation(rows: list[CohortRow], model, s: ReportSettings, export_sha256: str | None = None) -> dict[str, Any]:
    """How the model in use predicts this registry's patients (external unless it was fitted on them)."""
    from amrwatch.study.training import TrainingError, brier, calibration, delong_auc

    X, y, incomplete = design(rows)
    card = model.card
    training = getattr(card, "training_data", None) or {}
    info = {"model_sha256": model.sha256, "synthetic": bool(model.synthetic), "notice": model.notice,
            "cutoffs": list(model.cutoffs), "trained_on": training.get("source"),
            "trained_on_this_export": bool(export_sha256 and training.get("sha256") == export_sha256),
            "n": int(len(y)), "events": int(y.sum()), "excluded_incomplete": incomplete,
            "same_model_in_or": sum(1 for r in rows if r.prediction_model_sha256 == model.sha256)}
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    if events < 2 or non_events < 2:
        return {**info, **unavailable(f"an AUC needs at least 2 patients whose AMR persisted and 2 whose AMR "
                                      f"disappeared, with all seven factors; the registry has {events} and {non_events}")}
    p = model.probabilities(X)
    try:
        auc, lo, hi, se = delong_auc(y, p, s.ci_level)
    except TrainingError as err:  # pragma: no cover - guarded above
        return {**info, **unavailable(str(err))}
    low, high = model.cutoffs
    pos, neg = p[y == 1], p[y == 0]
    out = {**info, "available": True, "auc": {"value": auc, "ci": [lo, hi], "se": se, "method": "DeLong"},
           "brier": brier(y, p), "roc": roc_points(y, p), "calibration": calibration_bins(y, p, s),
           "sensitivity_at_low": float((pos >= low).mean()), "specificity_at_high": float((neg < high).mean()),
           "bands": {b: {"n": int(m.sum()), "persisted": int(y[m].sum())}
                     for b, m in (("low", p < low), ("intermediate", (p >= low) & (p < high)), ("high", p >= high))}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cal_int, cal_slope = calibration(y, p)
        except Exception:  # statsmodels raises several types on degenerate data
            cal_int = cal_slope = float("nan")
    out["calibration_fit"] = ({"intercept": cal_int, "slope": cal_slope} if _finite(cal_int, cal_slope)
                              else unavailable("the calibration intercept and slope cannot be estimated on these data"))
    return out


def analyse(rows: list[CohortRow], s: ReportSettings, model=None, export_sha256: str | None = None) -> dict[str, Any]:
    """Every analysis of the report, as JSON-able data."""
    return {
        "courses": course_summary(rows, s),
        "factors": factor_comparison(rows, s),
        "multivariable": multivariable(rows, s),
        "outcomes": outcomes_by_status(rows, s),
        "time_to_relief": time_to_relief(rows, s),
        "validation": validation(rows, model, s, export_sha256) if model is not None else
        unavailable("no model was loaded"),
    }
