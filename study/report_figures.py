"""The report's figures, drawn from the numbers in cohort_stats (never recomputed here).

Matplotlib's object API with the Agg canvas: no pyplot state, no display,
safe in a service or a test. Every figure has the same pixel size (the
settings' inches × dpi, no tight cropping) so a test can check it, and a
synthetic registry is stamped on every figure, since figures travel alone.
"""

from __future__ import annotations

import io
from typing import Any

from amrwatch.study.cohort_stats import COURSES, GROUPS, ReportSettings
from amrwatch.registry.store import TIMEPOINTS

COLOURS = {"persisted": "#c0392b", "disappeared": "#2471a3"}
COURSE_LABELS = {
    "never_detected": "never detected",
    "disappeared_before_decompression": "disappeared before\ndecompression",
    "disappeared_after_decompression": "disappeared after\ndecompression",
    "persisted": "persisted",
}
STAMP = "SYNTHETIC REGISTRY — not patient data"
#: File stem → caption; the report writes FIGURE_DIR/<stem>.png for each figure it could draw.
FIGURE_TITLES = {
    "courses": "AMR course of every patient analysed",
    "model_roc": "ROC curve of the seven-factor logistic model (apparent)",
    "model_calibration": "Calibration of the seven-factor logistic model (apparent)",
    "outcomes": "Persistent spasm at each follow-up point by AMR status",
    "km": "Time to relief of spasm by AMR status (Kaplan–Meier, 95% bands)",
    "validation": "The model on this registry: ROC, and calibration (groups and smoothed curve with its band)",
    "decision_curve": "Decision curve: net benefit of the model against acting on all or none, cut-offs marked",
    "comparison": "Two models on this registry: net benefit across thresholds",
    "ratio_roc": "Final amplitude (% of baseline) as a predictor of persistent spasm at 1 year",
    "ratio_roc_channels": "Final amplitude (% of baseline) per recording site and direction vs persistent spasm "
                          "at 1 year",
}


#: Figures drawn only when asked for (`amrwatch report --compare`).
OPTIONAL_FIGURES = frozenset({"comparison"})


def _figure(s: ReportSettings, synthetic: bool, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=s.figure_size_in, dpi=s.dpi)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    if synthetic:
        fig.text(0.5, 0.985, STAMP, ha="center", va="top", color="#b03a2e", fontsize=8, fontweight="bold")
    return fig, axes


def _png(fig, s: ReportSettings) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=s.dpi, metadata={"Software": None})
    return buf.getvalue()


def courses(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    counts = [result["counts"][c] for c in COURSES]
    n = max(1, result["n_sessions"])
    colours = ["#7f8c8d", "#5dade2", COLOURS["disappeared"], COLOURS["persisted"]]
    bars = ax.barh(range(len(COURSES)), counts, color=colours)
    ax.set_yticks(range(len(COURSES)), [COURSE_LABELS[c] for c in COURSES], fontsize=8)
    ax.invert_yaxis()
    for bar, k in zip(bars, counts):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {k} ({100 * k / n:.0f}%)",
                va="center", fontsize=8)
    ax.set_xlim(0, max(counts + [1]) * 1.25)
    ax.set_xlabel("patients")
    ax.set_title(f"AMR course (n = {result['n_sessions']})", fontsize=10)
    fig.subplots_adjust(left=0.3, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def _roc(ax, roc: dict, auc: dict, label: str, colour: str) -> None:
    lo, hi = auc["ci"]
    ax.plot(roc["fpr"], roc["tpr"], drawstyle="steps-post", color=colour,
            label=f"{label}: AUC {auc['value']:.3f} ({lo:.3f}–{hi:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize=7)


def _calibration(ax, bins: list[dict], colour: str) -> None:
    x = [b["mean_predicted"] for b in bins]
    y = [b["observed"] for b in bins]
    # Wilson bounds at 0 or 1 observed can miss the point by rounding (1e-17); bars are never negative.
    err = [[max(0.0, b["observed"] - b["ci"][0]) for b in bins], [max(0.0, b["ci"][1] - b["observed"]) for b in bins]]
    ax.errorbar(x, y, yerr=err, fmt="o", color=colour, ms=4, capsize=2, label="groups of similar risk (95% CI)")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted probability of persistence")
    ax.set_ylabel("observed proportion persisted")
    ax.legend(loc="upper left", fontsize=7)


def model_roc(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    _roc(ax, result["roc"], result["auc"], "seven-factor model (apparent)", COLOURS["persisted"])
    ax.set_title(f"ROC, multivariable model (n = {result['n']}, {result['events']} persisted)", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def model_calibration(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    _calibration(ax, result["calibration"], COLOURS["persisted"])
    ax.set_title("Calibration, multivariable model (apparent)", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def outcomes(result: list[dict[str, Any]], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    width = 0.38
    for j, g in enumerate(GROUPS):
        xs, ys, lo, hi = [], [], [], []
        for i, entry in enumerate(result):
            grp = entry[g]
            if grp["n"]:
                xs.append(i + (j - 0.5) * width)
                ys.append(100 * grp["rate"])
                lo.append(max(0.0, 100 * (grp["rate"] - grp["ci"][0])))
                hi.append(max(0.0, 100 * (grp["ci"][1] - grp["rate"])))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=COLOURS[g], label=f"AMR {g}")
    ax.set_xticks(range(len(TIMEPOINTS)), list(TIMEPOINTS))
    ax.set_ylim(0, 100)
    ax.set_ylabel("patients with spasm (%)")
    ax.set_xlabel("follow-up")
    ax.set_title("Persistent spasm by AMR status (95% CI)", fontsize=10)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def km(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    last = max(s.follow_up.timepoint_days.values())
    for g in GROUPS:
        c = result["curves"][g]
        if not c["available"]:
            continue
        t = c["time"] + [last]
        v = c["survival"] + [c["survival"][-1]]
        ax.step(t, v, where="post", color=COLOURS[g], label=f"AMR {g} (n = {c['n']}, {c['events']} relieved)")
        ax.fill_between(t, c["ci_low"] + [c["ci_low"][-1]], c["ci_high"] + [c["ci_high"][-1]], step="post",
                        color=COLOURS[g], alpha=0.15, linewidth=0)
        cens = c["censored_times"]
        if cens:
            import numpy as np

            times = np.asarray(c["time"])
            idx = np.searchsorted(times, cens, side="right") - 1
            ax.plot(cens, [c["survival"][i] for i in idx], "|", color=COLOURS[g], ms=7)
    # Day 0 and each follow-up point; a point too close to the previous one (1 week on a 1-year axis) is
    # labelled under it on a second line so the labels do not overlap.
    ticks, labels, prev = [0], ["0"], 0.0
    for tp, d in s.follow_up.timepoint_days.items():
        close = d - prev < 0.06 * last
        ticks.append(d)
        labels.append(("\n" if close else "") + f"{tp}")
        prev = d
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_xlim(0, last * 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time after surgery (days, linear; | censored)")
    ax.set_ylabel("proportion still with spasm")
    ax.set_title("Time to relief by AMR status (Kaplan–Meier)", fontsize=10)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def validation(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (a, b) = _figure(s, synthetic, ncols=2)
    _roc(a, result["roc"], result["auc"], "current model", "#7d3c98")
    a.set_title("ROC on this registry", fontsize=9)
    _calibration(b, result["calibration"], "#7d3c98")
    sc = result.get("smoothed_calibration")
    if sc:
        b.plot(sc["grid"], sc["observed"], color="#117a65", lw=1.2, label="LOWESS")
        b.fill_between(sc["grid"], sc["band_low"], sc["band_high"], color="#117a65", alpha=0.2, linewidth=0)
    b.set_title("Calibration on this registry", fontsize=9)
    for ax in (a, b):
        ax.xaxis.label.set_size(7)
        ax.yaxis.label.set_size(7)
        ax.tick_params(labelsize=7)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.86, bottom=0.14, wspace=0.3)
    return _png(fig, s)


def decision_curve(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    d = result["decision_curve"]
    ax.plot(d["thresholds"], d["model"], color="#7d3c98", label="model")
    ax.plot(d["thresholds"], d["treat_all"], color="#7f8c8d", ls="--", label="act on all")
    ax.plot(d["thresholds"], d["treat_none"], color="#222", lw=0.8, label="act on none")
    for name, c in zip(("low", "high"), result["cutoffs"]):
        ax.axvline(c, color="#b03a2e", ls=":", lw=1)
        ax.text(c, 0.98, f" {name} cut-off", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="#b03a2e")
    top = max(max(d["model"]), max(d["treat_all"]), 0.01)
    ax.set_ylim(-0.05 * top - 0.01, top * 1.1)
    ax.set_xlabel("threshold probability of persistence")
    ax.set_ylabel("net benefit")
    ax.set_title("Decision curve on this registry", fontsize=10)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def ratio_roc(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    _roc(ax, result["roc"], result["auc"], "final % of baseline", "#117a65")
    ax.set_title(f"Final amplitude vs persistent spasm at {result['timepoint']}", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def ratio_roc_channels(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    colours = ("#117a65", "#2e86c1", "#af601a", "#7d3c98", "#c0392b")
    for e, c in zip(result["entries"], colours):
        if e["available"]:
            ax.plot(e["roc"]["fpr"], e["roc"]["tpr"], color=c, lw=1.2,
                    ls="-" if e["kind"] == "site" else "--", label=f"{e['label']} (AUC {e['auc']['value']:.2f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"Per site and direction vs persistent spasm at {result['timepoint']}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)


def comparison(result: dict[str, Any], s: ReportSettings, synthetic: bool) -> bytes:
    fig, (ax,) = _figure(s, synthetic)
    colours = ("#7d3c98", "#117a65")
    for m, c, name in zip(result["models"], colours, ("model", "compared")):
        nb = m["net_benefit"]
        ax.plot(nb["thresholds"], nb["model"], color=c, label=f"{name} {m['model_sha256'][:8]}")
    nb = result["models"][0]["net_benefit"]
    ax.plot(nb["thresholds"], nb["treat_all"], color="#7f8c8d", ls="--", label="act on all")
    ax.axhline(0, color="#222", lw=0.8)
    top = max(max(m["net_benefit"]["model"]) for m in result["models"])
    ax.set_ylim(-0.05 * max(top, 0.01) - 0.01, max(top, 0.01) * 1.1)
    ax.set_xlabel("threshold probability of persistence")
    ax.set_ylabel("net benefit")
    ax.set_title("Net benefit of the two models", fontsize=10)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.13)
    return _png(fig, s)
