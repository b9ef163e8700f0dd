"""The report over a multi-site registry: the model validated per site and pooled, with site as a stratum.

Why: a model validated in the centre that built it says little about the next
hospital (case mix, montage, anaesthesia, who grades the spasm). A registry
fed by several carts at several sites allows what no published AMR model has
had: an external validation per site and a check that one model fits all.

What is computed, and why each:

- per site and pooled: the validation `cohort_stats.validation` already does
  (AUC with DeLong CI, Brier score, calibration), on that site's patients;
- site-stratified (within-site) AUC: the concordance over pairs of patients
  from the SAME site only, so a site with more persistence and higher risk
  scores cannot inflate the pooled AUC (the stratified C statistic);
- site as a stratum of calibration: logistic recalibration y ~ logit(p) with
  and without one intercept per site (fixed site effects); the likelihood-ratio
  test asks whether calibration-in-the-large differs between sites. With few
  sites a random intercept's variance is poorly estimated, so fixed strata and
  an LR test are stated instead; the per-site intercepts are shown.

Sessions without a site (a cart's own registry, never synced) form the
stratum "(this cart)". Every number says n and events; a site too small for a
statistic is reported as unavailable with the reason, never dropped silently.
"""

from __future__ import annotations

import html
import math
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from amrwatch.study.cohort_stats import ReportSettings, design, unavailable, validation
from amrwatch.study.cohort_table import CohortRow

NO_SITE = "(this cart)"


def site_of_sessions(registry) -> dict[str, str]:
    return {s.session_id: (s.site or NO_SITE) for s in registry.list()}


def stratified_auc(y: np.ndarray, p: np.ndarray, strata: np.ndarray) -> tuple[float, int] | None:
    """Concordance over within-stratum (persisted, disappeared) pairs; ties count one half. (auc, pairs)."""
    num, pairs = 0.0, 0
    for s in np.unique(strata):
        m = strata == s
        pos, neg = p[m & (y == 1)], p[m & (y == 0)]
        if len(pos) == 0 or len(neg) == 0:
            continue
        diff = pos[:, None] - neg[None, :]
        num += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        pairs += len(pos) * len(neg)
    return None if pairs == 0 else (num / pairs, pairs)


def site_calibration(y: np.ndarray, p: np.ndarray, strata: np.ndarray) -> dict[str, Any]:
    """Recalibration with and without site intercepts; the LR test of 'same calibration-in-the-large at every site'."""
    import statsmodels.api as sm
    from scipy import stats

    sites = sorted(np.unique(strata).tolist())
    if len(sites) < 2:
        return unavailable("one site only: nothing to compare")
    eps = 1e-9
    lp = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps))
    x0 = sm.add_constant(lp, has_constant="add")
    dummies = np.column_stack([(strata == s).astype(float) for s in sites[1:]])
    x1 = np.column_stack([x0, dummies])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m0 = sm.Logit(y, x0).fit(disp=0, maxiter=100)
            m1 = sm.Logit(y, x1).fit(disp=0, maxiter=100)
        except (np.linalg.LinAlgError, ValueError) as err:
            return unavailable(f"the site-stratified recalibration cannot be fitted on these data ({err})")
    if not (m0.mle_retvals.get("converged") and m1.mle_retvals.get("converged")) \
            or not np.all(np.isfinite(m1.bse)):
        return unavailable("the site-stratified recalibration did not converge (a site has only one kind of "
                           "outcome, or too few patients)")
    lr = float(2 * (m1.llf - m0.llf))
    df = len(sites) - 1
    return {"available": True, "method": "logistic recalibration y ~ logit(p) + site (fixed intercepts); "
                                          "likelihood-ratio test against one common intercept",
            "reference_site": sites[0], "lr_chi2": lr, "df": df, "p_value": float(stats.chi2.sf(lr, df)),
            "slope": float(m1.params[1]),
            "site_intercept_shift": {s: float(m1.params[2 + i]) for i, s in enumerate(sites[1:])}}


def site_analysis(rows: list[CohortRow], sites: dict[str, str], model, s: ReportSettings) -> dict[str, Any]:
    """Everything of the by-site section, JSON-able."""
    by_site: dict[str, list[CohortRow]] = defaultdict(list)
    for r in rows:
        by_site[sites.get(r.session_id, NO_SITE)].append(r)
    out: dict[str, Any] = {"sites": {}, "n_sites": len(by_site)}
    for site, site_rows in sorted(by_site.items()):
        labelled = [r for r in site_rows if r.label is not None]
        entry: dict[str, Any] = {"patients": len(site_rows), "labelled": len(labelled),
                                 "persisted": sum(r.label for r in labelled)}
        entry["validation"] = (validation(site_rows, model, s) if model is not None
                               else unavailable("no model was loaded"))
        out["sites"][site] = entry
    out["pooled"] = validation(rows, model, s) if model is not None else unavailable("no model was loaded")
    if model is None:
        out["stratified"] = unavailable("no model was loaded")
        return out
    usable = [r for r in rows if r.label is not None and r.eligible and r.complete]  # as design() selects them
    X, y, _ = design(rows)
    strata = np.array([sites.get(r.session_id, NO_SITE) for r in usable])
    if len(y) == 0:
        out["stratified"] = unavailable("no labelled patient with all seven factors")
        return out
    p = np.asarray(model.probabilities(X), dtype=float)
    st = stratified_auc(y, p, strata)
    out["stratified"] = {
        "auc_within_site": unavailable("no site has both a persisted and a disappeared AMR")
        if st is None else {"available": True, "value": st[0], "pairs": st[1]},
        "calibration_by_site": site_calibration(y, p, strata),
    }
    return out


def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.{nd}f}"
    return html.escape(str(v))


def html_section(res: dict[str, Any], synthetic_model: bool) -> str:
    """The by-site section of report.html."""
    rows = []
    for site, e in res["sites"].items():
        v = e["validation"]
        auc = (f"{_fmt(v['auc']['value'])} ({_fmt(v['auc']['ci'][0])}–{_fmt(v['auc']['ci'][1])})"
               if v.get("available") else f"unavailable: {html.escape(v.get('reason', ''))}")
        brier = _fmt(v["brier"], 3) if v.get("available") else "—"
        rows.append(f"<tr><td>{html.escape(site)}</td><td>{e['patients']}</td><td>{e['labelled']}</td>"
                    f"<td>{e['persisted']}</td><td>{auc}</td><td>{brier}</td></tr>")
    pooled = res["pooled"]
    pooled_auc = (f"{_fmt(pooled['auc']['value'])} ({_fmt(pooled['auc']['ci'][0])}–{_fmt(pooled['auc']['ci'][1])})"
                  if pooled.get("available") else f"unavailable: {html.escape(pooled.get('reason', ''))}")
    strat = res.get("stratified", {})
    within = strat.get("auc_within_site", {})
    cal = strat.get("calibration_by_site", {})
    lines = [
        "<h2>By site</h2>",
        "<p>The model validated on each site's patients, pooled, and with site as a stratum."
        + (" The model is fitted on a SYNTHETIC cohort: these are checks of the method, not clinical findings."
           if synthetic_model else "") + "</p>",
        "<table><tr><th>site</th><th>patients</th><th>labelled</th><th>persisted</th><th>AUC (95% CI)</th>"
        "<th>Brier</th></tr>", *rows,
        f"<tr><td><b>pooled</b></td><td colspan=3></td><td>{pooled_auc}</td><td>"
        f"{_fmt(pooled['brier'], 3) if pooled.get('available') else '—'}</td></tr></table>",
        "<p>Within-site (stratified) AUC: "
        + (f"{_fmt(within['value'])} over {within['pairs']} within-site pairs" if within.get("available")
           else html.escape(within.get("reason", "unavailable"))) + ".</p>",
        "<p>Calibration by site (" + html.escape(cal.get("method", "")) + "): "
        + (f"LR χ² {_fmt(cal['lr_chi2'])} on {cal['df']} df, p = {_fmt(cal['p_value'], 3)}"
           if cal.get("available") else html.escape(cal.get("reason", "unavailable"))) + ".</p>",
    ]
    return "\n".join(lines)
