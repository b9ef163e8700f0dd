"""A session recorded live leaves its cohort summary in the registry, and `export cohort` uses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from amrwatch.registry.store import Registry


def test_live_session_summary_feeds_the_cohort_table(stack_env, tmp_path):
    up = subprocess.run([sys.executable, "-m", "amrwatch", "up", "--json", "--scenario", "persists-expected",
                         "--speed", "40", "--time-scale", "0.5"], env=stack_env, capture_output=True, text=True,
                        timeout=300)
    assert up.returncode == 0, up.stderr[-2000:]
    events = [json.loads(line) for line in up.stdout.splitlines() if line.startswith("{")]
    sid = next(e["session_id"] for e in events if e["type"] == "session_start")
    last_pred = [e for e in events if e["type"] == "prediction"][-1]
    data = Path(stack_env["AMRWATCH_DATA"])
    reg = Registry.existing(data)
    try:
        row = reg.summary(sid)
    finally:
        reg.close()
    assert row is not None and row.actor == "recorder"
    s = row.summary
    text = json.dumps(s)
    for factor in ("duration_years", "cohen_grade", "carbamazepine", "vessels", "amr_amplitude_uv",
                   "retraction_mm", "displacement"):
        assert factor in text, factor
    assert "persisted" in text
    assert str(round(last_pred["probability"], 6))[:6] in text
    out = tmp_path / "cohort.csv"
    r = subprocess.run([sys.executable, "-m", "amrwatch", "export", "cohort", str(out)], env=stack_env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    mine = [row for row in rows if row["session_id"] == sid]
    assert len(mine) == 1 and mine[0]["course"] == "persisted" and mine[0]["amr_persisted"] == "1"
    assert float(mine[0]["retraction_mm"]) == 14.0 and mine[0]["vessels"] == "3"
    # Per channel (issue #17): the export carries each site's final percent and baseline as the analyzer's
    # amr_course published them on the bus, the site named by the montage of the session_start.
    course = [e for e in events if e["type"] == "amr_course"][-1]
    start = next(e for e in events if e["type"] == "session_start")
    sites = {c["name"]: f"{c['direction']}_{c['muscle']}" for c in start["montage"]["channels"] if c["direction"]}
    seen = 0
    for name, per in course["per_channel"].items():
        got = mine[0][f"final_pct_{sites[name]}"]
        assert (float(got) if got else None) == per["final_pct_of_baseline"], name
        base = mine[0][f"baseline_uv_{sites[name]}"]
        assert (float(base) if base else None) == (per["baseline_uv"] if per["final_pct_of_baseline"] is not None
                                                   else None), name
        seen += per["final_pct_of_baseline"] is not None
    assert seen >= 2, "a persisting AMR has per-channel figures"
