"""The simulator's hazard scenarios, whole stack: what the demo shows (`amrwatch up --scenario NAME`).

Same rules as the independent recordings (test_stack_hazards.py), on the
project's own simulator: noise-rise and stimulator-failure never confirm a
disappearance and raise their alarms; current-spread raises a direct_response
alarm and gives no verdict from the direct response; reappearance escalates
after the confirmation. Factors come from the scenario's own script.
"""

from __future__ import annotations

import pytest

from .stack import Run, run_case
from .test_stack_hazards import VERDICTS, chain

SPEED = 40.0
#: Stage durations x this; the reappearance needs the whole decompression_complete-to-closure time
#: (its AMR returns a fixed number of stimuli before closure, after the verdict window).
TIME_SCALE = {"noise-rise": 0.5, "stimulator-failure": 0.5, "current-spread": 0.5, "reappearance": 1.0}


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory):
    cache: dict[str, Run | BaseException] = {}

    def get(name: str) -> Run:
        if name not in cache:
            try:
                run = run_case(name, None, tmp_path_factory.mktemp(f"sim-{name}"), speed=SPEED, factors={},
                               source_args=("--scenario", name, "--seed", "3", "--time-scale", str(TIME_SCALE[name])))
                print(f"\n[sim {name}] whole stack: {run.wall_s:.1f} s wall ({len(run.events)} events)")
                cache[name] = run
            except BaseException as err:  # noqa: BLE001
                cache[name] = err
        got = cache[name]
        if isinstance(got, BaseException):
            raise got
        assert got.returncode == 0, got.stderr[-3000:]
        assert got.of("session_end"), got.summary()
        return got

    return get


@pytest.mark.parametrize("name, alarm, priority", [("noise-rise", "recording_quality", None),
                                                   ("stimulator-failure", "stimulation_failure", "high")])
def test_no_confirmation_from_noise_or_a_dead_stimulator(sim_run, name, alarm, priority):
    run = sim_run(name)
    assert "decompression_confirmed" not in run.kinds(), run.summary()
    raised = run.alarms(alarm)
    assert raised, f"no {alarm} alarm\n{run.summary()}"
    assert priority is None or raised[0]["priority"] == priority, raised[0]
    assert all(d["synthetic"] for d in run.decisions)


def test_current_spread_alarm_and_no_verdict(sim_run):
    run = sim_run("current-spread")
    assert run.alarms("direct_response"), f"no direct_response alarm\n{run.summary()}"
    assert not set(VERDICTS) & set(run.kinds()), run.summary()


def test_reappearance_escalated(sim_run):
    run = sim_run("reappearance")
    confirmed = [d for d in run.decisions if d["kind"] == "decompression_confirmed"]
    back = [d for d in run.decisions if d["kind"] == "amr_reappeared"]
    assert confirmed and back, run.summary()
    assert back[0]["priority"] == "high" and confirmed[0]["decision_id"] in chain(run, back[0]), run.summary()
    assert "termination_acceptable" not in [d["kind"] for d in run.decisions
                                            if run.position(d) > run.position(back[0])], run.summary()
