"""Small and one-sided registries: the report still runs, and every test it cannot run is a
sentence saying why — never a crash, a NaN or a number computed from nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from amrwatch.study.cohort_stats import ReportSettings
from amrwatch.registry.store import Registry
from amrwatch.study.report import make_report

from .conftest import T0, copy_registry

QUICK = ReportSettings(bootstrap_resamples=20)


def _strict_json(path: Path) -> dict:
    def refuse(token: str):
        raise AssertionError(f"{path.name} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _report(data: Path, out: Path) -> tuple[dict, str]:
    res = make_report(data, out, settings=QUICK)
    page = res.html.read_text(encoding="utf-8")
    assert not re.search(r"\b(nan|inf|infinity)\b", page, re.IGNORECASE)
    return _strict_json(res.json)["results"], page


def _reasons(page: str) -> list[str]:
    return re.findall(r'class="na">(?:Not computed: )?([^<]+)<', page)


def test_empty_registry(tmp_path: Path):
    Registry.in_data_dir(tmp_path / "data").close()
    res, page = _report(tmp_path / "data", tmp_path / "r")
    assert res["courses"]["n_sessions"] == 0 and not res["courses"]["disappearance"]["available"]
    assert not list((tmp_path / "r" / "figures").glob("*.png"))
    assert "every course is &#x27;never detected&#x27;" in page or "no operation had an AMR" in page
    assert "needs at least 10 patients whose AMR persisted" in page


def test_five_patients(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data", limit=5, keep=lambda r: r.label is not None)
    res, page = _report(tmp_path / "data", tmp_path / "r")
    d = res["courses"]["disappearance"]
    assert d["available"] and d["n"] == 5
    factor_reasons = [f["test"]["reason"] for f in res["factors"] if not f["test"]["available"]]
    assert any("needs at least 3 patients with a value in each group" in r for r in factor_reasons)
    assert not res["multivariable"]["available"]
    assert "needs at least 10 patients whose AMR persisted and 10 whose AMR disappeared" in \
        res["multivariable"]["reason"]
    assert len(_reasons(page)) >= 3


def test_every_amr_persisted(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data", keep=lambda r: r.label == 1, limit=12)
    res, page = _report(tmp_path / "data", tmp_path / "r")
    d = res["courses"]["disappearance"]
    assert (d["rate"], d["disappeared"]) == (0.0, 0) and d["ci"][0] == pytest.approx(0.0, abs=1e-12)
    assert all(not f["test"]["available"] for f in res["factors"])
    assert all("both groups are needed" in e["test"]["reason"] for e in res["outcomes"])
    assert "2 whose AMR disappeared" in res["validation"]["reason"]
    assert not res["time_to_relief"]["logrank"]["available"]
    assert "figures/model_roc.png" not in {str(p.relative_to(tmp_path / "r")) for p in (tmp_path / "r").rglob("*.png")}
    assert "Not computed: an AUC needs at least 2 patients whose AMR persisted" in page


def test_no_spasm_left_at_one_year_and_no_follow_up_at_all(study, tmp_path: Path):
    # Only patients cured by 1 year: the 1-year comparison cannot differ, and says so.
    with Registry.in_data_dir(study.data) as reg:
        cured = {sid for sid, rows in reg.current_outcomes().items()
                 if any(o.timepoint == "1y" and o.cohen_grade == 0 for o in rows)}
    copy_registry(study.data, tmp_path / "cured", keep=lambda r: r.session_id in cured)
    res, _ = _report(tmp_path / "cured", tmp_path / "r1")
    one_year = res["outcomes"][3]
    assert one_year["n"] > 20 and one_year["test"]["reason"] == \
        "every patient followed up at 1y is free of spasm, so the groups cannot differ"

    copy_registry(study.data, tmp_path / "none", outcomes=False)
    res, page = _report(tmp_path / "none", tmp_path / "r2")
    assert all(not e["test"]["available"] for e in res["outcomes"])
    assert all(not c["available"] for c in res["time_to_relief"]["curves"].values())
    assert res["multivariable"]["available"]  # the intraoperative analysis does not need follow-up
    assert "have follow-up; a curve needs 2" in page


def test_a_factor_nobody_recorded_leaves_its_comparison_and_the_model_out(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data", limit=40)
    with Registry.in_data_dir(tmp_path / "data") as reg:
        for s in reg.list():
            summary = reg.summary(s.session_id).summary
            summary["factors"].pop("retraction_mm", None)
            summary["factor_sources"].pop("retraction_mm", None)
            reg.set_summary(s.session_id, summary, actor="dr_lee")
    res, page = _report(tmp_path / "data", tmp_path / "r")
    retraction = next(f for f in res["factors"] if f["feature"] == "retraction_mm")
    assert "got 0 persisted and 0 disappeared" in retraction["test"]["reason"]
    assert res["multivariable"]["excluded_incomplete"] == res["multivariable"]["population"]["eligible"]["n"] > 0
    assert "Labelled patients missing a factor" in page


def test_a_session_still_recording_a_replay_and_a_reoperation_are_not_patients(study, tmp_path: Path):
    ids = copy_registry(study.data, tmp_path / "data", limit=3, keep=lambda r: r.label is not None)
    with Registry.in_data_dir(tmp_path / "data") as reg:
        token = "pt_" + "ab" * 12
        reg.update_session(ids[0], actor="recorder", patient_token=token)
        reg.update_session(ids[1], actor="recorder", patient_token=token)
        reg.create_session("LIVE", actor="recorder", started_at=T0, source="sim")
        reg.create_session("REPLAY", actor="recorder", started_at=T0, source="replay:x", replay_of=ids[2])
        reg.close_session("REPLAY", actor="recorder")
    res, page = _report(tmp_path / "data", tmp_path / "r")
    meta = _strict_json(tmp_path / "r" / "report.json")["meta"]
    assert meta["patients"] == 2 and meta["sessions_in_registry"] == 5
    assert meta["excluded"] == {"re-operation of a patient already in the table": 1, "status recording": 1,
                                "replay of an archived session": 1}


def test_a_factor_that_separates_the_groups_perfectly_gives_no_odds_ratios(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data", keep=lambda r: r.label is not None)
    with Registry.in_data_dir(tmp_path / "data") as reg, reg.batch():
        for s in reg.list():
            summary = reg.summary(s.session_id).summary
            high = summary["course"] == "persisted"
            summary["factors"]["amr_amplitude_uv"] = (600.0 if high else 150.0) + int(s.session_id[-6:], 16) % 50
            reg.set_summary(s.session_id, summary, actor="dr_lee")
    res, page = _report(tmp_path / "data", tmp_path / "r")
    assert res["multivariable"]["events"] >= 10 and not res["multivariable"]["available"]
    assert "separates persisted from disappeared perfectly" in res["multivariable"]["reason"]
    amplitude = next(f for f in res["factors"] if f["feature"] == "amr_amplitude_uv")
    assert amplitude["test"]["available"] and amplitude["test"]["p_value"] < 1e-6
    assert "odds ratios would be infinite" in page


def test_groups_without_spread_are_compared_by_ranks_not_an_infinite_t(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data", keep=lambda r: r.label is not None, limit=40)
    with Registry.in_data_dir(tmp_path / "data") as reg, reg.batch():
        for s in reg.list():
            summary = reg.summary(s.session_id).summary
            summary["factors"]["retraction_mm"] = 12.0 if summary["course"] == "persisted" else 8.0
            reg.set_summary(s.session_id, summary, actor="dr_lee")
    res, _ = _report(tmp_path / "data", tmp_path / "r")
    retraction = next(f for f in res["factors"] if f["feature"] == "retraction_mm")
    assert retraction["test"]["test"] == "Mann-Whitney U" and retraction["test"]["p_value"] < 0.001


def test_per_channel_ratio_and_pan_criterion_say_not_estimable_on_small_cells(study, tmp_path: Path):
    """25 operations: too few with spasm at 1 year per site for a ROC, too few with spasm at 6 months for the
    Pan criterion's specificity — each a sentence, counted, never a number."""
    copy_registry(study.data, tmp_path / "data", limit=25, keep=lambda r: r.label is not None)
    res, page = _report(tmp_path / "data", tmp_path / "r")
    k = QUICK.ratio_min_events
    entries = res["ratio"]["per_channel"]["entries"]
    small = [e for e in entries if min(e["events"], e["n"] - e["events"]) < k]
    assert small, "the fixture must have a site with fewer than k events"
    for e in entries:
        if e in small:
            assert not e["available"] and e["reason"].startswith(f"not estimable (n events < {k})")
            assert "auc" not in e and "best_threshold_pct" not in e
    pan = res["ratio"]["pan"]
    spasm = pan["table"]["met_spasm"] + pan["table"]["not_met_spasm"]
    assert spasm < k and not pan["specificity"]["available"]
    assert pan["specificity"]["reason"].startswith(f"not estimable (n < {k})") and "value" not in pan["specificity"]
    assert f"not estimable (n events &lt; {k})" in page and f"not estimable (n &lt; {k})" in page
