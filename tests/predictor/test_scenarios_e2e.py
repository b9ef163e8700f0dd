"""Each simulator scenario, run end to end through every service, ends in its expected decision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

EXPECTED = {
    "disappears-after-decompression": ("decompression_confirmed", "disappeared_after_decompression"),
    "early-disappearance": ("early_disappearance", "disappeared_before_decompression"),
    "persists-expected": ("termination_acceptable", "persisted"),
    "persists-unexpected": ("explore_further", "persisted"),
    "never-detected": ("amr_not_monitorable", "never_detected"),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_scenario_decision(scenario, stack_env):
    up = subprocess.run(
        [sys.executable, "-m", "amrwatch", "up", "--json", "--scenario", scenario, "--speed", "40",
         "--time-scale", "0.5", "--seed", "3"],
        env=stack_env, capture_output=True, text=True, timeout=300,
    )
    assert up.returncode == 0, up.stderr[-3000:]
    events = [json.loads(line) for line in up.stdout.splitlines() if line.startswith("{")]
    decisions = [e for e in events if e["type"] == "decision"]
    kind, course = EXPECTED[scenario]
    superseded = {d["supersedes"] for d in decisions if d["supersedes"]}
    in_force = [d for d in decisions if d["decision_id"] not in superseded]
    assert kind in [d["kind"] for d in in_force], [(d["kind"], d["rationale"]) for d in decisions]
    d = next(d for d in in_force if d["kind"] == kind)
    assert d["rationale"] and d["evidence"]
    courses = [e["course"] for e in events if e["type"] == "amr_course"]
    assert courses and courses[-1] == course
    assert "prognosis" in [x["kind"] for x in decisions]
    preds = [e for e in events if e["type"] == "prediction"]
    if scenario != "never-detected":
        assert preds and all(p["synthetic"] and p["notice"] == "synthetic — not for clinical use" for p in preds)
        band = preds[-1]["band"]
        assert band == ("high" if scenario == "persists-expected" else "low"), preds[-1]
