"""`amrwatch report`: the registry's cohort analysed the way the 2025 study was.

Writes into OUT_DIR: `report.html` (self-contained, figures inlined),
`report.json` (every number in the page, for tests and for anyone who wants
to re-plot), and `figures/<name>.png` (the same figures as files). Only
clinical values and counts leave the registry — no session id, token or date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata as md
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amrwatch.services.predictor.features import FEATURE_NAMES
from amrwatch.study import report_figures as figs
from amrwatch.study.cohort_stats import ReportSettings, analyse, unavailable
from amrwatch.study.cohort_table import Cohort, build_cohort, csv_text
from amrwatch.registry.store import TIMEPOINTS, Registry
from amrwatch.study.report_html import render
from amrwatch.study.synthetic_registry import describe as describe_synthetic

HTML_FILE = "report.html"
JSON_FILE = "report.json"
FIGURE_DIR = "figures"


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    json: Path
    figures: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    synthetic: bool = False
    patients: int = 0


def load_model(model_dir: str | Path | None):
    """(model, None) or (None, reason): a model that fails its checks is reported, not fatal to the report."""
    from amrwatch.services.predictor.model import DEFAULT_CARD, DEFAULT_MODEL, LoadedModel, ModelInvalid

    try:
        if model_dir:
            d = Path(model_dir)
            return LoadedModel.load(d / "model.onnx", d / "model_card.json"), None
        return LoadedModel.load(DEFAULT_MODEL, DEFAULT_CARD), None
    except ModelInvalid as err:
        return None, f"the model could not be loaded: {err}"


def _meta(cohort: Cohort, n_sessions: int, data_dir: Path, settings: ReportSettings, now: dt.datetime) -> dict:
    labelled = cohort.labelled()
    reasons: dict[str, int] = {}
    for _, why in cohort.excluded:
        key = why.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    try:
        version = md.version("amrwatch")
    except md.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "unknown"
    return {
        "generated_at": now.strftime("%Y-%m-%d %H:%M UTC"),
        "version": version,
        "data_dir_name": Path(data_dir).name,
        "synthetic": cohort.synthetic,
        "synthetic_assumptions": describe_synthetic(cohort.synthetic_settings) if cohort.synthetic else [],
        "sessions_in_registry": n_sessions,
        "patients": len(cohort.rows),
        "labelled": len(labelled),
        "excluded": reasons,
        "from_archive": cohort.from_archive,
        "follow_up": {tp: sum(1 for r in cohort.rows if r.grades[tp] is not None) for tp in TIMEPOINTS},
        "missing_factors": {n: sum(1 for r in labelled if r.factors[n] is None) for n in FEATURE_NAMES},
        "relief_by_visit": sum(1 for r in cohort.rows if r.relief_dated_by == "first_cured_followup"),
        "settings": {**asdict(settings), "follow_up": {"timepoint_days": dict(settings.follow_up.timepoint_days)}},
        "software": {p: md.version(p) for p in ("numpy", "scipy", "statsmodels", "scikit-learn", "matplotlib")},
    }


def _figures(results: dict[str, Any], s: ReportSettings, synthetic: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if results["courses"]["n_sessions"]:
        out["courses"] = figs.courses(results["courses"], s, synthetic)
    mv = results["multivariable"]
    if mv["available"]:
        out["model_roc"] = figs.model_roc(mv, s, synthetic)
        out["model_calibration"] = figs.model_calibration(mv, s, synthetic)
    if any(e[g]["n"] for e in results["outcomes"] for g in ("persisted", "disappeared")):
        out["outcomes"] = figs.outcomes(results["outcomes"], s, synthetic)
    if any(c["available"] for c in results["time_to_relief"]["curves"].values()):
        out["km"] = figs.km(results["time_to_relief"], s, synthetic)
    if results["validation"]["available"]:
        out["validation"] = figs.validation(results["validation"], s, synthetic)
        out["decision_curve"] = figs.decision_curve(results["validation"], s, synthetic)
    if results.get("comparison", {}).get("available"):
        out["comparison"] = figs.comparison(results["comparison"], s, synthetic)
    if results.get("ratio", {}).get("available"):
        out["ratio_roc"] = figs.ratio_roc(results["ratio"], s, synthetic)
    if results.get("ratio", {}).get("per_channel", {}).get("available"):
        out["ratio_roc_channels"] = figs.ratio_roc_channels(results["ratio"]["per_channel"], s, synthetic)
    return out


def make_report(data_dir: Path, out_dir: Path, *, model_dir: str | Path | None = None,
                settings: ReportSettings | None = None, now: dt.datetime | None = None,
                compare_dir: str | Path | None = None, registry: str | None = None) -> ReportResult:
    """Analyse DATA_DIR's registry (or `registry`, a URL, with DATA_DIR the archive root beside it) and write
    the report files into OUT_DIR. A registry with sessions from more than one site gets the by-site section
    (study/sites.py)."""
    from amrwatch.study import sites as by_site

    t0 = time.perf_counter()
    settings = settings or ReportSettings()
    now = now or dt.datetime.now(dt.UTC)
    with Registry.open(registry, Path(data_dir)) as reg:
        n_sessions = len(reg.list())
        cohort = build_cohort(reg, Path(data_dir), settings.follow_up)
        site_map = by_site.site_of_sessions(reg)
    export_sha = hashlib.sha256(csv_text(cohort).encode("utf-8")).hexdigest()
    model, why = load_model(model_dir)
    results = analyse(cohort.rows, settings, model, export_sha)
    if model is None:
        results["validation"] = unavailable(why)
    else:
        card = json.loads(Path(model.card_path).read_text(encoding="utf-8"))
        card.get("training_data", {}).pop("skipped", None)  # names sessions; the report names none
        results["model_card"] = card
    if compare_dir is not None:
        other, why_other = load_model(compare_dir)
        if model is None or other is None:
            results["comparison"] = unavailable(why or why_other)
        else:
            from amrwatch.study.cohort_stats import compare_models

            results["comparison"] = compare_models(cohort.rows, model, other, settings)
    if len(set(site_map.values())) > 1:
        results["sites"] = by_site.site_analysis(cohort.rows, site_map, model, settings)
    meta = _meta(cohort, n_sessions, Path(data_dir), settings, now)
    pngs = _figures(results, settings, cohort.synthetic)
    page = render(results, meta, pngs)
    if "sites" in results:
        section = by_site.html_section(results["sites"], bool(model is None or model.synthetic))
        page = page.replace("</body>", section + "\n</body>", 1)

    out = Path(out_dir)
    (out / FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in pngs.items():
        paths[name] = out / FIGURE_DIR / f"{name}.png"
        paths[name].write_bytes(png)
    (out / HTML_FILE).write_text(page, encoding="utf-8")
    (out / JSON_FILE).write_text(json.dumps({"meta": meta, "results": results}, indent=1, allow_nan=False,
                                            ensure_ascii=False) + "\n", encoding="utf-8")
    return ReportResult(out_dir=out, html=out / HTML_FILE, json=out / JSON_FILE, figures=paths,
                        seconds=time.perf_counter() - t0, synthetic=cohort.synthetic, patients=len(cohort.rows))
