"""Follow-up AMR recordings (issue #17, item 6): a postoperative recording linked to the operation's session
becomes the operation's `followup_amr_<timepoint>` column, and the report sets its AMR against the 1-year
outcome beside the intraoperative course — counts and p-values recomputed here independently."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from amrwatch.cli import main
from amrwatch.registry.store import Registry, RegistryError
from amrwatch.study.cohort_stats import ReportSettings
from amrwatch.study.cohort_table import build_cohort, write_csv
from amrwatch.study.report import make_report
from amrwatch.study.synthetic_registry import generate


def _table(pairs) -> list[list[int]]:
    t = [[0, 0], [0, 0]]
    for amr, grade in pairs:
        t[0 if amr else 1][0 if grade > 0 else 1] += 1
    return t


def test_linked_recordings_feed_the_cohort_column_and_the_report(tmp_path: Path, capsys):
    data = tmp_path / "data"
    generate(data, 60, seed=5)
    rng = np.random.default_rng(3)
    chosen: dict[str, bool] = {}  # operation -> AMR present in its 1m recording
    with Registry.in_data_dir(data) as reg:
        ops = [s for s in reg.list() if s.status == "closed"]
        grades = {s.session_id: {o.timepoint: o.cohen_grade for o in reg.outcomes(s.session_id)} for s in ops}
        summaries = reg.current_summaries()
        with_1y = [s for s in ops if "1y" in grades[s.session_id] and summaries[s.session_id].summary.get("course")]
        assert len(with_1y) >= 30
        for i, s in enumerate(with_1y[:30]):
            rid = f"FU1M_{i:02d}"
            start = dt.datetime.fromisoformat(s.started_at.replace("Z", "+00:00")) + dt.timedelta(days=30)
            reg.create_session(rid, actor="recorder", started_at=start, source="edf:followup.edf")
            # as the 2022 study found: the AMR a month later goes with spasm at one year
            present = bool(rng.random() < (0.8 if grades[s.session_id]["1y"] > 0 else 0.1))
            reg.set_summary(rid, {"course": "persisted" if present else "never_detected"}, actor="recorder")
            reg.close_session(rid, actor="recorder", ended_at=start + dt.timedelta(minutes=20))
            chosen[s.session_id] = present
            if i:
                reg.link_recording(s.session_id, rid, timepoint="1m", actor="dr_follow")
        # a 3m recording for two patients, both with the AMR present: too few for a test
        for i, s in enumerate(with_1y[:2]):
            rid = f"FU3M_{i}"
            start = dt.datetime.fromisoformat(s.started_at.replace("Z", "+00:00")) + dt.timedelta(days=90)
            reg.create_session(rid, actor="recorder", started_at=start, source="edf:followup.edf")
            reg.set_summary(rid, {"course": "persisted"}, actor="recorder")
            reg.close_session(rid, actor="recorder", ended_at=start + dt.timedelta(minutes=20))
            reg.link_recording(s.session_id, rid, timepoint="3m", actor="dr_follow")
    first = with_1y[0].session_id
    # the first link through the command line, as a clinician makes it
    assert main(["outcome", "link-recording", first, "FU1M_00", "--timepoint", "1m", "--actor", "dr_cli",
                 "--data", str(data)]) == 0
    assert f"session FU1M_00 is the 1m follow-up recording of operation {first}" in capsys.readouterr().out
    assert main(["outcome", "link-recording", first, "FU1M_01", "--timepoint", "1m", "--data", str(data)]) != 0
    assert "link refused, nothing written: already linked" in capsys.readouterr().err

    with Registry.in_data_dir(data) as reg:
        cohort = build_cohort(reg, data)
        with pytest.raises(RegistryError):
            reg.link_recording(first, "FU1M_00", timepoint="3m", actor="x")
    ids = {r.session_id for r in cohort.rows}
    assert not any(i.startswith("FU") for i in ids), "a follow-up recording was counted as an operation"
    assert sum(1 for sid, why in cohort.excluded if "follow-up recording of operation" in why) == 32
    out = tmp_path / "cohort.csv"
    write_csv(cohort, out)
    rows = {r["session_id"]: r for r in csv.DictReader(out.open())}
    for sid, present in chosen.items():
        assert rows[sid]["followup_amr_1m"] == str(int(present)), sid
    assert sum(1 for r in rows.values() if r["followup_amr_3m"] == "1") == 2
    assert all(r["followup_amr_6m"] == "" for r in rows.values())

    res = make_report(data, tmp_path / "report", settings=ReportSettings(bootstrap_resamples=20))
    results = json.loads(res.json.read_text())["results"]["followup_recordings"]
    by_tp = {e["timepoint"]: e for e in results}
    assert set(by_tp) == {"1m", "3m"}
    e = by_tp["1m"]
    post = _table((chosen[sid], grades[sid]["1y"]) for sid in chosen)
    course = {sid: summaries[sid].summary["course"] for sid in chosen}
    labelled = ("persisted", "disappeared_after_decompression", "disappeared_before_decompression")
    intra = _table((course[sid] == "persisted", grades[sid]["1y"]) for sid in chosen if course[sid] in labelled)
    assert e["n"] == e["n_linked"] == 30
    assert e["postoperative"]["table"] == post and e["intraoperative"]["table"] == intra
    for key, table in (("postoperative", post), ("intraoperative", intra)):
        t = e[key]["test"]
        if min(sum(table[0]), sum(table[1]), table[0][0] + table[1][0], table[0][1] + table[1][1]) == 0:
            assert not t["available"] and "not available" in t["reason"]
        else:
            assert t["available"] and t["test"] == "Fisher's exact"
            assert abs(t["p_value"] - stats.fisher_exact(table)[1]) < 1e-9
    assert not by_tp["3m"]["postoperative"]["test"]["available"]
    assert "not available, too few — 2 patients with the AMR present and 0 without" in \
        by_tp["3m"]["postoperative"]["test"]["reason"]
    page = res.html.read_text(encoding="utf-8")
    assert "Follow-up AMR recordings" in page and "1m (30 of 30 with a 1y outcome)" in page
    assert "not available, too few" in page
