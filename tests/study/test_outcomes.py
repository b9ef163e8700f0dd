"""Follow-up entry: every impossible input refused with the field, the rule and the value,
and nothing written; edits are new audited rows; the command line does the same."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from amrwatch.cli import build_parser, main
from amrwatch.registry.outcomes import (
    OutcomeInputError,
    add_outcome,
    derive_class,
    edit_outcome,
)
from amrwatch.registry.store import Registry, RegistryError, UnknownSession

from .conftest import SEVEN, T0

TODAY = dt.date(2026, 11, 24)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    with Registry.in_data_dir(d) as r:
        r.create_session("S1", actor="recorder", started_at=T0, source="sim")
        r.set_summary("S1", {"factors": SEVEN, "course": "persisted"}, actor="recorder")  # preoperative grade 3
        r.create_session("S2", actor="recorder", started_at=T0, source="sim")  # no summary: grade unknown
        r.create_session("R1", actor="recorder", started_at=T0, source="replay:S1", replay_of="S1")
    return d


def _written(d: Path) -> tuple[int, int]:
    with Registry.in_data_dir(d) as r:
        return (r.conn.execute("SELECT count(*) FROM outcomes").fetchone()[0],
                r.conn.execute("SELECT count(*) FROM audit WHERE table_name = 'outcomes'").fetchone()[0])


@pytest.mark.parametrize("kw, error, needle", [
    (dict(session_id="nope"), UnknownSession, "no session 'nope'"),
    (dict(cohen_grade=5), OutcomeInputError, "from 0 (no spasm) to 4; got 5"),
    (dict(cohen_grade=-1), OutcomeInputError, "got -1"),
    (dict(timepoint="2y"), OutcomeInputError, "--timepoint must be one of 1w|3m|6m|1y; got '2y'"),
    (dict(spasm_free_date="2026-03-01"), OutcomeInputError, "before the operation (2026-03-02)"),
    (dict(spasm_free_date="2027-01-01"), OutcomeInputError, "in the future (today is 2026-11-24)"),
    (dict(spasm_free_date="01/04/2026"), OutcomeInputError, "must be a date YYYY-MM-DD; got '01/04/2026'"),
    (dict(cohen_grade=0, outcome_class="improved"), OutcomeInputError, "contradicts --cohen-grade 0"),
    (dict(cohen_grade=2, outcome_class="cured"), OutcomeInputError, "contradicts --cohen-grade 2"),
    (dict(outcome_class="better"), OutcomeInputError, "--class must be one of cured, improved, unchanged, worse"),
    (dict(complications=["facial_palsy", "csf_leak"]), OutcomeInputError,
     "--complication must be one of facial_palsy_immediate"),
    (dict(session_id="S2", cohen_grade=2), OutcomeInputError, "--class is needed"),
    (dict(session_id="R1"), OutcomeInputError, "session R1 is a replay of S1; record the outcome on the original"),
])
def test_impossible_outcomes_are_refused_and_nothing_is_written(data: Path, kw, error, needle):
    args = dict(session_id="S1", timepoint="3m", cohen_grade=1, today=TODAY)
    args.update(kw)
    sid = args.pop("session_id")
    with Registry.in_data_dir(data) as r, pytest.raises(error) as err:
        add_outcome(r, sid, actor="dr_lee", **args)
    assert needle in str(err.value)
    assert _written(data) == (0, 0)


def test_the_registry_itself_refuses_relief_before_surgery_and_grade_class_contradictions(data: Path):
    with Registry.in_data_dir(data) as r:
        with pytest.raises(RegistryError, match="before the operation"):
            r.add_outcome("S1", actor="x", timepoint="1w", cohen_grade=0, relief_date="2026-03-01")
        with pytest.raises(RegistryError, match="contradicts cohen_grade 0"):
            r.add_outcome("S1", actor="x", timepoint="1w", cohen_grade=0, outcome_class="worse")
        with pytest.raises(RegistryError, match="complications must be among"):
            r.add_outcome("S1", actor="x", timepoint="1w", cohen_grade=0, complications={"stroke": True})
    assert _written(data) == (0, 0)


@pytest.mark.parametrize("grade, preop, expected", [
    (0, None, "cured"), (0, 3, "cured"), (2, 3, "improved"), (3, 3, "unchanged"), (4, 3, "worse"), (2, None, None)])
def test_class_is_derived_from_the_grade_and_the_preoperative_grade(grade, preop, expected):
    assert derive_class(grade, preop) == expected


def test_add_derives_the_class_and_a_second_add_at_the_same_point_is_refused(data: Path):
    with Registry.in_data_dir(data) as r:
        row, note = add_outcome(r, "S1", actor="dr_lee", timepoint="3m", cohen_grade=2, today=TODAY,
                                spasm_free_date=None, complications=["hearing_loss,csf_leak"])
        assert (row.outcome_class, note) == ("improved", None)
        assert row.complications == {"csf_leak": True, "hearing_loss": True}
        kept, note = add_outcome(r, "S1", actor="dr_lee", timepoint="6m", cohen_grade=2, outcome_class="unchanged",
                                 today=TODAY)
        assert kept.outcome_class == "unchanged" and "would read 'improved'" in note
        with pytest.raises(RegistryError, match="already has a 3m outcome"):
            add_outcome(r, "S1", actor="dr_lee", timepoint="3m", cohen_grade=0, today=TODAY)
    assert _written(data) == (2, 2)


def test_edit_is_a_new_audited_row_that_keeps_what_was_not_changed(data: Path):
    with Registry.in_data_dir(data) as r:
        first, _ = add_outcome(r, "S1", actor="dr_lee", timepoint="3m", cohen_grade=2, today=TODAY,
                               complications=["hearing_loss"])
        fixed, _ = edit_outcome(r, "S1", actor="dr_kim", timepoint="3m", cohen_grade=0,
                                spasm_free_date="2026-05-01", today=TODAY)
        assert (fixed.supersedes, fixed.cohen_grade, fixed.outcome_class, fixed.relief_date) == \
            (first.id, 0, "cured", "2026-05-01")
        assert fixed.complications == {"hearing_loss": True}  # kept
        cleared, _ = edit_outcome(r, "S1", actor="dr_kim", timepoint="3m", spasm_free_date=None, complications=[])
        assert (cleared.relief_date, cleared.complications, cleared.cohen_grade) == (None, {}, 0)
        assert [o.id for o in r.outcomes("S1")] == [cleared.id]
        assert [o.id for o in r.outcomes("S1", include_superseded=True)] == [first.id, fixed.id, cleared.id]
        audit = r.audit_trail("outcomes")
        assert [a.action for a in audit] == ["create", "correct", "correct"]
        assert audit[1].old["cohen_grade"] == 2 and audit[1].new["cohen_grade"] == 0
        with pytest.raises(OutcomeInputError, match="already says this"):
            edit_outcome(r, "S1", actor="dr_kim", timepoint="3m", cohen_grade=0)
        with pytest.raises(OutcomeInputError, match="no 1y outcome to edit"):
            edit_outcome(r, "S1", actor="dr_kim", timepoint="1y", cohen_grade=0)
        with pytest.raises(OutcomeInputError, match="nothing to change"):
            edit_outcome(r, "S1", actor="dr_kim", timepoint="3m")


def test_command_line_add_edit_list(data: Path, capsys):
    d = ["--data", str(data)]
    assert main(["outcome", "add", "S1", "--timepoint", "1w", "--cohen-grade", "3", "--actor", "dr_lee",
                 "--complication", "facial_palsy_immediate", *d]) == 0
    assert "1w Cohen grade 3 (unchanged)" in capsys.readouterr().out
    assert main(["outcome", "add", "S1", "--timepoint", "1w", "--cohen-grade", "9", *d]) == 1
    assert "outcome refused, nothing written: --cohen-grade must be a whole number from 0 (no spasm) to 4; got 9" \
        in capsys.readouterr().err
    assert main(["outcome", "edit", "S1", "--timepoint", "1w", "--cohen-grade", "0", "--spasm-free-date",
                 "2026-03-05", "--actor", "dr_kim", *d]) == 0
    assert "supersedes outcome 1" in capsys.readouterr().out
    assert main(["outcome", "list", "S1", "--json", *d]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["timepoint"], r["cohen_grade"], r["class"], r["spasm_free_date"], r["actor"]) for r in rows] == \
        [("1w", 0, "cured", "2026-03-05", "dr_kim")]
    assert rows[0]["complications"] == ["facial_palsy_immediate"]
    assert main(["outcome", "list", "S1", "--all", *d]) == 0
    assert "(superseded)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["outcome", "add", "S1", "--timepoint", "2y", "--cohen-grade", "0", *d])
    assert usage.value.code == 2
    assert main(["outcome", "add", "S1", "--timepoint", "3m", "--cohen-grade", "0", "--data",
                 str(data.parent / "typo")]) == 1
    assert "no registry at" in capsys.readouterr().err
    assert not (data.parent / "typo").exists()


def test_export_cohort_and_export_edf_share_the_one_export_group():
    p = build_parser()
    edf = p.parse_args(["export", "edf", "S1", "out.edf"])
    assert (edf.id, edf.out, edf.func.__module__) == ("S1", "out.edf", "amrwatch.audit.cli")
    cohort = p.parse_args(["export", "cohort", "out.csv"])
    assert (cohort.out, cohort.func.__module__) == ("out.csv", "amrwatch.study.cli")
