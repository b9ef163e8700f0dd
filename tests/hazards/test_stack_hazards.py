"""Issue 13, whole stack: recordings nobody on the team's simulator made, replayed through `amrwatch up`.

Each case (tests/independent/cases.py) is replayed once with a patient whose
predicted persistence is HIGH entered through `amrwatch factors`, so that a
wrong confirmation or a wrong "termination acceptable" shows. What the stack
must say is the issue's specification:

- noise_rise: never `decompression_confirmed`; a `recording_quality` alarm; the noisy sweeps
  `not_assessable` (noise_too_high), none counted absent;
- dead_stimulator: never `decompression_confirmed`; a high `stimulation_failure` alarm; the sweeps
  without a delivered stimulus `not_assessable` (stimulus_unconfirmed);
- current_spread: the sweeps with a direct response `not_assessable` (direct_response), none
  counted present; a `direct_response` alarm; no termination_acceptable / explore_further;
- reappearance: confirmed after decompression_complete, then a high-priority `amr_reappeared`
  superseding the confirmation, and never `termination_acceptable` after it;
- control_disappearance: `decompression_confirmed` only after `decompression_complete`, nothing
  but provisional `evaluating` before it, never termination_acceptable;
- persists: the band's verdict (termination_acceptable, HIGH patient) only after
  `decompression_complete`; never confirmed;
- every decision carries `synthetic: true`.
"""

from __future__ import annotations

import pytest

from .stack import Run

CASES = ("control_disappearance", "noise_rise", "dead_stimulator", "current_spread", "reappearance", "persists")
VERDICTS = ("decompression_confirmed", "termination_acceptable", "explore_further", "check_decompression")


def completed(run: Run) -> None:
    """The replay itself went right: the stack ended by itself, the file was read to its end, and the
    patient entered is in the HIGH band (so a wrong stop-advice would have been given)."""
    assert run.returncode == 0, f"{run.case}: amrwatch up exited {run.returncode}\n{run.stderr[-3000:]}"
    ends = run.of("session_end")
    assert ends and ends[-1]["n_stimuli"] == len(run.truth["stimuli"]), ends
    assert [e["stage"] for e in run.of("stage")] == [s["stage"] for s in run.truth["stages"]]
    preds = run.of("prediction")
    assert preds, f"{run.case}: no prediction (factors reply: {run.factors_reply})\n{run.summary()}"
    assert all(p["band"] == "high" for p in preds), [(p["probability"], p["band"]) for p in preds]


def chain(run: Run, decision: dict) -> list[int]:
    """decision_ids `decision` replaces, directly or through the decisions in between."""
    by_id = {d["decision_id"]: d for d in run.decisions}
    out, cur = [], decision
    while cur["supersedes"] is not None:
        out.append(cur["supersedes"])
        cur = by_id[cur["supersedes"]]
    return out


def before_complete_only_provisional(run: Run) -> None:
    """Until `decompression_complete` the surgeon is still working: status, never a verdict."""
    complete = run.stage_position("decompression_complete")
    early = [d for d in run.decisions if run.position(d) < complete]
    wrong = [d for d in early if d["kind"] != "evaluating" or not d["provisional"]]
    assert not wrong, (f"{run.case}: decisions before decompression_complete must be provisional `evaluating`; got "
                       f"{[(d['kind'], d['provisional']) for d in wrong]}\n{run.summary()}")


@pytest.mark.parametrize("case", CASES)
def test_every_decision_is_marked_synthetic(stack_run, case):
    run = stack_run(case)
    completed(run)
    assert run.decisions, run.summary()
    for d in run.decisions:
        assert d["synthetic"] is True and d["notice"] == "synthetic — not for clinical use", d


def test_control_confirmed_only_after_decompression_complete(stack_run):
    run = stack_run("control_disappearance")
    completed(run)
    confirmed = [d for d in run.decisions if d["kind"] == "decompression_confirmed"]
    assert confirmed, f"the control's disappearance was never confirmed\n{run.summary()}"
    assert run.position(confirmed[0]) > run.stage_position("decompression_complete"), run.summary()
    assert not confirmed[0]["provisional"]
    before_complete_only_provisional(run)
    assert not {"termination_acceptable", "explore_further"} & set(run.kinds()), run.summary()
    assert run.of("amr_course")[-1]["course"] == "disappeared_after_decompression"


def test_noise_rise_is_never_read_as_a_disappearance(stack_run):
    run = stack_run("noise_rise")
    completed(run)
    assert "decompression_confirmed" not in run.kinds(), run.summary()
    assert run.of("amr_course")[-1]["course"] != "disappeared_after_decompression"


def test_noise_rise_raises_a_recording_quality_alarm_and_its_sweeps_are_not_assessable(stack_run):
    run = stack_run("noise_rise")
    completed(run)
    assert run.alarms("recording_quality"), f"no recording_quality alarm\n{run.summary()}"
    noisy = run.measurements(run.truth["events"]["noise_high_s"] + 1.0)
    assert len(noisy) > 150
    absent = [m for m in noisy if m["assessment"] == "absent"]
    assert not absent, f"{len(absent)} sweeps under 15 µV noise counted as absent (the AMR is 80 µV): {absent[:2]}"
    nass = [m for m in noisy if m["assessment"] == "not_assessable" and m["assessment_reason"] == "noise_too_high"]
    assert len(nass) >= 0.8 * len(noisy), (len(nass), len(noisy))
    assert all(m["detection_limit_uv"] is not None and m["detection_limit_uv"] > 80.0 for m in nass)


def test_dead_stimulator_is_never_read_as_a_disappearance(stack_run):
    run = stack_run("dead_stimulator")
    completed(run)
    assert "decompression_confirmed" not in run.kinds(), run.summary()
    assert run.of("amr_course")[-1]["course"] != "disappeared_after_decompression"


def test_dead_stimulator_raises_a_high_stimulation_failure_alarm(stack_run):
    run = stack_run("dead_stimulator")
    completed(run)
    alarms = run.alarms("stimulation_failure")
    assert alarms and alarms[0]["priority"] == "high", f"no high stimulation_failure alarm\n{run.summary()}"
    dead = run.truth["events"]["stimulator_dead_s"]
    after = run.measurements(dead + 0.1)
    assert len(after) > 150
    assert all(m["assessment"] == "not_assessable" and m["assessment_reason"] == "stimulus_unconfirmed"
               and m["stimulus_confirmed"] is False for m in after), [
        (m["stimulus_index"], m["assessment"], m["assessment_reason"], m["stimulus_confirmed"]) for m in after[:6]]
    before = run.measurements(5.0, dead - 0.1)
    assert all(m["stimulus_confirmed"] is True for m in before), "delivered stimuli must be confirmed"


def test_current_spread_is_not_counted_as_an_amr(stack_run):
    run = stack_run("current_spread")
    completed(run)
    spread = run.measurements(run.truth["events"]["spread_s"] + 0.1)
    assert len(spread) > 150
    present = [m for m in spread if m["assessment"] == "present"]
    assert not present, f"{len(present)} sweeps with a direct response from current spread counted present"
    flagged = [m for m in spread if m["assessment"] == "not_assessable" and m["assessment_reason"] == "direct_response"]
    assert len(flagged) >= 0.9 * len(spread), (len(flagged), len(spread))
    assert run.alarms("direct_response"), f"no direct_response alarm\n{run.summary()}"


def test_current_spread_gives_no_advice_from_the_direct_response(stack_run):
    run = stack_run("current_spread")
    completed(run)
    # Whatever the verdict words, none may rest on sweeps whose "response" is the direct response.
    assert not set(VERDICTS) & set(run.kinds()), run.summary()


def test_reappearance_after_confirmation_is_escalated(stack_run):
    run = stack_run("reappearance")
    completed(run)
    confirmed = [d for d in run.decisions if d["kind"] == "decompression_confirmed"]
    assert confirmed and run.position(confirmed[0]) > run.stage_position("decompression_complete"), run.summary()
    back = [d for d in run.decisions if d["kind"] == "amr_reappeared"]
    assert back, f"no amr_reappeared decision\n{run.summary()}"
    d = back[0]
    assert d["priority"] == "high" and not d["provisional"], d
    assert run.position(d) > run.position(confirmed[0])
    assert confirmed[0]["decision_id"] in chain(run, d), f"amr_reappeared does not supersede the confirmation\n" \
                                                         f"{run.summary()}"
    later = [x["kind"] for x in run.decisions if run.position(x) > run.position(d)]
    assert "termination_acceptable" not in later and "decompression_confirmed" not in later, run.summary()
    assert "termination_acceptable" not in run.kinds(), run.summary()


def test_persisting_amr_gets_its_band_verdict_only_after_decompression_complete(stack_run):
    run = stack_run("persists")
    completed(run)
    assert "decompression_confirmed" not in run.kinds(), run.summary()
    verdict = [d for d in run.decisions if d["kind"] in VERDICTS]
    assert verdict and verdict[0]["kind"] == "termination_acceptable", run.summary()
    assert run.position(verdict[0]) > run.stage_position("decompression_complete"), run.summary()
    before_complete_only_provisional(run)
    assert run.of("amr_course")[-1]["course"] == "persisted"
