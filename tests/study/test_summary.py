"""Session summaries: derived from real proto messages, stored audited in the registry,
and re-derived from a real archive when no summary row exists."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from amrwatch.proto.codec import encode
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.study.cohort_table import build_cohort
from amrwatch.registry.schema import HEAD
from amrwatch.registry.store import REGISTRY_FILE, SCHEMA_VERSION, Registry, RegistryError
from amrwatch.archive.settings import ArchiveSettings
from amrwatch.registry.summary import SummaryError, summarize

from .conftest import SEVEN, T0, baseline, course, factors, prediction


def test_last_values_win_and_course_and_last_prediction_are_taken():
    s = summarize([
        factors("scenario", **SEVEN),
        factors("operator", cohen_grade=4, retraction_mm=12.0),
        course("disappeared_before_decompression", stage="arachnoid_dissection", final=3.5, baseline_uv=200.0),
        prediction(0.05),
        prediction(0.42),
        course("persisted", stage=None, final=61.0, baseline_uv=215.0),
    ])
    assert s["factors"]["cohen_grade"] == 4 and s["factor_sources"]["cohen_grade"] == "operator"
    assert s["factors"]["retraction_mm"] == 12.0
    assert s["factors"]["duration_years"] == 3.5 and s["factor_sources"]["duration_years"] == "scenario"
    assert (s["course"], s["final_pct_of_baseline"], s["baseline_uv"], s["disappeared_at_stage"]) == \
        ("persisted", 61.0, 215.0, None)
    assert s["prediction"]["probability"] == 0.42 and s["prediction"]["band"] == "high"


@pytest.mark.parametrize("order", ["operator_first", "operator_last"])
def test_operator_amplitude_beats_the_analyzer_whatever_the_order(order):
    op = factors("operator", amr_amplitude_uv=333.0)
    seq = [op, baseline(150.0)] if order == "operator_first" else [baseline(150.0), op]
    s = summarize([factors("scenario", **SEVEN), *seq, baseline(160.0)])
    assert s["factors"]["amr_amplitude_uv"] == 333.0 and s["factor_sources"]["amr_amplitude_uv"] == "operator"


def test_analyzer_baseline_beats_a_scenario_amplitude_and_the_latest_baseline_counts():
    s = summarize([baseline(150.0), factors("scenario", **SEVEN), baseline(160.0)])
    assert s["factors"]["amr_amplitude_uv"] == 160.0 and s["factor_sources"]["amr_amplitude_uv"] == "analyzer"


def test_messages_of_two_sessions_are_refused_unless_one_is_chosen():
    mixed = [factors("operator", cohen_grade=2), factors("operator", session_id="S2", cohen_grade=4)]
    with pytest.raises(SummaryError, match="two sessions"):
        summarize(mixed)
    assert summarize(mixed, session_id="S2")["factors"] == {"cohen_grade": 4}


def test_a_session_with_no_course_or_prediction_yet_says_so():
    s = summarize([factors("operator", vessels=1)])
    assert s["course"] is None and s["prediction"] is None and s["factors"] == {"vessels": 1}


@pytest.fixture
def reg(tmp_path: Path):
    r = Registry.in_data_dir(tmp_path / "data")
    r.create_session("S1", actor="recorder", started_at=T0, source="sim")
    yield r
    r.close()


def test_set_summary_is_audited_and_a_correction_supersedes(reg: Registry):
    first = reg.set_summary("S1", summarize([factors("operator", **SEVEN), course("persisted")]), actor="recorder")
    second = reg.set_summary("S1", summarize([factors("operator", **SEVEN), course("disappeared_after_decompression")]),
                             actor="dr_lee")
    assert second.supersedes == first.id
    assert reg.summary("S1").summary["course"] == "disappeared_after_decompression"
    assert [r.id for r in reg.summary_history("S1")] == [first.id, second.id]
    audit = reg.audit_trail("session_summaries", "S1")
    assert [a.action for a in audit] == ["create", "correct"]
    assert audit[1].old["course"] == "persisted" and audit[1].supersedes == audit[0].id
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        reg.conn.execute("UPDATE session_summaries SET summary = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        reg.conn.execute("DELETE FROM session_summaries")


@pytest.mark.parametrize("bad, needle", [
    ({"factors": {"cohen_grade": 7}}, "summary.factors.cohen_grade"),
    ({"course": "vanished"}, "summary.course"),
    ({"prediction": {"probability": 1.5}}, "summary.prediction.probability"),
    ({"hospital_number": "123"}, "summary.hospital_number"),
])
def test_a_bad_summary_names_the_field_and_nothing_is_written(reg: Registry, bad, needle):
    with pytest.raises(RegistryError) as err:
        reg.set_summary("S1", bad, actor="recorder")
    assert needle in str(err.value)
    assert reg.summary("S1") is None and reg.audit_trail("session_summaries") == []


def test_a_version_1_registry_is_upgraded_in_place_with_its_data(tmp_path: Path):
    # What an earlier amrwatch wrote (its DDL kept verbatim): no summaries table, user_version 1, no Alembic.
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / REGISTRY_FILE)
    conn.executescript((Path(__file__).parents[1] / "registry" / "legacy_v1.sql").read_text())
    conn.execute("INSERT INTO sessions (session_id, started_at, source, status) VALUES ('S1', ?, 'sim', 'closed')",
                 (T0,))
    conn.execute("INSERT INTO outcomes (session_id, timepoint, cohen_grade, outcome_class, recorded_at, actor) "
                 "VALUES ('S1', '1w', 1, 'improved', ?, 'dr_lee')", (T0,))
    conn.commit()
    conn.close()
    with Registry.in_data_dir(data) as r:
        assert r.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert r.conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD
        assert [o.cohen_grade for o in r.outcomes("S1")] == [1]
        r.set_summary("S1", {"course": "persisted"}, actor="recorder")
        assert r.summary("S1").summary["course"] == "persisted"
        # the old triggers survived the upgrade
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            r.conn.execute("UPDATE outcomes SET cohen_grade = 4")


def test_export_falls_back_to_the_archive_when_no_summary_was_stored(tmp_path: Path):
    data = tmp_path / "data"
    stream = [factors("operator", **{**SEVEN, "amr_amplitude_uv": None}), baseline(244.0), prediction(0.07),
              course("disappeared_after_decompression", final=4.25, baseline_uv=244.0)]
    w = ArchiveWriter(session_path(data, "S1"), ArchiveSettings(), meta={"session_id": "S1"})
    for m in stream:
        w.append_message(encode(m))
    w.close()
    with Registry.in_data_dir(data) as reg:
        reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
        reg.close_session("S1", actor="recorder")
        reg.create_session("S2", actor="recorder", started_at=T0, source="sim")
        reg.close_session("S2", actor="recorder")
        cohort = build_cohort(reg, data)
    assert cohort.from_archive == 1
    assert [r.session_id for r in cohort.rows] == ["S1"]
    row = cohort.rows[0]
    assert row.factors["amr_amplitude_uv"] == 244.0 and row.factors["cohen_grade"] == SEVEN["cohen_grade"]
    assert (row.course, row.label, row.final_pct_of_baseline, row.predicted_probability) == \
        ("disappeared_after_decompression", 0, 4.25, 0.07)
    assert cohort.excluded == [("S2", "no summary stored and no archive")]
