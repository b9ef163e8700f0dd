"""Session summaries: derived from real proto messages, stored audited in the registry,
and re-derived from a real archive when no summary row exists."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from amrwatch.proto.codec import encode
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.study.cohort_table import build_cohort, summary_from_archive
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


# --------------------------------------------------------------------------- #
# Per-channel figures (issue #17)


def test_older_summaries_without_per_channel_figures_still_load_and_export_empty(reg: Registry):
    """A summary stored before per-channel figures were kept (no `per_channel` key) is still valid, and its
    export row has empty per-channel cells — never a figure from elsewhere."""
    from amrwatch.study.cohort_table import PER_CHANNEL_KEYS, csv_text

    old = {"factors": {"cohen_grade": 2}, "course": "persisted", "final_pct_of_baseline": 55.0, "baseline_uv": 120.0}
    reg.set_summary("S1", old, actor="recorder")
    reg.close_session("S1", actor="recorder")
    row = build_cohort(reg).rows[0]
    assert row.final_pct_of_baseline == 55.0
    assert all(row.final_pct[k] is None for k in PER_CHANNEL_KEYS)
    lines = csv_text(build_cohort(reg)).splitlines()
    header, cells = lines[0].split(","), lines[1].split(",")
    assert {h: c for h, c in zip(header, cells) if h.startswith("final_pct_")} == \
        {"final_pct_of_baseline": "55.0", **{f"final_pct_{k}": "" for k in PER_CHANNEL_KEYS}}


@pytest.mark.parametrize("bad, needle", [
    ({"per_channel": {"MENT": {"direction": "ZYG", "final_pct_of_baseline": -1.0}}},
     "summary.per_channel.MENT.final_pct_of_baseline"),
    ({"per_channel": {"MENT": {"direction": "XYZ"}}}, "summary.per_channel.MENT.direction"),
    ({"per_channel": {"MENT": {"direction": "ZYG", "baseline_uv": float("inf")}}},
     "summary.per_channel.MENT.baseline_uv"),
    ({"per_channel": {"MENT": {"direction": "ZYG", "baseline_uv": 2e5}}}, "summary.per_channel.MENT.baseline_uv"),
    ({"per_channel": {"MENT": {"direction": "ZYG", "side": "left"}}}, "summary.per_channel.MENT.side"),
])
def test_a_bad_per_channel_figure_names_the_field(reg: Registry, bad, needle):
    with pytest.raises(RegistryError) as err:
        reg.set_summary("S1", {"course": "persisted", **bad}, actor="recorder")
    assert needle in str(err.value)


@pytest.fixture(scope="module")
def analysed_archive(tmp_path_factory):
    """A simulated operation through the real analyzer (MessageDispatcher), its input and output messages
    archived as the recorder archives them; no summary row is stored, so the export derives it from the
    archive. Returns (data dir, session id, the analyzer's output messages)."""
    from amrwatch.proto.messages import BY_TYPE, SCHEMA_VERSION
    from amrwatch.services.analyzer.dispatcher import MessageDispatcher

    from tests.analyzer.streams import simulate
    from tests.analyzer.test_offline import SID, messages

    acquirer = messages(simulate(seed=9, scenario="persists-unexpected", time_scale=0.2))
    analyzer = MessageDispatcher(source="analyzer")
    seq: dict[str, int] = {}
    log, out = [], []
    for msg in acquirer:
        log.append(msg)
        for body in analyzer.dispatch(msg):
            if body.TOPIC in ("amr_state", "baseline", "amr_course"):
                seq[body.TOPIC] = seq.get(body.TOPIC, -1) + 1
                m = BY_TYPE[body.TOPIC](type=body.TOPIC, schema_version=SCHEMA_VERSION, session_id=SID,
                                        seq=seq[body.TOPIC], publisher="analyzer", instance="b1b1b1b1", ts_utc=T0,
                                        **body.fields())
                log.append(m)
                out.append(m)
    data = tmp_path_factory.mktemp("analysed") / "data"
    w = ArchiveWriter(session_path(data, SID), ArchiveSettings(), meta={"session_id": SID})
    for m in log:
        w.append_message(encode(m))
    w.close()
    with Registry.in_data_dir(data) as r:
        r.create_session(SID, actor="recorder", started_at=T0, source="sim")
        r.close_session(SID, actor="recorder")
    return data, SID, out, acquirer[0].montage


def test_per_channel_figures_come_from_the_recorded_sessions_amr_course(analysed_archive):
    """The export row of an analysed, archived operation carries, per recording site, the figures of the
    analyzer's own messages: the channel's `baseline` message (an independent message from `amr_course`),
    its final percent in the `amr_course`, its last `amr_state`; the direction figure is its largest channel."""
    from amrwatch.proto.messages import AmrCourse, AmrState, Baseline

    data, sid, out, montage = analysed_archive
    with Registry.in_data_dir(data) as r:
        cohort = build_cohort(r, data)
    assert cohort.from_archive == 1 and [row.session_id for row in cohort.rows] == [sid]
    row = cohort.rows[0]
    course = [m for m in out if isinstance(m, AmrCourse)][-1]
    baselines = {m.channel: m.baseline_uv for m in out if isinstance(m, Baseline)}  # the last one per channel
    states = {m.channel: (m.direction, m.state) for m in out if isinstance(m, AmrState)}
    assert course.course == "persisted" and len(baselines) >= 2, "the scenario must give a graded course"
    muscle = {c.name: (c.direction, c.muscle) for c in montage.channels if c.direction}
    assert set(muscle) >= {"MENT", "OORIS", "OOCUL"}
    checked = 0
    for name, (direction, m) in muscle.items():
        site = f"{direction}_{m}"
        per = course.per_channel[name]
        assert row.final_pct[site] == per["final_pct_of_baseline"], site
        assert row.baseline_uv[site] == baselines.get(name), site
        if per["final_pct_of_baseline"] is not None:
            assert math.isclose(row.final_pct[site], 100.0 * per["final_uv"] / baselines[name], rel_tol=1e-9)
            assert states[name][0] == direction
            checked += 1
    assert checked >= 2
    for d in ("ZYG", "MAR"):
        pcts = [course.per_channel[n]["final_pct_of_baseline"] for n, (dd, _) in muscle.items() if dd == d]
        pcts = [p for p in pcts if p is not None]
        assert row.final_pct[d] == (max(pcts) if pcts else None), d
    known = [p for p in row.final_pct.values() if p is not None]
    assert row.final_pct_of_baseline == max(known)  # the session figure: the channel that kept most
    stored = summary_from_archive(data, sid)  # muscle from the montage, state as the last amr_state left it
    assert {n: (c["muscle"], c["state"]) for n, c in stored["per_channel"].items()} == \
        {n: (muscle[n][1], states.get(n, (None, None))[1]) for n in course.per_channel}
