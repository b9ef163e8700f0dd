"""The 2025 study's analysis, run on a registry's cohort (numbers only; no plotting).

Why every result is either numbers or a sentence: registries start small.
A test that cannot be run on the data at hand (too few patients in a group,
no events, a factor that separates the groups perfectly) returns
`{"available": False, "reason": "..."}` saying why, never a NaN or a number
computed from nothing. The report prints the sentence.

Test choice, stated once here and in the report's methods:

- continuous and ordinal factors: the two-sided Mann–Whitney U test, chosen
  in advance (durations and amplitudes are skewed, grades and counts are
  ordinal) and summarised by median [IQR]; no normality pre-test decides
  the test, since a two-stage rule (Shapiro–Wilk, then t or U) distorts the
  error rate of the second test; ordinal medians and quartiles are values of
  the scale (integers);
- binary factors and 2×2 outcome tables: Pearson's chi-square with Yates'
  continuity correction when every expected count is ≥ `min_expected_count`,
  otherwise Fisher's exact test (two-sided);
- proportions: Wilson score intervals;
- multivariable model: unpenalised logistic regression of persistence on the
  seven factors (statsmodels, Newton), Wald confidence intervals, AUC with
  DeLong's interval, optimism by Harrell's bootstrap;
- follow-up recordings: AMR present or not in the postoperative recording linked
  at a follow-up point against spasm at the outcome point (1 year), beside the
  intraoperative course of the same patients; Fisher's exact test (two-sided)
  whatever the counts, since these subgroups are small;
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
from amrwatch.study.cohort_table import DIRECTIONS, RECORDING_SITES, CohortRow
from amrwatch.registry.outcomes import FollowUpSettings
from amrwatch.registry.store import OUTCOME_CLASSES, RECORDING_TIMEPOINTS, TIMEPOINTS

GROUPS = ("persisted", "disappeared")


@dataclass(frozen=True)
class ReportSettings:
    ci_level: float = 0.95
    min_expected_count: float = 5.0
    min_group_size: int = 3
    """Per group, for a two-group comparison of a factor."""
    calibration_band_resamples: int = 100
    """Bootstrap resamples for the band around the smoothed calibration curve."""
    ratio_threshold_resamples: int = 200
    """Bootstrap resamples for the interval of the best final/baseline threshold."""
    ratio_min_events: int = 5
    """Per channel/direction ROC and the Pan criterion's proportions: fewer patients than this with (or
    without) the outcome, or in a proportion's denominator, and the figure is 'not estimable', not a number."""
    pan_reduction_pct: float = 86.5
    """Pan et al. (Neurosurg Focus 2025, 208 patients): a final-to-baseline amplitude reduction of at least
    86.5 % in the mentalis predicted complete resolution at 6 months (99 % sensitivity, 47 % specificity)."""
    pan_site: str = "ZYG_mentalis"
    """The recording site the criterion is read at (Pan et al.: the mentalis, ZYG stimulation)."""
    pan_timepoint: str = "6m"
    """Pan et al. judged the outcome at the 6-month follow-up."""
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
        checks = [("ci_level", self.ci_level, 0.5, 0.999), ("min_expected_count", self.min_expected_count, 0.0, 100.0),
                  ("min_group_size", self.min_group_size, 3, 1000), ("min_events", self.min_events, 2, 10_000),
                  ("bootstrap_resamples", self.bootstrap_resamples, 0, 100_000),
                  ("calibration_bins", self.calibration_bins, 2, 100),
                  ("min_per_calibration_bin", self.min_per_calibration_bin, 1, 10_000), ("dpi", self.dpi, 50, 600)]
        checks += [("ratio_min_events", self.ratio_min_events, 2, 10_000),
                   ("pan_reduction_pct", self.pan_reduction_pct, 0.0, 100.0)]
        for name, v, lo, hi in checks:
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}]; got {v}")
        sites = [f"{d}_{m}" for d, m in RECORDING_SITES]
        if self.pan_site not in sites:
            raise ValueError(f"pan_site must be one of {sites}; got {self.pan_site!r}")
        if self.pan_timepoint not in TIMEPOINTS:
            raise ValueError(f"pan_timepoint must be one of {list(TIMEPOINTS)}; got {self.pan_timepoint!r}")
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


def _describe(values: np.ndarray, kind: str) -> dict[str, Any]:
    if len(values) == 0:
        return {"n": 0}
    if kind == "bool":
        k = int(values.sum())
        return {"n": int(len(values)), "yes": k, "percent": 100.0 * k / len(values)}
    # An ordinal scale has no value between its steps: its median and quartiles are observed values.
    method = "inverted_cdf" if kind == "int" else "linear"
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75], method=method))
    d = {"n": int(len(values)), "median": med, "q1": q1, "q3": q3, "shown": "median_iqr", "ordinal": kind == "int"}
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
            r = stats.mannwhitneyu(a, b, alternative="two-sided")
            test = {"test": "Mann-Whitney U", "statistic": float(r.statistic), "p_value": float(r.pvalue)}
            test["available"] = True
            if not _finite(test["p_value"], test["statistic"]):
                test = unavailable(f"{test['test']} gave no finite result on these values")
        entry["persisted"] = _describe(a, feat.kind)
        entry["disappeared"] = _describe(b, feat.kind)
        entry["test"] = test
        out.append(entry)
    return out


# --------------------------------------------------------------------------- #
# Multivariable model


def design(rows: list[CohortRow], eligible_only: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, y, n_incomplete): labelled rows with all seven factors, in FEATURE_NAMES order.

    eligible_only: the decision model's population — the AMR still present when decompression started
    (an early disappearance never reaches the point where the model is consulted)."""
    pool = [r for r in rows if r.label is not None and (r.eligible or not eligible_only)]
    usable = [r for r in pool if r.complete]
    incomplete = sum(1 for r in pool if not r.complete)
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
    """Harrell's bootstrap optimism of the unpenalised model's AUC: all resamples fitted as one batch
    (study/logistic.py; Firth where a resample is separated, so none is skipped)."""
    from amrwatch.study import logistic as lg
    from amrwatch.study.training import _design, ml_or_firth, resample_weights

    Z = _design(X, X.mean(axis=0), X.std(axis=0))
    W = resample_weights(np.random.default_rng(s.seed), y, s.bootstrap_resamples)
    beta, _ = ml_or_firth(Z, y, W)
    lp = lg.predict_lp(Z, beta)
    return float(np.mean(lg.auc(y, lp, W) - lg.auc(y, lp)))


def population(rows: list[CohortRow]) -> dict[str, Any]:
    """Both populations: every labelled patient (the study's denominator) and the model's eligible ones."""
    labelled = [r for r in rows if r.label is not None]
    eligible = [r for r in labelled if r.eligible]
    rate = lambda rs: (sum(r.label for r in rs) / len(rs)) if rs else None  # noqa: E731
    return {"all_detected": {"n": len(labelled), "persisted": sum(r.label for r in labelled), "persistence": rate(labelled)},
            "eligible": {"n": len(eligible), "persisted": sum(r.label for r in eligible), "persistence": rate(eligible)},
            "disappeared_before_decompression": len(labelled) - len(eligible),
            "definition": "eligible: the AMR was detected and still present when decompression started"}


def multivariable(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    from amrwatch.study.training import TrainingError, delong_auc

    X, y, incomplete = design(rows)
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    base = {"n": int(len(y)), "events": events, "non_events": non_events, "excluded_incomplete": incomplete,
            "population": population(rows)}
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


def _spasm_table(pairs: list[tuple[Any, Any]]) -> np.ndarray:
    """2×2 counts: rows AMR present / absent, columns spasm / no spasm."""
    table = np.zeros((2, 2), dtype=int)
    for amr, grade in pairs:
        table[0 if amr == 1 else 1, 0 if grade > 0 else 1] += 1
    return table


def _fisher(table: np.ndarray, what: str) -> dict[str, Any]:
    from scipy import stats

    if table[0].sum() == 0 or table[1].sum() == 0:
        return unavailable(f"{what}: not available, too few — {int(table[0].sum())} patients with the AMR present "
                           f"and {int(table[1].sum())} without; both groups are needed")
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return unavailable(f"{what}: not available — every patient is "
                           f"{'free of spasm' if table[:, 0].sum() == 0 else 'still in spasm'}, so the groups "
                           "cannot differ")
    odds, p = stats.fisher_exact(table, alternative="two-sided")
    return {"available": True, "test": "Fisher's exact", "p_value": float(p),
            "odds_ratio": float(odds) if math.isfinite(odds) else None, "table": table.tolist()}


def followup_recordings(rows: list[CohortRow], s: ReportSettings,
                        outcome_timepoint: str = "1y") -> list[dict[str, Any]]:
    """Per follow-up point with linked recordings: AMR in the postoperative recording vs spasm at
    `outcome_timepoint`, and beside it the intraoperative course (persisted vs not) of the same patients."""
    out = []
    for tp in RECORDING_TIMEPOINTS:
        linked = [r for r in rows if r.followup_amr.get(tp) is not None]
        if not linked:
            continue
        seen = [r for r in linked if r.grades[outcome_timepoint] is not None]
        post = _spasm_table([(r.followup_amr[tp], r.grades[outcome_timepoint]) for r in seen])
        intra_rows = [r for r in seen if r.label is not None]
        intra = _spasm_table([(r.label, r.grades[outcome_timepoint]) for r in intra_rows])
        out.append({
            "timepoint": tp, "outcome_timepoint": outcome_timepoint, "n_linked": len(linked), "n": len(seen),
            "postoperative": {"table": post.tolist(),
                              "test": _fisher(post, f"{tp} recording vs {outcome_timepoint} outcome")},
            "intraoperative": {"n": len(intra_rows), "table": intra.tolist(),
                               "test": _fisher(intra, f"intraoperative course vs {outcome_timepoint} outcome "
                                                      f"(patients with a {tp} recording)")},
        })
    return out


def _loglog_ci(surv: np.ndarray, se: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise log-log interval of a Kaplan–Meier curve from Greenwood's standard error (stays in [0, 1])."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(surv)
        theta = z * se / (surv * np.abs(log_s))
        lo, hi = surv ** np.exp(theta), surv ** np.exp(-theta)
    ok = (surv > 0) & (surv < 1) & np.isfinite(theta)
    return np.where(ok, lo, surv), np.where(ok, hi, surv)


def _at_risk(t: np.ndarray, days: dict[str, int]) -> dict[str, int]:
    """Patients still followed and still in spasm just before each time point (the numbers under a KM plot)."""
    return {"0": int(len(t)), **{tp: int(np.sum(t >= d)) for tp, d in days.items()}}


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
    by_visit = sum(1 for r in rows if _group(r) is not None and r.relief_dated_by == "first_cured_followup")
    out: dict[str, Any] = {
        "censoring": "patients without relief are censored at their last follow-up point",
        "interval_censored": by_visit,
        "interval_censoring": (
            f"{by_visit} relief time(s) have no spasm-free date: relief happened between the last visit with spasm "
            "and the first without (interval-censored). They are analysed at the visit that found the patient "
            "relieved, an upper bound, so the curves run late and the medians are overestimates for them"
            if by_visit else "every relief time is dated by a spasm-free date")}
    curves: dict[str, Any] = {}
    for g in GROUPS:
        if len(data[g]) < 2:
            curves[g] = unavailable(f"{len(data[g])} patient(s) whose AMR {g} have follow-up; a curve needs 2")
            continue
        t = np.array([d[0] for d in data[g]])
        e = np.array([d[1] for d in data[g]])
        days = s.follow_up.timepoint_days
        if e.sum() == 0:
            curves[g] = {"available": True, "n": int(len(t)), "events": 0, "time": [0.0], "survival": [1.0],
                         "ci_low": [1.0], "ci_high": [1.0], "at_risk": _at_risk(t, days),
                         "censored_times": sorted(float(x) for x in t), "median_days": None,
                         "relieved_by": {tp: 0.0 for tp in TIMEPOINTS}}
            continue
        sf = SurvfuncRight(t, e)
        times, surv = np.asarray(sf.surv_times, dtype=float), np.asarray(sf.surv_prob, dtype=float)
        below = np.nonzero(surv <= 0.5)[0]
        days = s.follow_up.timepoint_days

        def at(day: float, times: np.ndarray = times, surv: np.ndarray = surv) -> float:
            i = np.searchsorted(times, day, side="right") - 1
            return 1.0 if i < 0 else float(surv[i])

        se = np.asarray(sf.surv_prob_se, dtype=float)
        lo_ci, hi_ci = _loglog_ci(surv, se, s.ci_level)
        curves[g] = {"available": True, "n": int(len(t)), "events": int(e.sum()),
                     "time": [0.0, *times.tolist()], "survival": [1.0, *surv.tolist()],
                     "ci_low": [1.0, *lo_ci.tolist()], "ci_high": [1.0, *hi_ci.tolist()],
                     "at_risk": _at_risk(t, days),
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
# Model-use analyses: decision curves, smoothed calibration, outcomes by band


DCA_THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(1, 81))


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds=DCA_THRESHOLDS) -> dict[str, list[float]]:
    """Decision-curve analysis (Vickers & Elkin 2006): net benefit of acting on p ≥ t, of acting on everyone
    and of acting on no one (0), at each threshold t. Net benefit = TP/n − FP/n · t/(1 − t)."""
    y = np.asarray(y, dtype=int)
    n = len(y)
    prev = y.mean()
    model, treat_all = [], []
    for t in thresholds:
        act = p >= t
        tp, fp = float(np.sum(act & (y == 1))), float(np.sum(act & (y == 0)))
        w = t / (1 - t)
        model.append(tp / n - fp / n * w)
        treat_all.append(prev - (1 - prev) * w)
    return {"thresholds": list(thresholds), "model": model, "treat_all": treat_all, "treat_none": [0.0] * len(thresholds)}


def smoothed_calibration(y: np.ndarray, p: np.ndarray, s: ReportSettings, grid_n: int = 50) -> dict[str, Any]:
    """LOWESS of outcome on predicted probability (statsmodels, frac 2/3, no robustness iterations, linear
    interpolation within 0.5 % of the range), read on a grid, with a percentile bootstrap band
    (`calibration_band_resamples`)."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    lo_p, hi_p = float(np.quantile(p, 0.01)), float(np.quantile(p, 0.99))
    grid = np.linspace(lo_p, hi_p, grid_n)

    def curve(yy: np.ndarray, pp: np.ndarray) -> np.ndarray:
        fit = lowess(yy, pp, frac=2 / 3, it=0, delta=0.005 * (hi_p - lo_p), return_sorted=True)
        return np.clip(np.interp(grid, fit[:, 0], fit[:, 1]), 0.0, 1.0)

    main = curve(y.astype(float), p)
    rng = np.random.default_rng(s.seed)
    boots = []
    for _ in range(s.calibration_band_resamples):
        idx = rng.integers(0, len(y), len(y))
        boots.append(curve(y[idx].astype(float), p[idx]))
    band = np.nanquantile(np.array(boots), [(1 - s.ci_level) / 2, (1 + s.ci_level) / 2], axis=0) if boots else \
        np.vstack([main, main])
    return {"grid": grid.tolist(), "observed": main.tolist(), "band_low": band[0].tolist(),
            "band_high": band[1].tolist(), "method": "LOWESS (frac 2/3) with a percentile bootstrap band",
            "resamples": s.calibration_band_resamples}


def implied_decision(row: CohortRow) -> str | None:
    """The verdict the decision rules give for a band and a course (decision.py): an AMR gone after
    decompression confirms it; a persisting AMR is unexpected in the low band (explore further), expected in
    the high band (termination acceptable once decompression is seen to be adequate), undecided in between."""
    if row.course is None or row.predicted_band is None:
        return None
    if row.course == "disappeared_after_decompression":
        return "decompression_confirmed"
    if row.course != "persisted":
        return None
    return {"low": "explore_further", "high": "termination_acceptable", "intermediate": "indeterminate"}.get(
        row.predicted_band)


def outcomes_by_band(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    """Persistent spasm at each follow-up point by the band predicted in the operating room and by the
    decision that band implied — did 'termination acceptable' patients do well?"""
    out: dict[str, Any] = {"by_band": {}, "by_decision": {},
                           "note": "decision implied by the band recorded in the operating room and the AMR "
                                   "course, by the decision rules; the registry stores the band, not each decision"}
    for key, fn, levels in (("by_band", lambda r: r.predicted_band, ("low", "intermediate", "high")),
                            ("by_decision", implied_decision,
                             ("decompression_confirmed", "explore_further", "indeterminate", "termination_acceptable"))):
        for lev in levels:
            entry = {}
            for tp in TIMEPOINTS:
                seen = [r for r in rows if r.eligible and fn(r) == lev and r.grades[tp] is not None]
                k = sum(1 for r in seen if r.grades[tp] > 0)
                entry[tp] = {"n": len(seen), "spasm": k,
                             **({"rate": k / len(seen), "ci": list(wilson(k, len(seen), s.ci_level))} if seen else {})}
            out[key][lev] = entry
    return out


# --------------------------------------------------------------------------- #
# The final/baseline amplitude ratio as a predictor of outcome

def _youden(y: np.ndarray, x: np.ndarray) -> float:
    """The threshold maximising Youden's J (sensitivity + specificity − 1) for 'x ≥ threshold predicts y = 1'."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, x)
    finite = np.isfinite(thr)
    j = np.argmax((tpr - fpr)[finite])
    return float(thr[finite][j])


def _ratio_roc(x: np.ndarray, y: np.ndarray, s: ReportSettings) -> dict[str, Any]:
    """AUC (DeLong) of x for y, the Youden threshold with a percentile bootstrap interval (seed `s.seed`,
    `ratio_threshold_resamples`; resamples with one outcome only are skipped and counted), and sensitivity
    and specificity at it. The caller has checked both outcomes are present."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from amrwatch.study.training import delong_auc

    auc, lo, hi, se = delong_auc(y, x, s.ci_level)
    best = _youden(y, x)
    rng = np.random.default_rng(s.seed)
    boots = []
    for _ in range(s.ratio_threshold_resamples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            boots.append(_youden(y[idx], x[idx]))
    blo, bhi = (np.quantile(boots, [(1 - s.ci_level) / 2, (1 + s.ci_level) / 2]) if boots else (best, best))
    fpr, tpr, _ = roc_curve(y, x)
    return {"auc": {"value": auc, "ci": [lo, hi], "se": se, "method": "DeLong", "check": float(roc_auc_score(y, x))},
            "best_threshold_pct": best, "best_threshold_ci": [float(blo), float(bhi)],
            "best_threshold_resamples": len(boots),
            "best_threshold_rule": "Youden's J (final % of baseline ≥ threshold predicts persistent spasm); percentile "
                                   f"bootstrap interval, {len(boots)} resamples",
            "at_best": {"sensitivity": float(np.mean(x[y == 1] >= best)), "specificity": float(np.mean(x[y == 0] < best))},
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}}


def ratio_as_predictor(rows: list[CohortRow], s: ReportSettings, timepoint: str = "1y") -> dict[str, Any]:
    """ROC of the final amplitude (percent of baseline) for persistent spasm at `timepoint`; the best
    (Youden) threshold with a percentile bootstrap interval; the Pan et al. reduction criterion's sensitivity
    and specificity (for spasm, i.e. final above 100 − `pan_reduction_pct`); then the same per recording site
    and per stimulation direction (`ratio_per_channel`) and the Pan criterion reproduced (`pan_criterion`)."""
    use = [r for r in rows if r.final_pct_of_baseline is not None and r.grades[timepoint] is not None]
    x = np.array([r.final_pct_of_baseline for r in use], dtype=float)
    y = np.array([int(r.grades[timepoint] > 0) for r in use], dtype=int)
    base = {"timepoint": timepoint, "n": int(len(y)), "events": int(y.sum()),
            "per_channel": ratio_per_channel(rows, s, timepoint), "pan": pan_criterion(rows, s)}
    if y.sum() < 2 or (1 - y).sum() < 2:
        return {**base, **unavailable(f"a ROC needs at least 2 patients with and 2 without spasm at {timepoint} "
                                      f"who have a final percentage; got {int(y.sum())} and {int((1 - y).sum())}")}
    criterion = 100.0 - s.pan_reduction_pct
    crit = x > criterion  # predicts persistent spasm
    return {**base, "available": True, **_ratio_roc(x, y, s), "criterion_pct": criterion,
            "at_criterion": {"sensitivity": float(np.mean(crit[y == 1])), "specificity": float(np.mean(~crit[y == 0]))}}


def _site_label(key: str) -> str:
    d, _, m = key.partition("_")
    return f"{d} → {m.replace('_', ' ')}" if m else f"{d} (largest channel of the direction)"


def ratio_per_channel(rows: list[CohortRow], s: ReportSettings, timepoint: str = "1y") -> dict[str, Any]:
    """The final percent of baseline of each recording site (`final_pct_<direction>_<muscle>`) and each
    stimulation direction (`final_pct_<direction>`, its largest channel) as a predictor of persistent spasm at
    `timepoint`: n, events, AUC (DeLong), Youden threshold with its bootstrap interval, sensitivity and
    specificity at it; 'not estimable' below `ratio_min_events` patients with or without spasm."""
    k = s.ratio_min_events
    entries = []
    for key in (*(f"{d}_{m}" for d, m in RECORDING_SITES), *DIRECTIONS):
        use = [r for r in rows if r.final_pct.get(key) is not None and r.grades[timepoint] is not None]
        x = np.array([r.final_pct[key] for r in use], dtype=float)
        y = np.array([int(r.grades[timepoint] > 0) for r in use], dtype=int)
        entry: dict[str, Any] = {"key": key, "column": f"final_pct_{key}", "label": _site_label(key),
                                 "kind": "direction" if key in DIRECTIONS else "site",
                                 "n": int(len(y)), "events": int(y.sum())}
        events, non_events = int(y.sum()), int(len(y) - y.sum())
        if events < k or non_events < k:
            entry.update(unavailable(f"not estimable (n events < {k}): {events} patients with spasm at {timepoint} "
                                     f"and {non_events} without have this figure; at least {k} of each are needed"))
        elif np.all(x == x[0]):
            entry.update(unavailable(f"every patient has the same final percentage ({x[0]:g}%)"))
        else:
            entry.update(available=True, **_ratio_roc(x, y, s))
        entries.append(entry)
    return {"available": any(e["available"] for e in entries), "timepoint": timepoint, "min_events": k,
            "entries": entries,
            **({} if any(e["available"] for e in entries) else
               {"reason": "no recording site or direction has enough patients with per-channel figures "
                          "(summaries stored before they were kept have none)"})}


def _proportion(k: int, n: int, s: ReportSettings, what: str) -> dict[str, Any]:
    if n < s.ratio_min_events:
        return {"k": k, "n": n, **unavailable(f"not estimable (n < {s.ratio_min_events}): {n} {what}")}
    lo, hi = wilson(k, n, s.ci_level)
    return {"available": True, "k": k, "n": n, "value": k / n, "ci": [lo, hi]}


def pan_criterion(rows: list[CohortRow], s: ReportSettings) -> dict[str, Any]:
    """Pan et al.'s criterion as a fixed cut: a reduction of at least `pan_reduction_pct` at `pan_site` (final ≤
    100 − that % of baseline) predicting complete resolution (Cohen grade 0) at `pan_timepoint`. Sensitivity,
    specificity, PPV and NPV with Wilson intervals; each 'not estimable' when its denominator is below
    `ratio_min_events`."""
    cut = 100.0 - s.pan_reduction_pct
    tp_ = s.pan_timepoint
    use = [r for r in rows if r.final_pct.get(s.pan_site) is not None and r.grades[tp_] is not None]
    test = np.array([r.final_pct[s.pan_site] <= cut for r in use], dtype=bool)
    resolved = np.array([r.grades[tp_] == 0 for r in use], dtype=bool)
    a = int(np.sum(test & resolved))     # criterion met, resolved
    b = int(np.sum(test & ~resolved))    # criterion met, spasm remains
    c = int(np.sum(~test & resolved))    # criterion not met, resolved
    d = int(np.sum(~test & ~resolved))   # criterion not met, spasm remains
    out: dict[str, Any] = {
        "source": "Pan et al., Neurosurg Focus 2025 (doi 10.3171/2025.6.FOCUS25436): reduction ≥ 86.5 % in the "
                  "mentalis predicted complete resolution at 6 months with 99 % sensitivity and 47 % specificity",
        "reduction_pct": s.pan_reduction_pct, "final_at_most_pct": cut, "site": s.pan_site,
        "column": f"final_pct_{s.pan_site}", "label": _site_label(s.pan_site), "timepoint": tp_,
        "outcome": "complete resolution: Cohen grade 0 at the follow-up point",
        "n": len(use), "resolved": a + c, "table": {"met_resolved": a, "met_spasm": b, "not_met_resolved": c,
                                                    "not_met_spasm": d},
        "ci_method": "Wilson", "ci_level": s.ci_level,
        "sensitivity": _proportion(a, a + c, s, "patients resolved"),
        "specificity": _proportion(d, b + d, s, "patients with spasm"),
        "ppv": _proportion(a, a + b, s, "patients meeting the criterion"),
        "npv": _proportion(d, c + d, s, "patients not meeting it"),
    }
    if not use:
        out.update(unavailable(f"no patient has both a {out['column']} figure and a {tp_} follow-up"))
    else:
        out["available"] = True
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
    out["smoothed_calibration"] = smoothed_calibration(y, p, s)
    out["decision_curve"] = net_benefit(y, p)
    out["outcomes_by_band"] = outcomes_by_band(rows, s)
    claims = (getattr(card, "performance", None) or {}).get("optimism_corrected", {})
    flags = []
    for key, got in (("sensitivity_at_low", out["sensitivity_at_low"]), ("specificity_at_high", out["specificity_at_high"]),
                     ("auc", auc)):
        claim = claims.get(key)
        if claim and got < claim["ci"][0]:
            flags.append({"measure": key, "observed": got, "card_estimate": claim["estimate"], "card_ci": claim["ci"]})
    out["below_card"] = flags
    out["treatment_effect"] = (
        f"{info['same_model_in_or']} of these operations were advised by this same model in the operating room. Where "
        "a prediction changed what the surgeon did (explored further after an unexpected persistence, stopped after "
        "an expected one), the outcome the model predicts was itself affected by the prediction: an exploration that "
        "found and freed a missed vessel turns a would-be persistence into a disappearance. Such a registry "
        "therefore measures the model together with its use, not the model alone; the figures are biased in a "
        "direction that depends on how often advice was followed")
    return out


def delong_paired(y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated AUCs on the same patients: difference, its SE, z and two-sided p."""
    from scipy import stats

    y = np.asarray(y, dtype=int)

    def placements(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = p[y == 1], p[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = placements(p1), placements(p2)
    m, n = len(a10), len(a01)
    s10, s01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    cov = s10 / m + s01 / n
    diff = float(a10.mean() - b10.mean())
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(var) if var > 0 else 0.0
    z = diff / se if se > 0 else 0.0
    return {"auc_1": float(a10.mean()), "auc_2": float(b10.mean()), "difference": diff, "se": se, "z": z,
            "p_value": float(2 * stats.norm.sf(abs(z))) if se > 0 else 1.0}


def compare_models(rows: list[CohortRow], model, other, s: ReportSettings) -> dict[str, Any]:
    """Two models side by side on the same eligible patients: AUCs with DeLong's test of the difference,
    calibration intercept and slope, net benefit at each model's own cut-offs and across thresholds."""
    from amrwatch.study.training import calibration

    X, y, _ = design(rows)
    if y.sum() < 2 or (1 - y).sum() < 2:
        return unavailable("a comparison needs at least 2 patients of each outcome with all seven factors")
    out: dict[str, Any] = {"available": True, "n": int(len(y)), "events": int(y.sum()), "models": []}
    ps = []
    for m in (model, other):
        p = np.asarray(m.probabilities(X), dtype=float)
        ps.append(p)
        ci_, cs_ = calibration(y, p)
        out["models"].append({"model_sha256": m.sha256, "synthetic": bool(m.synthetic), "cutoffs": list(m.cutoffs),
                              "calibration": {"intercept": ci_, "slope": cs_},
                              "brier": float(np.mean((p - y) ** 2)),
                              "net_benefit": net_benefit(y, p),
                              "net_benefit_at_cutoffs": {
                                  name: net_benefit(y, p, (round(float(c), 6),))["model"][0]
                                  for name, c in zip(("low", "high"), m.cutoffs)}})
    out["delong"] = delong_paired(y, ps[0], ps[1])
    return out


def analyse(rows: list[CohortRow], s: ReportSettings, model=None, export_sha256: str | None = None) -> dict[str, Any]:
    """Every analysis of the report, as JSON-able data."""
    return {
        "courses": course_summary(rows, s),
        "factors": factor_comparison(rows, s),
        "multivariable": multivariable(rows, s),
        "outcomes": outcomes_by_status(rows, s),
        "followup_recordings": followup_recordings(rows, s),
        "time_to_relief": time_to_relief(rows, s),
        "ratio": ratio_as_predictor(rows, s),
        "validation": validation(rows, model, s, export_sha256) if model is not None else
        unavailable("no model was loaded"),
    }
