"""Reading an institution's exported cohort: all or nothing, every problem located."""

import csv
import io

import numpy as np
import pytest

from amrwatch.study.cohort import synthetic_cohort
from amrwatch.study.cohortcsv import (
    COHORT_COLUMNS,
    CohortCsvError,
    parse_cohort,
    read_cohort,
)
from amrwatch.services.predictor.features import FEATURE_NAMES, row_dict
from amrwatch.study.training import train


def export(x, y, extra_courses=None) -> str:
    """What `amrwatch export cohort` writes (COHORT_COLUMNS, then an outcome column)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COHORT_COLUMNS, "outcome_3m_class"])
    for i, (row, label) in enumerate(zip(x, y)):
        d = row_dict(row)
        feats = ["yes" if d[n] is True else "no" if d[n] is False else d[n] for n in FEATURE_NAMES]
        course = "persisted" if label else "disappeared_after_decompression"
        w.writerow([f"s{i:04d}", *feats, label, course, "35.0", "", "improved"])
    return buf.getvalue()


def test_round_trip_of_an_exported_cohort(tmp_path):
    x, y = synthetic_cohort(60, 5)
    p = tmp_path / "cohort.csv"
    p.write_text("\ufeff" + export(x, y), encoding="utf-8")  # spreadsheets add a BOM
    t = read_cohort(p)
    assert np.array_equal(t.X, x) and np.array_equal(t.y, y)
    assert t.session_ids[0] == "s0000" and t.lines[:2] == [2, 3]
    assert len(t.sha256) == 64


def test_columns_may_come_in_any_order():
    text = "amr_persisted,displacement,retraction_mm,amr_amplitude_uv,vessels,carbamazepine,cohen_grade,duration_years,session_id\n" \
           "1,2,8,300,2,true,3,5,a\n0,3,6,120,1,0,2,1.5,b\n"
    t = parse_cohort(text)
    assert t.X.tolist() == [[5, 3, 1, 2, 300, 8, 2], [1.5, 2, 0, 1, 120, 6, 3]]
    assert t.y.tolist() == [1, 0]


def test_every_bad_cell_is_reported_with_line_column_and_reason():
    header = ",".join(COHORT_COLUMNS)
    rows = [
        "a,5,3,no,1,200,9,2,0,persisted,,",              # line 2: fine
        "b,5,7,no,1,200,9,2,0,persisted,,",              # line 3: cohen_grade out of range
        "c,abc,3,maybe,1,200,9,2,2,persisted,,",          # line 4: three problems
        "d,5,3,no,1,,9,2,1,persisted,,",                 # line 5: missing amplitude
        "a,5,3,no,1,200,9,2,0,persisted,,",              # line 6: duplicate session
        "e,5,3,no,1,200",                                 # line 7: ragged
        "f,5,3,no,2.5,200,9,2,1,persisted,,",            # line 8: not a whole number
        "g,5,3,no,1,inf,9,2,1,persisted,,",              # line 9: infinite
    ]
    with pytest.raises(CohortCsvError) as err:
        parse_cohort(header + "\n" + "\n".join(rows) + "\n", "reg.csv")
    got = {(p.line, p.column): p.reason for p in err.value.problems}
    assert got == {
        (3, "cohen_grade"): "must be in [1, 4] (Cohen grade); got 7",
        (4, "duration_years"): "must be a number in [0, 60] (years); got 'abc'",
        (4, "carbamazepine"): "must be yes/no, true/false or 1/0; got 'maybe'",
        (4, "amr_persisted"): "must be 0 (AMR disappeared) or 1 (AMR persisted); got '2'",
        (5, "amr_amplitude_uv"): "missing value",
        (6, "session_id"): "duplicate session 'a' (first on line 2)",
        (7, ""): f"has 6 fields; the header has {len(COHORT_COLUMNS)}",
        (8, "vessels"): "must be a whole number in [1, 4] (count); got '2.5'",
        (9, "amr_amplitude_uv"): "must be a number in [0, 5000] (µV); got 'inf'",
    }
    msg = str(err.value)
    assert msg.startswith("reg.csv: 9 problem(s); nothing was fitted.")
    assert "line 3, column cohen_grade: must be in [1, 4] (Cohen grade); got 7" in msg


def test_line_numbers_count_physical_lines_of_quoted_fields():
    header = ",".join([*COHORT_COLUMNS, "note"])
    text = header + '\na,5,3,no,1,200,9,2,0,persisted,,,"two\nlines"\nb,5,3,no,9,200,9,2,0,persisted,,,x\n'
    with pytest.raises(CohortCsvError) as err:
        parse_cohort(text)
    assert [(p.line, p.column) for p in err.value.problems] == [(4, "vessels")]


def test_missing_columns_are_named():
    with pytest.raises(CohortCsvError) as err:
        parse_cohort("session_id,duration_years,amr_persisted\nx,1,0\n")
    missing = {p.column for p in err.value.problems}
    assert missing == set(FEATURE_NAMES) - {"duration_years"}
    assert all(p.line == 1 for p in err.value.problems)


def test_never_detected_rows_are_skipped_not_fitted():
    header = ",".join(COHORT_COLUMNS)
    t = parse_cohort(header + "\na,5,3,no,1,200,9,2,0,persisted,,\nb,5,3,no,1,,9,2,,never_detected,,\n")
    assert t.session_ids == ["a"]
    assert len(t.skipped) == 1 and t.skipped[0].line == 3


def test_empty_and_unreadable_files(tmp_path):
    with pytest.raises(CohortCsvError, match="the file is empty"):
        parse_cohort("")
    with pytest.raises(CohortCsvError, match="no labelled rows"):
        parse_cohort(",".join(COHORT_COLUMNS) + "\n")
    with pytest.raises(CohortCsvError, match="cannot read the file"):
        read_cohort(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes((",".join(COHORT_COLUMNS) + "\nä,1").encode("latin-1"))
    with pytest.raises(CohortCsvError, match="line 2: not UTF-8"):
        read_cohort(bad)


def test_nothing_is_fitted_on_a_bad_file(tmp_path):
    x, y = synthetic_cohort(157, 5)
    lines = export(x, y).splitlines()
    lines[100] = lines[100].replace("s0099,", "s0099,999,")  # one bad, ragged row deep in the file
    p = tmp_path / "reg.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(CohortCsvError, match="line 101"):
        train(out, csv=p, echo=None)
    assert not (out / "model.onnx").exists() and not (out / "model_card.json").exists()


def test_training_on_a_csv_records_its_provenance(tmp_path, quick):
    x, y = synthetic_cohort(157, 6)
    p = tmp_path / "reg.csv"
    p.write_text(export(x, y), encoding="utf-8")
    card = train(tmp_path / "out", csv=p, settings=quick, echo=None)
    assert card["synthetic"] is False and card["notice"] is None
    assert card["training_data"]["source"] == "csv" and card["training_data"]["rows_used"] == 157
    assert card["n"] == 157 and card["events"] == int(y.sum())


def test_rows_outside_the_model_population_are_skipped_and_counted():
    header = ",".join([*COHORT_COLUMNS, "eligible"])
    rows = [
        "a,5,3,no,1,200,9,2,0,disappeared_after_decompression,,,yes",
        "b,5,3,no,1,200,9,2,0,disappeared_before_decompression,,,no",   # early: outside by its course
        "c,5,3,no,1,200,9,2,1,persisted,,,yes",
        "d,5,3,no,1,200,9,2,0,disappeared_after_decompression,,,no",     # outside by the column
        "e,5,3,no,1,,9,2,,never_detected,,,no",
    ]
    t = parse_cohort(header + "\n" + "\n".join(rows) + "\n")
    assert t.session_ids == ["a", "c"] and t.ineligible == 2 and t.never_detected == 1
    assert any("outside the model's population" in str(s) for s in t.skipped)
    with pytest.raises(CohortCsvError, match="line 2, column eligible: must be yes/no"):
        parse_cohort(header + "\na,5,3,no,1,200,9,2,0,persisted,,,perhaps\n")
