"""The report as one self-contained HTML page: tables, sentences, figures inlined as PNG.

Why self-contained: the page is mailed, archived and opened on machines with
no network; an external stylesheet or image is a broken report later. Every
number passes through `num`/`pval`, which refuse NaN and infinity, so a
value that could not be computed can only appear as the sentence saying why.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from amrwatch.services.predictor.features import FEATURES
from amrwatch.registry.store import OUTCOME_CLASSES, TIMEPOINTS
from amrwatch.study.report_figures import FIGURE_TITLES

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#b03a2e;color:#fff;padding:.8em 1em;font-weight:bold;font-size:1.1em;border-radius:4px}
.warn{background:#fdf2e9;border-left:4px solid #e67e22;padding:.5em .8em}
.na{color:#7b241c;font-style:italic}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(x: float, digits: int = 2) -> str:
    """A finite number with fixed decimals; anything else is a bug upstream, not a cell to print."""
    if x is None or isinstance(x, bool) or not math.isfinite(float(x)):
        raise ValueError(f"refusing to print a non-finite number ({x!r}) in the report")
    return f"{float(x):.{digits}f}"


def pct(x: float, digits: int = 1) -> str:
    return num(100.0 * x, digits) + "%"


def pval(p: float) -> str:
    if p is None or not math.isfinite(p):
        raise ValueError(f"refusing to print a non-finite p-value ({p!r}) in the report")
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """'= 0.012' or '&lt; 0.001', to follow a 'p' in a sentence."""
    text = pval(p)
    return text if text.startswith("&lt;") else f"= {text}"


def ci(pair: list[float], digits: int = 2, as_pct: bool = False) -> str:
    f = (lambda v: pct(v)) if as_pct else (lambda v: num(v, digits))
    return f"{f(pair[0])}–{f(pair[1])}"


def na(result: dict[str, Any]) -> str:
    return f'<p class="na">Not computed: {esc(result["reason"])}</p>'


def figure(name: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{esc(FIGURE_TITLES[name])}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(FIGURE_TITLES[name])}</figcaption></figure>")


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """Columns in `numeric` (default: all but the first) are right-aligned."""
    numeric = set(range(1, len(head))) if numeric is None else numeric
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>")
    return "\n".join(out) + "</table>"


# --------------------------------------------------------------------------- #


def data_section(meta: dict[str, Any]) -> str:
    parts = ["<h2>1. Data</h2>"]
    if meta["synthetic"]:
        parts.append('<p class="warn"><b>This registry is synthetic.</b> Its sessions were written by '
                     "<code>amrwatch registry synthetic</code>; no patient was operated on, and every figure below "
                     "illustrates the method, not a clinical result. The generator's assumptions:</p><ul>"
                     + "".join(f"<li>{esc(a)}</li>" for a in meta["synthetic_assumptions"]) + "</ul>")
    parts.append(f"<p>Registry sessions: {meta['sessions_in_registry']}; patients analysed: {meta['patients']} "
                 f"(one operation per patient, closed sessions with a classified AMR course, no replays).</p>")
    if meta["excluded"]:
        parts.append("<p>Sessions not analysed:</p>" + _table(
            ["reason", "sessions"], [[esc(k), str(v)] for k, v in meta["excluded"].items()]))
    if meta["from_archive"]:
        parts.append(f"<p>{meta['from_archive']} session summaries were re-derived from the archive "
                     "(no summary row was stored).</p>")
    fu = meta["follow_up"]
    parts.append("<p>Follow-up recorded:</p>" + _table(
        ["time point", "patients with an outcome", "of patients analysed"],
        [[tp, str(fu[tp]), pct(fu[tp] / meta["patients"]) if meta["patients"] else "—"] for tp in TIMEPOINTS]))
    missing = {k: v for k, v in meta["missing_factors"].items() if v}
    if missing:
        parts.append("<p>Labelled patients missing a factor (left out of the multivariable model and of that "
                     "factor's comparison): " + ", ".join(f"{esc(k)} {v}" for k, v in missing.items()) + ".</p>")
    if meta["relief_by_visit"]:
        parts.append(f"<p>{meta['relief_by_visit']} relief times have no spasm-free date and are dated by the first "
                     "follow-up visit without spasm (an upper bound).</p>")
    return "\n".join(parts)


def course_section(res: dict[str, Any], png: bytes | None) -> str:
    parts = ["<h2>2. AMR disappearance and course</h2>"]
    d = res["disappearance"]
    if d["available"]:
        parts.append(f"<p>The AMR disappeared during MVD in <b>{d['disappeared']} of {d['n']}</b> patients in whom it "
                     f"was detected: <b>{pct(d['rate'])}</b> ({num(100 * d['ci_level'], 0)}% CI "
                     f"{ci(d['ci'], as_pct=True)}, Wilson); it persisted in {d['persisted']}.</p>")
        if "early_share" in d:
            e = d["early_share"]
            parts.append(f"<p>Of the disappearances, {e['k']} ({pct(e['rate'])}, CI {ci(e['ci'], as_pct=True)}) happened "
                         "before decompression, when the AMR can no longer confirm it.</p>")
    else:
        parts.append(na(d))
    n = res["n_sessions"]
    parts.append(_table(["course", "patients", "%"],
                        [[esc(c.replace("_", " ")), str(k), pct(k / n) if n else "—"] for c, k in res["counts"].items()]))
    parts.append(figure("courses", png))
    return "\n".join(parts)


def _desc(d: dict[str, Any], kind: str) -> str:
    if d["n"] == 0:
        return "no values"
    if kind == "bool":
        return f"{d['yes']}/{d['n']} ({num(d['percent'], 1)}%)"
    digits = 0 if d.get("ordinal") else 2
    return f"{num(d['median'], digits)} [{num(d['q1'], digits)}–{num(d['q3'], digits)}] (n={d['n']})"


def factor_section(res: list[dict[str, Any]]) -> str:
    rows = []
    for f in res:
        t = f["test"]
        test = (esc(t["test"]), pval(t["p_value"])) if t["available"] else (f'<span class="na">{esc(t["reason"])}</span>', "—")
        rows.append([f"{esc(f['label'])} ({esc(f['unit'])})", _desc(f["persisted"], f["kind"]),
                     _desc(f["disappeared"], f["kind"]), test[0], test[1]])
    return ("<h2>3. The seven factors, persisted vs disappeared</h2>"
            "<p>Continuous and ordinal factors: median [IQR] (ordinal ones as values of their scale), compared by "
            "the Mann–Whitney U test chosen in advance; carbamazepine n/N (%).</p>"
            + _table(["factor", "AMR persisted", "AMR disappeared", "test", "p"], rows, numeric={1, 2, 4}))


def model_section(res: dict[str, Any], roc_png: bytes | None, cal_png: bytes | None) -> str:
    parts = ["<h2>4. Multivariable logistic model of persistence</h2>"]
    if not res["available"]:
        parts.append(na(res))
        return "\n".join(parts)
    parts.append(f"<p>n = {res['n']} patients with all seven factors, {res['events']} persisted "
                 f"({num(res['events_per_variable'], 1)} events per variable).</p>")
    if res["events_per_variable"] < 10:
        parts.append('<p class="warn">Fewer than 10 events per variable: odds ratios are imprecise and the '
                     "apparent AUC is optimistic; the optimism-corrected figure is the one to quote.</p>")
    rows = [[f"{esc(o['label'])} ({esc(o['per_label'])})", num(o["odds_ratio"], 3), ci(o["ci"], 3), pval(o["p_value"])]
            for o in res["odds_ratios"]]
    parts.append(_table(["factor", "odds ratio", "95% CI (Wald)", "p"], rows))
    a = res["auc"]
    text = f"<p>AUC (apparent) <b>{num(a['value'], 3)}</b> (95% CI {ci(a['ci'], 3)}, DeLong)"
    if "corrected" in a:
        text += (f"; optimism-corrected <b>{num(a['corrected'], 3)}</b> (Harrell's bootstrap, "
                 f"{a['resamples']} resamples, optimism {num(a['optimism'], 3)})")
    parts.append(text + ".</p>")
    parts.append(figure("model_roc", roc_png))
    parts.append(figure("model_calibration", cal_png))
    return "\n".join(parts)


def outcome_section(res: list[dict[str, Any]], ttr: dict[str, Any], out_png: bytes | None,
                    km_png: bytes | None) -> str:
    parts = ["<h2>5. Outcome by AMR status</h2>",
             "<p>Persistent spasm = Cohen grade above 0 at the follow-up point.</p>"]
    rows = []
    for e in res:
        cells = [e["timepoint"]]
        for g in ("persisted", "disappeared"):
            grp = e[g]
            cells.append(f"{grp['spasm']}/{grp['n']} ({pct(grp['rate'])}; {ci(grp['ci'], as_pct=True)})"
                         if grp["n"] else "no follow-up")
        t = e["test"]
        cells += ([esc(t["test"]), pval(t["p_value"])] if t["available"]
                  else [f'<span class="na">{esc(t["reason"])}</span>', "—"])
        rows.append(cells)
    parts.append(_table(["follow-up", "spasm, AMR persisted", "spasm, AMR disappeared", "test", "p"], rows,
                        numeric={1, 2, 4}))
    cls_rows = []
    for e in res:
        for g in ("persisted", "disappeared"):
            if e[g]["n"]:
                cls_rows.append([e["timepoint"], g] + [str(e[g]["classes"][c]) for c in OUTCOME_CLASSES])
    if cls_rows:
        parts.append("<p>Outcome class by AMR status:</p>"
                     + _table(["follow-up", "AMR", *OUTCOME_CLASSES], cls_rows, numeric={2, 3, 4, 5}))
    parts.append(figure("outcomes", out_png))
    parts.append("<h3>Time to relief</h3>")
    rows = []
    for g in ("persisted", "disappeared"):
        c = ttr["curves"][g]
        if not c["available"]:
            rows.append([g, f'<span class="na">{esc(c["reason"])}</span>', "", *["" for _ in TIMEPOINTS]])
            continue
        med = "not reached" if c["median_days"] is None else f"{num(c['median_days'], 0)} days"
        rows.append([g, f"{c['n']} ({c['events']} relieved)", med] + [pct(c["relieved_by"][tp]) for tp in TIMEPOINTS])
    parts.append(_table(["AMR", "patients", "median time to relief",
                         *[f"relieved by {tp}" for tp in TIMEPOINTS]], rows, numeric={2, 3, 4, 5, 6}))
    lr = ttr["logrank"]
    parts.append(f"<p>Log-rank test: χ² = {num(lr['statistic'], 2)}, p {p_is(lr['p_value'])}. "
                 f"{esc(ttr['censoring'].capitalize())}.</p>" if lr["available"] else na(lr))
    if ttr.get("interval_censored"):
        parts.append(f'<p class="warn">{esc(ttr["interval_censoring"])}.</p>')
    parts.append(figure("km", km_png))
    risk_rows = [[g, *[str(ttr["curves"][g]["at_risk"][k]) for k in ("0", *TIMEPOINTS)]]
                 for g in ("persisted", "disappeared") if ttr["curves"][g]["available"]]
    if risk_rows:
        parts.append("<p>Numbers at risk (still followed and still in spasm):</p>"
                     + _table(["AMR", "day 0", *TIMEPOINTS], risk_rows))
    return "\n".join(parts)


def followup_recording_section(res: list[dict[str, Any]] | None) -> str:
    """Issue #17: the AMR in a postoperative recording linked to the operation, beside the intraoperative course
    of the same patients, each against spasm at the outcome point."""
    parts = ["<h3>Follow-up AMR recordings</h3>"]
    if not res:
        parts.append('<p class="na">No postoperative AMR recording is linked to an operation '
                     "(<code>amrwatch outcome link-recording</code>).</p>")
        return "\n".join(parts)
    parts.append("<p>AMR present = its course persisted through the linked postoperative recording. Rows: AMR "
                 "present / absent; columns: spasm / no spasm at the outcome point. Fisher's exact test.</p>")
    rows = []
    for e in res:
        for label, key in (("postoperative recording", "postoperative"), ("intraoperative course", "intraoperative")):
            t = e[key]["table"]
            test = e[key]["test"]
            rows.append([f"{e['timepoint']} ({e['n']} of {e['n_linked']} with a {e['outcome_timepoint']} outcome)",
                         label, str(t[0][0]), str(t[0][1]), str(t[1][0]), str(t[1][1]),
                         (f"{esc(test['test'])}, p {p_is(test['p_value'])}" if test["available"]
                          else f'<span class="na">{esc(test["reason"])}</span>')])
    parts.append(_table(["recording", "AMR from", "present: spasm", "present: no spasm", "absent: spasm",
                         "absent: no spasm", "test"], rows, numeric={2, 3, 4, 5}))
    return "\n".join(parts)


def validation_section(res: dict[str, Any], png: bytes | None, dca_png: bytes | None = None) -> str:
    parts = ["<h2>6. Validation of the model on your registry</h2>"]
    if "model_sha256" in res:
        who = "the shipped synthetic model" if res["synthetic"] else "a model trained on an institution's registry"
        parts.append(f"<p>Model <code>{esc(res['model_sha256'][:16])}…</code> ({esc(who)}"
                     + (f"; <b>{esc(res['notice'])}</b>" if res.get("notice") else "")
                     + f"), cut-offs low {num(res['cutoffs'][0], 3)} / high {num(res['cutoffs'][1], 3)}. "
                     f"{res['same_model_in_or']} of the analysed operations were predicted by this same model in the "
                     "operating room.</p>")
        if res["trained_on_this_export"]:
            parts.append('<p class="warn">This model was trained on exactly this registry\'s export: the figures '
                         "below are its apparent performance, not a validation.</p>")
        elif res["trained_on"] == "csv":
            parts.append('<p class="warn">This model was trained on an exported registry that differs from the '
                         "current export. If that export came from this registry (before later changes), the "
                         "patients overlap and the figures below are closer to apparent performance than to an "
                         "external validation.</p>")
        else:
            parts.append("<p>The model was fitted on a synthetic cohort, not on these patients, so this is an "
                         "external validation.</p>")
    if not res["available"]:
        parts.append(na(res))
        return "\n".join(parts)
    a = res["auc"]
    parts.append(f"<p>n = {res['n']} ({res['events']} persisted). AUC <b>{num(a['value'], 3)}</b> "
                 f"(95% CI {ci(a['ci'], 3)}, DeLong); Brier score {num(res['brier'], 3)}; sensitivity for "
                 f"persistence at the low cut-off {pct(res['sensitivity_at_low'])}, specificity at the high cut-off "
                 f"{pct(res['specificity_at_high'])}.</p>")
    cf = res["calibration_fit"]
    parts.append(f"<p>Calibration intercept {num(cf['intercept'], 3)}, slope {num(cf['slope'], 3)} (ideal 0 and 1).</p>"
                 if cf.get("available", True) else na(cf))
    parts.append(_table(["band", "patients", "AMR persisted"],
                        [[b, str(v["n"]), str(v["persisted"])] for b, v in res["bands"].items()]))
    for f in res.get("below_card", []):
        parts.append(f'<p class="warn"><b>Below the card\'s claim:</b> {esc(f["measure"].replace("_", " "))} is '
                     f'{num(f["observed"], 3)} here, under the interval the model card gives ({num(f["card_estimate"], 3)}, '
                     f'{ci(f["card_ci"], 3)}). The model performs worse on this registry than its internal validation '
                     "promised: recalibrate (<code>amrwatch train --recalibrate</code>) or retrain before relying on it.</p>")
    parts.append(f'<p class="warn"><b>Treatment effect.</b> {esc(res["treatment_effect"])}.</p>')
    parts.append(figure("validation", png))
    parts.append(figure("decision_curve", dca_png))
    obb = res.get("outcomes_by_band")
    if obb:
        rows = []
        for key, title in (("by_decision", "decision implied"), ("by_band", "band")):
            for lev, entry in obb[key].items():
                cells = [f"{title}: {esc(lev.replace('_', ' '))}"]
                for tp in TIMEPOINTS:
                    e = entry[tp]
                    cells.append(f"{e['spasm']}/{e['n']} ({pct(e['rate'])})" if e["n"] else "—")
                rows.append(cells)
        parts.append("<p>Persistent spasm at each follow-up point by the band predicted in the operating room and by "
                     f"the decision it implied (eligible patients; {esc(obb['note'])}):</p>"
                     + _table(["group", *TIMEPOINTS], rows))
    return "\n".join(parts)


def comparison_section(res: dict[str, Any] | None, png: bytes | None) -> str:
    if res is None:
        return ""
    parts = ["<h3>Two models on this registry</h3>"]
    if not res["available"]:
        return "\n".join(parts) + na(res)
    d = res["delong"]
    rows = []
    for m, name in zip(res["models"], ("model", "compared")):
        c = m["calibration"]
        nb = m["net_benefit_at_cutoffs"]
        rows.append([f"{name} <code>{esc(m['model_sha256'][:16])}</code>" + (" (synthetic)" if m["synthetic"] else ""),
                     num(d["auc_1"] if name == "model" else d["auc_2"], 3), num(c["intercept"], 3), num(c["slope"], 3),
                     num(m["brier"], 3), f"{num(nb['low'], 4)} / {num(nb['high'], 4)}"])
    parts.append(f"<p>Same {res['n']} eligible patients ({res['events']} persisted).</p>" + _table(
        ["model", "AUC", "calibration intercept", "calibration slope", "Brier", "net benefit at low / high cut-off"], rows))
    parts.append(f"<p>Difference in AUC {num(d['difference'], 3)} (SE {num(d['se'], 3)}), DeLong's test for correlated "
                 f"AUCs: z = {num(d['z'], 2)}, p {p_is(d['p_value'])}.</p>")
    parts.append(figure("comparison", png))
    return "\n".join(parts)


def ratio_section(res: dict[str, Any], png: bytes | None, channels_png: bytes | None = None) -> str:
    parts = ["<h3>The final/baseline amplitude as a predictor of persistent spasm</h3>"]
    if not res["available"]:
        parts.append(na(res))
    else:
        a = res["auc"]
        parts.append(f"<p>Final amplitude (percent of baseline, the session's largest channel) against persistent "
                     f"spasm at {res['timepoint']} (n = {res['n']}, {res['events']} with spasm): AUC "
                     f"<b>{num(a['value'], 3)}</b> (95% CI {ci(a['ci'], 3)}, DeLong). Best threshold (Youden) "
                     f"<b>{num(res['best_threshold_pct'], 1)}%</b> of baseline (95% CI {ci(res['best_threshold_ci'], 1)}%, "
                     f"bootstrap): sensitivity {pct(res['at_best']['sensitivity'])}, specificity "
                     f"{pct(res['at_best']['specificity'])}. The Pan et al. cut (final ≤ {num(res['criterion_pct'], 1)}%) "
                     f"read this way: sensitivity {pct(res['at_criterion']['sensitivity'])}, specificity "
                     f"{pct(res['at_criterion']['specificity'])} for spasm.</p>")
        parts.append(figure("ratio_roc", png))
    if "per_channel" in res:
        parts.append(ratio_channel_table(res["per_channel"]))
        parts.append(figure("ratio_roc_channels", channels_png))
    if "pan" in res:
        parts.append(pan_table(res["pan"]))
    return "\n".join(parts)


def ratio_channel_table(pc: dict[str, Any]) -> str:
    """Per recording site and per stimulation direction: n, events, AUC, Youden threshold and its CI."""
    parts = [f"<h4>Per recording site and per stimulation direction (persistent spasm at {esc(pc['timepoint'])})</h4>",
             "<p>Each channel's final amplitude as a percent of its own baseline, by the muscle the montage says it "
             "records and the direction stimulated; a direction's figure is its largest channel's. Pan et al. "
             "graded the ratio per muscle and found the mentalis the most useful.</p>"]
    rows = []
    for e in pc["entries"]:
        head = [f"{esc(e['label'])} <code>{esc(e['column'])}</code>", str(e["n"]), str(e["events"])]
        if e["available"]:
            rows.append(head + [f"{num(e['auc']['value'], 3)} ({ci(e['auc']['ci'], 3)})",
                                f"{num(e['best_threshold_pct'], 1)}% ({ci(e['best_threshold_ci'], 1)}%)",
                                pct(e["at_best"]["sensitivity"]), pct(e["at_best"]["specificity"])])
        else:
            rows.append(head + [f'<span class="na">{esc(e["reason"])}</span>', "", "", ""])
    parts.append(_table(["site / direction", "n", "with spasm", "AUC (95% CI, DeLong)",
                         "best threshold (95% CI, bootstrap)", "sensitivity", "specificity"], rows))
    return "\n".join(parts)


def pan_table(pan: dict[str, Any]) -> str:
    parts = [f"<h4>The Pan et al. criterion reproduced</h4><p>Source: {esc(pan['source'])}. Applied here as a fixed "
             f"cut, not re-fitted: a reduction of at least {num(pan['reduction_pct'], 1)}% (final ≤ "
             f"{num(pan['final_at_most_pct'], 1)}% of baseline) at {esc(pan['label'])} (<code>{esc(pan['column'])}</code>) "
             f"predicting {esc(pan['outcome'])} ({esc(pan['timepoint'])}). The cut, the site and the follow-up point "
             "are report settings.</p>"]
    if not pan["available"]:
        return "\n".join(parts) + na(pan)
    t = pan["table"]
    parts.append(_table(["", "resolved", "spasm remains"],
                        [["criterion met", str(t["met_resolved"]), str(t["met_spasm"])],
                         ["criterion not met", str(t["not_met_resolved"]), str(t["not_met_spasm"])]]))
    rows = []
    for key, name in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"),
                      ("npv", "NPV")):
        p_ = pan[key]
        if p_["available"]:
            rows.append([name, f"{p_['k']}/{p_['n']}", pct(p_["value"]), ci(p_["ci"], as_pct=True)])
        else:
            rows.append([name, f"{p_['k']}/{p_['n']}", f'<span class="na">{esc(p_["reason"])}</span>', ""])
    parts.append(_table(["measure", "k/n", "estimate", f"{num(100 * pan['ci_level'], 0)}% CI ({esc(pan['ci_method'])})"],
                        rows))
    return "\n".join(parts)


def _est(d: dict[str, Any], digits: int = 3) -> str:
    return f"{num(d['estimate'], digits)} ({ci(d['ci'], digits)})"


def card_section(card: dict[str, Any] | None) -> str:
    """The model card as a page: the TRIPOD items a reader checks before trusting a prediction."""
    parts = ["<h2>7. The model card (TRIPOD items)</h2>"]
    if not card:
        parts.append('<p class="na">No model card could be read.</p>')
        return "\n".join(parts)
    if card.get("synthetic"):
        parts.append(f'<p class="warn"><b>{esc(card.get("notice"))}</b>: the model was fitted on a synthetic cohort; '
                     "its figures show the method works, not that the model is clinically valid.</p>")
    parts.append(f"<p>{esc(card.get('model', ''))}. Model file SHA-256 <code>{esc(card['model_sha256'])}</code>.</p>")
    tri = card.get("tripod")
    pop = card.get("population")
    if pop:
        a, e = pop["all_detected"], pop["eligible"]
        parts.append("<h3>Populations</h3>" + _table(
            ["population", "patients", "AMR persisted", "persistence"],
            [["every detected AMR", str(a["n"]), str(a["persisted"]), pct(a["persistence"])],
             ["eligible: AMR present at the start of decompression (the model's)", str(e["n"]), str(e["persisted"]),
              pct(e["persistence"])]])
            + f"<p>{esc(pop['eligibility'])}. {pop['disappeared_before_decompression_excluded']} early disappearances "
              f"and {pop['never_detected_excluded']} never-detected AMRs were excluded.</p>")
    if not tri:
        parts.append('<p class="na">This card predates the TRIPOD items (card version 1); retrain to get them.</p>')
        return "\n".join(parts)
    o = tri["outcome_6a"]
    parts.append("<h3>Outcome (item 6a)</h3>" + _table(["", ""], [[esc(k.replace("_", " ")), esc(v)] for k, v in o.items()
                                                                   if isinstance(v, str)], numeric=set()))
    parts.append("<h3>Predictors: how and when measured (item 7a)</h3>" + _table(
        ["factor", "when", "how", "source"],
        [[esc(p["name"]), esc(p["when"]), esc(p["how"]), esc(p["source"])] for p in tri["predictors_7a"]], numeric=set()))
    ss = tri["sample_size_8"]
    parts.append(f"<h3>Sample size (item 8)</h3><p>{card['n']} patients, {card['events']} events, "
                 f"{num(card['events_per_variable'], 1)} events per variable. {esc(ss['rationale'])}.</p>")
    parts.append(f"<h3>Missing data (item 9)</h3><p>{esc(tri['missing_data_9'])}.</p>")
    sh = card.get("shrinkage", {})
    parts.append(f"<h3>Model building (item 10b)</h3><p>{esc(sh.get('method', ''))}; shrinkage factor "
                 f"<b>{num(sh.get('factor', 1.0), 3)}</b>. Why: {esc(sh.get('reason', ''))}. {esc(sh.get('separation', ''))}.</p>")
    perf = card["performance"]
    oc = perf.get("optimism_corrected", {})
    names = {"auc": "AUC", "brier": "Brier score", "calibration_intercept": "calibration intercept",
             "calibration_slope": "calibration slope", "sensitivity_at_low": "sensitivity at the low cut-off",
             "specificity_at_high": "specificity at the high cut-off"}
    parts.append("<h3>Performance, internally validated (items 10b, 16)</h3>" + _table(
        ["measure", "apparent", "optimism", "optimism-corrected (95% interval)"],
        [[names.get(k, k), num(d["apparent"], 3), num(d["optimism"], 3), _est(d)] for k, d in oc.items()])
        + f"<p>{esc(perf.get('validation', ''))}. {esc(perf.get('interval_method', ''))}.</p>")
    parts.append("<h3>Limitations (item 19a)</h3><ul>" + "".join(f"<li>{esc(x)}</li>" for x in tri["limitations_19a"])
                 + "</ul>")
    return "\n".join(parts)


def methods_section(meta: dict[str, Any]) -> str:
    features = ", ".join(f"{f.label} ({f.unit})" for f in FEATURES)
    return (
        "<h2>8. Methods</h2><ul>"
        "<li>Proportions: Wilson score 95% intervals.</li>"
        "<li>Continuous and ordinal factors: the two-sided Mann–Whitney U test, chosen before seeing the data (the "
        "continuous factors are skewed); no normality pre-test, because choosing the test by a preliminary test "
        "changes its error rate.</li>"
        "<li>Final/baseline amplitude: ROC AUC with DeLong's interval; the best threshold by Youden's J with a "
        "percentile bootstrap interval; per recording site and direction only with at least "
        f"{num(meta['settings']['ratio_min_events'], 0)} patients with and without the outcome; the Pan et al. "
        "criterion as a fixed cut with Wilson intervals, a proportion with a smaller denominator 'not "
        "estimable'.</li>"
        "<li>Follow-up AMR recordings: Fisher's exact test (two-sided) whatever the counts, these subgroups "
        "being small.</li>"
        "<li>Binary factors and outcome tables: Pearson's chi-square with Yates' correction if every expected count "
        f"is at least {num(meta['settings']['min_expected_count'], 0)}, else Fisher's exact test.</li>"
        f"<li>Multivariable model: unpenalised logistic regression on {esc(features)} (statsmodels); "
        "Wald intervals; AUC with DeLong's interval; optimism by Harrell's bootstrap using the same model as "
        "<code>amrwatch train</code>.</li>"
        "<li>Decision curve: net benefit (Vickers &amp; Elkin) of acting on p ≥ t vs acting on all or none. "
        "Calibration curve: LOWESS with a bootstrap band.</li>"
        "<li>Time to relief: Kaplan–Meier (statsmodels) with pointwise log-log 95% bands (Greenwood), numbers at "
        "risk, linear time axis; log-rank test; relief without a date is interval-censored and analysed at the "
        "visit that found it (stated in section 5); no relief = censored at the last "
        "follow-up point; follow-up points at " + ", ".join(
            f"{tp} = day {d}" for tp, d in meta["settings"]["follow_up"]["timepoint_days"].items()) + ".</li>"
        f"<li>Software: {esc(', '.join(f'{k} {v}' for k, v in meta['software'].items()))}.</li></ul>"
    )


def render(results: dict[str, Any], meta: dict[str, Any], pngs: dict[str, bytes | None]) -> str:
    title = "amrwatch cohort report" + (" — SYNTHETIC REGISTRY" if meta["synthetic"] else "")
    banner = ('<p class="banner">SYNTHETIC REGISTRY — not patient data. Nothing in this report is a clinical '
              "finding.</p>" if meta["synthetic"] else "")
    body = "\n".join([
        f"<h1>{esc(title)}</h1>", banner,
        f"<p>Generated {esc(meta['generated_at'])} by amrwatch {esc(meta['version'])} from the registry in "
        f"<code>{esc(meta['data_dir_name'])}</code>.</p>",
        data_section(meta),
        course_section(results["courses"], pngs.get("courses")),
        factor_section(results["factors"]),
        model_section(results["multivariable"], pngs.get("model_roc"), pngs.get("model_calibration")),
        outcome_section(results["outcomes"], results["time_to_relief"], pngs.get("outcomes"), pngs.get("km")),
        followup_recording_section(results.get("followup_recordings")),
        ratio_section(results["ratio"], pngs.get("ratio_roc"), pngs.get("ratio_roc_channels"))
        if "ratio" in results else "",
        validation_section(results["validation"], pngs.get("validation"), pngs.get("decision_curve")),
        comparison_section(results.get("comparison"), pngs.get("comparison")),
        card_section(results.get("model_card")),
        methods_section(meta),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
