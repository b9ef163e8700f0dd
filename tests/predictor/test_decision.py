"""The decision rules of docs/domain.md, one story at a time."""

import datetime as dt

import pytest

from amrwatch.proto.messages import Decision, DecisionBody, validate_body
from amrwatch.services.predictor.decision import DecisionEngine as _Engine
from amrwatch.services.predictor.decision import DecisionSettings


def _as_dicts(method):
    def call(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        for d in out:  # built unchecked by the engine: each must be a valid decision body as it stands
            assert isinstance(d, DecisionBody) and validate_body("decision", d.fields()) == d, d
        return [d.fields() for d in out]
    return call


class DecisionEngine(_Engine):
    """The engine, its decisions (typed bodies) read back as dicts for these stories."""

    on_stage = _as_dicts(_Engine.on_stage)
    on_amr_state = _as_dicts(_Engine.on_amr_state)
    on_measurement = _as_dicts(_Engine.on_measurement)
    on_prediction = _as_dicts(_Engine.on_prediction)
    on_prediction_unavailable = _as_dicts(_Engine.on_prediction_unavailable)
    on_course = _as_dicts(_Engine.on_course)
    on_amr_unknown = _as_dicts(_Engine.on_amr_unknown)
    active = _as_dicts(_Engine.active)

LOW = dict(probability=0.03, band="low", cutoff_low=0.11, cutoff_high=0.27)
MID = dict(probability=0.18, band="intermediate", cutoff_low=0.11, cutoff_high=0.27)
HIGH = dict(probability=0.93, band="high", cutoff_low=0.11, cutoff_high=0.27)


class Run:
    """Drives an engine like the service will: stimuli numbered on, two channels."""

    def __init__(self, settings=None, channels=("mentalis", "orbicularis_oculi")):
        self.e = DecisionEngine(settings)
        self.i = 0
        self.channels = channels
        self.log: list[dict] = []

    def sweeps(self, n, rejected=False, present=True, stage=None, assessment=None, pct=None, channels=None):
        out = []
        for _ in range(n):
            for ch in channels or self.channels:
                a = assessment(ch) if callable(assessment) else assessment
                out += self.e.on_measurement(self.i, ch, rejected, present, stage, assessment=a, pct_of_baseline=pct)
            self.i += 1
        self.log += out
        return out

    def stage(self, s):
        out = self.e.on_stage(s)
        self.log += out
        return out

    def state(self, s, pct=None, channels=None):
        out = []
        for ch in channels or self.channels:
            out += self.e.on_amr_state(ch, s, pct)
        self.log += out
        return out

    def predict(self, **kw):
        out = self.e.on_prediction(**kw)
        self.log += out
        return out

    def to_decompression(self, prediction=LOW):
        self.stage("baseline")
        self.state("present", 100.0)
        self.sweeps(15)
        for s in ("incision", "dural_opening", "csf_release", "retraction", "arachnoid_dissection"):
            assert self.stage(s) == []
            self.sweeps(5)
        if prediction:
            assert self.predict(**prediction) == [], "no decision before decompression"
        status = only(self.stage("decompression"), "evaluating")
        assert status["provisional"] and status["priority"] == "info"

    def complete(self):
        """The surgeon marks the decompression complete: the evaluation window opens."""
        out = self.stage("decompression_complete")
        assert [d["kind"] for d in out] in ([], ["evaluating"]), out
        return out


def only(decisions, kind=None):
    assert len(decisions) == 1, decisions
    if kind:
        assert decisions[0]["kind"] == kind, decisions[0]
    return decisions[0]


def test_a_disappearance_during_decompression_is_only_evaluating_until_the_window_after_the_complete_mark():
    """The hazard: a true disappearance 15 s into decompression used to be confirmed 20 sweeps later, while
    the surgeon was still working. Now the verdict waits for decompression_complete + the window."""
    r = Run()
    r.to_decompression(HIGH)  # old rule: 20 sweeps after the decompression *start* → termination_acceptable
    r.sweeps(25, present=True, stage="decompression")
    status = only(r.state("disappeared", 0.0)[-1:], "evaluating")
    assert status["provisional"] and status["priority"] == "info" and status["synthetic"] is True
    assert "decompression under way" in status["rationale"] and "AMR absent on all 2 channels" in status["rationale"]
    assert r.sweeps(60, present=False, stage="decompression") == [], "no verdict while the surgeon works"
    r.complete()
    assert r.sweeps(19, present=False, stage="decompression_complete") == [], "19 assessable sweeps: waiting"
    d = only(r.sweeps(1, present=False, stage="decompression_complete"), "decompression_confirmed")
    assert d["priority"] == "low" and not d["provisional"] and d["supersedes"] == r.log[-2]["decision_id"]
    ev = d["evidence"]
    assert ev["assessable_sweeps"] == 20 and ev["window_sweeps"] == 20 and ev["amr_state"] == "disappeared"
    assert ev["window_from"] == "decompression_complete" and ev["window_to"] == "window_complete"
    assert ev["stage"] == "decompression_complete" and ev["pct_of_baseline"] == 0.0 and ev["probability"] == 0.93
    assert "over an evaluation window of 20 assessable sweeps from the decompression_complete mark" in d["rationale"]
    assert "criterion: complete disappearance" in d["rationale"]
    kinds = [x["kind"] for x in r.log]
    assert "termination_acceptable" not in kinds and set(kinds) == {"evaluating", "decompression_confirmed"}


def test_status_is_published_on_stage_and_state_changes_not_on_every_sweep():
    r = Run(channels=("MENT", "OOR", "OOC"))
    r.to_decompression()
    assert r.state("diminished", 40.0, channels=["MENT"]) == [], "the largest channel is unchanged: no news"
    d = only(r.state("diminished", 30.0, channels=["OOR", "OOC"])[-1:], "evaluating")
    assert "Evaluating: decompression under way; AMR at 40% of baseline (MENT), 3 of 3" in d["rationale"]
    d = only(r.state("disappeared", 0.0, channels=["OOC"]), "evaluating")
    assert "AMR at 40% of baseline (MENT), 2 of 3 channels present" in d["rationale"]
    assert d["rationale"].count(". ") == 0 and d["rationale"].endswith(".")
    assert r.sweeps(30, present=True, stage="decompression") == [], "sweeps alone say nothing"
    d = only(r.complete(), "evaluating")
    assert "decompression marked complete, evaluation window 0 of 20 assessable sweeps" in d["rationale"]


def test_window_counts_assessable_sweeps_only_and_is_a_setting():
    r = Run(DecisionSettings(evaluation_sweeps=5))
    r.to_decompression()
    r.state("disappeared", 0.0)
    r.complete()
    assert r.sweeps(8, rejected=True) == [], "diathermy sweeps do not count"
    assert r.sweeps(8, assessment="not_assessable") == [], "noise too high to see the AMR: does not count"
    # one channel with an AMR unreadable makes the sweep unassessable even if the other is absent
    assert r.sweeps(8, assessment=lambda ch: "absent" if ch == "mentalis" else "not_assessable") == []
    assert r.sweeps(4, present=False) == []
    d = only(r.sweeps(1, present=False), "decompression_confirmed")
    assert d["evidence"]["assessable_sweeps"] == 5


def test_sweeps_recorded_before_the_mark_do_not_count_however_late_they_arrive():
    """The analyzer publishes a sweep's measurement ~50 ms after its stimulus, so sweeps recorded just
    before the mark arrive after it: their own stage (by sample index) keeps them out of the window."""
    r = Run()
    r.to_decompression(HIGH)
    r.complete()
    assert r.sweeps(3, stage="decompression") == [], "recorded before the mark"
    assert r.sweeps(19, stage="decompression_complete") == [], "19 sweeps of the window"
    d = only(r.sweeps(1, stage="closure"), "termination_acceptable")
    assert d["evidence"]["assessable_sweeps"] == 20


def test_a_channel_without_an_amr_state_waits_for_the_next_stimulus():
    """With alternating directions a stimulus reaches only some channels: it is counted once the next begins."""
    r = Run(DecisionSettings(evaluation_sweeps=3))
    r.to_decompression(HIGH)
    r.complete()
    assert r.sweeps(3, channels=["mentalis"]) == [], "orbicularis_oculi has an AMR but did not report"
    only(r.sweeps(1, channels=["orbicularis_oculi"]), "termination_acceptable")


def test_persistence_with_a_low_prediction_means_explore_further():
    r = Run()
    r.to_decompression(LOW)
    r.state("diminished", 80.0)
    r.complete()
    d = only(r.sweeps(20), "explore_further")
    assert d["priority"] == "high"
    assert "p < 0.01" not in d["rationale"] and "p 0.03" in d["rationale"] and "0.11 cut-off" in d["rationale"]
    assert "missed" in d["rationale"]
    ev = d["evidence"]
    assert (ev["probability"], ev["band"], ev["cutoff_low"], ev["amr_state"], ev["pct_of_baseline"]) == \
        (0.03, "low", 0.11, "diminished", 80.0)


def test_persistence_with_a_high_prediction_allows_termination():
    r = Run()
    r.to_decompression(HIGH)
    r.complete()
    d = only(r.sweeps(20), "termination_acceptable")
    assert d["priority"] == "medium" and "seen to be adequate" in d["rationale"] and "0.27" in d["rationale"]


def test_intermediate_prediction_is_indeterminate():
    r = Run()
    r.to_decompression(MID)
    r.complete()
    d = only(r.sweeps(20), "indeterminate")
    assert d["priority"] == "medium" and "between the cut-offs" in d["rationale"]


def test_no_advice_without_a_prediction_and_the_missing_inputs_are_named():
    r = Run()
    r.to_decompression(prediction=None)
    assert r.e.on_prediction_unavailable(["retraction_mm", "displacement"]) == []
    r.complete()
    d = only(r.sweeps(20), "indeterminate")
    assert "because retraction_mm and displacement have not been entered" in d["rationale"]
    assert d["evidence"]["probability"] is None and d["evidence"]["missing_inputs"] == "retraction_mm,displacement"
    later = only(r.predict(**LOW), "explore_further")
    assert later["supersedes"] == d["decision_id"]


def test_never_any_prediction_names_all_seven_inputs():
    r = Run()
    r.to_decompression(prediction=None)
    r.complete()
    d = only(r.sweeps(20), "indeterminate")
    assert "duration_years" in d["rationale"] and "displacement" in d["rationale"]


def test_a_baseline_without_an_amr_gives_no_prediction_and_the_reason():
    r = Run()
    r.to_decompression(prediction=None)
    reason = "the baseline showed no detectable AMR (0 µV), which is not an amplitude"
    assert r.e.on_prediction_unavailable(["amr_amplitude_uv"], reason) == []
    r.complete()
    d = only(r.sweeps(20), "indeterminate")
    assert f"no prediction is available because {reason}." in d["rationale"]
    assert d["evidence"]["prediction_unavailable_reason"] == reason and d["evidence"]["probability"] is None


def test_reappearance_after_confirmation_is_high_priority_and_termination_is_never_given_after():
    r = Run()
    r.to_decompression(HIGH)
    r.state("disappeared", 0.0)
    r.complete()
    confirmed = only(r.sweeps(20, present=False), "decompression_confirmed")
    back = only(r.state("reappeared", 60.0, channels=["mentalis"]), "amr_reappeared")
    assert back["priority"] == "high" and back["supersedes"] == confirmed["decision_id"]
    assert "prosthesis may have slipped or the vessel returned" in back["rationale"]
    assert back["evidence"]["trigger"] == "amr_reappeared" and back["evidence"]["reappeared_in_session"] is True
    assert r.predict(**dict(HIGH, probability=0.95)) == [], "a new prediction does not quietly replace it"
    # the surgeon re-inspects, marks the decompression complete again; the AMR persists, p is high
    r.stage("decompression")
    r.complete()
    d = only(r.sweeps(20), "check_decompression")
    assert d["priority"] == "high" and "termination is not advised after a reappearance" in d["rationale"]
    r.stage("closure")
    r.stage("end")
    assert "termination_acceptable" not in [x["kind"] for x in r.log]


def test_a_new_disappearance_after_a_reappearance_is_confirmed_after_a_new_mark_and_says_so():
    r = Run()
    r.to_decompression(LOW)
    r.state("disappeared", 0.0)
    r.complete()
    only(r.sweeps(20, present=False), "decompression_confirmed")
    back = only(r.state("reappeared", 60.0, channels=["mentalis"]), "amr_reappeared")
    d = only(r.state("disappeared", 0.0, channels=["mentalis"]), "evaluating")
    assert d["supersedes"] == back["decision_id"] and "termination will not be advised" in d["rationale"]
    assert r.sweeps(30, present=False) == [], "no window until a new mark"
    r.complete()
    again = only(r.sweeps(20, present=False), "decompression_confirmed")
    assert "after it had reappeared earlier in this session" in again["rationale"]


def test_reappearance_during_decompression_is_high_priority_too():
    r = Run()
    r.to_decompression(HIGH)
    r.state("disappeared", 0.0)
    back = only(r.state("present", 90.0, channels=["mentalis"]), "amr_reappeared")
    assert back["priority"] == "high"
    r.complete()
    assert only(r.sweeps(20), "check_decompression")["priority"] == "high"


def test_the_displacement_counterfactual_turns_termination_into_check_decompression():
    """The hazard: slight displacement (1) raises p into the high band → 'termination acceptable', i.e. the
    less the vessel was moved, the sooner the advice to stop. Before termination the engine needs the
    prediction with a marked displacement to stay high."""
    r = Run()
    ad = {"probability": 0.08, "band": "low", "inputs": "displacement marked (3) instead of slight (1)"}
    r.to_decompression(dict(HIGH, adequate=ad))
    r.complete()
    d = only(r.sweeps(20), "check_decompression")
    assert d["priority"] == "medium" and "p 0.93" in d["rationale"] and "p would be 0.08" in d["rationale"]
    assert "with displacement marked (3) instead of slight (1)" in d["rationale"]
    assert "confirm the decompression is adequate before ending" in d["rationale"]
    ev = d["evidence"]
    assert (ev["probability"], ev["adequate_probability"], ev["adequate_band"]) == (0.93, 0.08, "low")
    # the counterfactual still high: termination stays acceptable and says both figures
    r2 = Run()
    r2.to_decompression(dict(HIGH, adequate=dict(ad, probability=0.5, band="high")))
    r2.complete()
    t = only(r2.sweeps(20), "termination_acceptable")
    assert "p 0.93" in t["rationale"] and "still p 0.50 with displacement marked" in t["rationale"]


def test_an_extrapolated_band_is_not_trusted():
    r = Run()
    r.to_decompression(dict(HIGH, extrapolated={"retraction_mm": "retraction_mm 35 (trained on 3–14.5)"}))
    r.complete()
    d = only(r.sweeps(20), "indeterminate")
    assert "the model was not trained on such values" in d["rationale"] and "retraction_mm 35" in d["rationale"]
    assert d["evidence"]["extrapolated"] == "retraction_mm"
    # a disappearance does not rest on the model: still confirmed
    r2 = Run()
    r2.to_decompression(dict(LOW, extrapolated=["duration_years"]))
    r2.state("disappeared", 0.0)
    r2.complete()
    only(r2.sweeps(20, present=False), "decompression_confirmed")


def test_the_reduction_criterion_is_off_by_default_and_confirms_a_large_reduction_when_set():
    for settings, kind in ((DecisionSettings(), "explore_further"),
                           (DecisionSettings(reduction_criterion_pct=86.5), "decompression_confirmed")):
        r = Run(settings)
        r.to_decompression(LOW)
        r.state("diminished", 10.0)
        r.complete()
        d = only(r.sweeps(20, pct=10.0), kind)
        assert d["evidence"]["window_pct_of_baseline"] == 10.0
    assert "reduction of at least 86.5%" in d["rationale"] and "fell to 10.0% of baseline" in d["rationale"]
    r = Run(DecisionSettings(reduction_criterion_pct=86.5))
    r.to_decompression(LOW)
    r.state("diminished", 20.0)
    r.complete()
    only(r.sweeps(20, pct=20.0), "explore_further")


def test_a_changed_prediction_supersedes_and_an_unchanged_one_does_not():
    r = Run()
    r.to_decompression(LOW)
    r.complete()
    first = only(r.sweeps(20), "explore_further")
    assert r.predict(**LOW) == []
    d = only(r.predict(**HIGH), "termination_acceptable")
    assert d["supersedes"] == first["decision_id"] and d["evidence"]["trigger"] == "prediction_changed"


def test_early_disappearance_and_its_aftermath():
    r = Run()
    r.stage("baseline")
    r.state("present", 100.0)
    r.sweeps(15)
    r.stage("dural_opening")
    r.state("diminished", 50.0)
    r.stage("csf_release")
    d = only(r.state("disappeared", 0.0)[-1:], "early_disappearance")
    assert d["priority"] == "medium" and "csf release" in d["rationale"] and "direct inspection" in d["rationale"]
    assert d["evidence"]["stage"] == "csf_release"
    r.predict(**LOW)
    r.stage("decompression")
    assert r.sweeps(25, present=False) == [], "a gone AMR cannot judge this decompression"
    r.stage("closure")
    p = only(r.stage("end"), "prognosis")
    assert p["evidence"]["course"] == "disappeared_before_decompression"


def test_reappearance_before_decompression_supersedes_the_early_disappearance():
    r = Run()
    r.stage("baseline")
    r.state("present", 100.0)
    r.sweeps(12)
    r.stage("csf_release")
    early = only(r.state("disappeared", 0.0)[-1:], "early_disappearance")
    back = only(r.state("present", 90.0, channels=["mentalis"]), "indeterminate")
    assert back["supersedes"] == early["decision_id"] and back["priority"] == "low"
    r.predict(**HIGH)
    status = only(r.stage("decompression"), "evaluating")
    assert status["supersedes"] == back["decision_id"]
    r.complete()
    d = only(r.sweeps(20), "termination_acceptable")
    assert d["supersedes"] == r.log[-2]["decision_id"]


def test_never_detected_is_not_monitorable():
    r = Run()
    r.stage("baseline")
    r.sweeps(15, present=False)
    d = only(r.stage("incision"), "amr_not_monitorable")
    assert d["priority"] == "medium" and "neuromuscular block" in d["rationale"]
    assert d["evidence"]["reason"] == "never_detected"
    assert r.e.on_course("never_detected") == [], "said once"


def test_a_detected_amr_is_not_called_never_detected():
    r = Run()
    r.stage("baseline")
    r.sweeps(15, present=True)  # the analyzer has not sent a state yet
    assert r.stage("incision") == []


def test_a_stage_marker_that_overtakes_the_analyzer_does_not_call_a_present_amr_never_detected():
    """The marker comes straight from the acquirer, the measurements a hop later through the analyzer: under
    load (or a replay at speed) the next stage can arrive while baseline sweeps are still on their way. Dated
    sweeps decide, not the marker's arrival."""
    r = Run()
    r.stage("baseline")
    r.sweeps(12, present=False, stage="baseline")  # the AMR is still building up in the first sweeps
    assert r.stage("incision") == [] or not any(d["kind"] == "amr_not_monitorable" for d in r.log)
    r.sweeps(5, present=True, stage="baseline")  # the rest of baseline, late
    r.sweeps(5, present=True, stage="incision")
    assert not any(d["kind"] == "amr_not_monitorable" for d in r.log), r.log


def test_dated_sweeps_after_baseline_without_an_amr_are_never_detected():
    r = Run()
    r.stage("baseline")
    r.sweeps(15, present=False, stage="baseline")
    r.stage("incision")
    d = only(r.sweeps(1, present=False, stage="incision"), "amr_not_monitorable")
    assert d["evidence"]["reason"] == "never_detected"


def test_too_many_rejected_sweeps_then_recovery():
    r = Run()
    r.stage("baseline")
    r.state("present", 100.0)
    r.sweeps(20)
    assert r.sweeps(9, rejected=True) == [], "9 of 20 is below half"
    d = only(r.sweeps(2, rejected=True), "amr_not_monitorable")
    assert "neuromuscular block" in d["rationale"] and d["evidence"]["reason"] == "rejected_sweeps"
    assert d["evidence"]["rejected_fraction"] >= 0.5
    assert r.sweeps(10) == [], "hysteresis: not recovered at 50%"
    rec = only(r.sweeps(6), "indeterminate")
    assert rec["supersedes"] == d["decision_id"] and rec["priority"] == "low"


def test_closure_cutting_the_window_short_states_the_real_count():
    r = Run()
    r.to_decompression(LOW)
    r.complete()
    r.sweeps(7)
    d = only(r.stage("closure"), "explore_further")
    ev = d["evidence"]
    assert ev["assessable_sweeps"] == 7 and ev["trigger"] == "closure" and ev["window_to"] == "closure"
    assert ("over 7 assessable sweeps from the decompression_complete mark to closure, which cut the 20-sweep "
            "window short") in d["rationale"]


def test_without_a_complete_mark_the_window_starts_at_closure():
    r = Run()
    r.to_decompression(HIGH)
    assert r.sweeps(40, stage="decompression") == []
    status = only(r.stage("closure"), "evaluating")
    assert "closure began without a decompression_complete mark" in status["rationale"]
    r.sweeps(19, stage="closure")
    d = only(r.sweeps(1, stage="closure"), "termination_acceptable")
    assert d["evidence"]["window_from"] == "closure" and "decompression_complete was never marked" in d["rationale"]


def test_end_before_any_window_says_so_and_gives_no_verdict():
    r = Run()
    r.to_decompression(HIGH)
    r.sweeps(40, stage="decompression")
    out = r.stage("end")
    d = only([x for x in out if x["kind"] != "prognosis"], "indeterminate")
    assert "the session ended before decompression_complete or closure was marked" in d["rationale"]
    assert "No assessable sweep" in d["rationale"]


def test_a_window_without_assessable_sweeps_cannot_confirm():
    """Noise or a dead stimulator after the mark: the AMR 'disappeared' but no sweep could show it."""
    r = Run()
    r.to_decompression(LOW)
    r.state("disappeared", 0.0)
    r.complete()
    r.sweeps(30, assessment="not_assessable")
    d = only(r.stage("closure"), "indeterminate")
    assert d["evidence"]["assessable_sweeps"] == 0 and "judge it by sight" in d["rationale"]


def test_a_second_decompression_is_judged_again():
    r = Run()
    r.to_decompression(LOW)
    r.complete()
    first = only(r.sweeps(20), "explore_further")
    status = only(r.stage("decompression"), "evaluating")
    assert status["supersedes"] == first["decision_id"]
    r.sweeps(5)
    r.state("disappeared", 0.0)
    r.complete()
    assert r.sweeps(19, present=False) == []
    d = only(r.sweeps(1, present=False), "decompression_confirmed")
    assert d["supersedes"] == r.log[-2]["decision_id"]


def test_prognosis_when_the_amr_persisted_cites_the_literature():
    r = Run()
    r.to_decompression(HIGH)
    r.complete()
    r.sweeps(20)
    r.stage("closure")
    p = only(r.stage("end"), "prognosis")
    assert p["priority"] == "info" and p["evidence"]["course"] == "persisted"
    for text in ("about 3 months", "after 6–12 months", "41% vs 4% at 3 months", "24% vs 4% at 1 year"):
        assert text in p["rationale"]
    assert r.sweeps(30) == [] and r.e.on_amr_state("mentalis", "disappeared") == [], "nothing after end"
    corrected = only(r.e.on_course("disappeared_after_decompression"), "prognosis")
    assert corrected["supersedes"] == p["decision_id"] and "7% at discharge" in corrected["rationale"]


def test_every_decision_is_a_valid_decision_message():
    r = Run()
    r.to_decompression(prediction=None)
    r.complete()
    r.sweeps(20)
    r.predict(**LOW)
    r.state("disappeared", 0.0)
    r.state("reappeared", 40.0)
    r.stage("closure")
    r.stage("end")
    assert {"evaluating", "indeterminate", "explore_further", "amr_reappeared", "prognosis"} <= {d["kind"] for d in r.log}
    ids = [d["decision_id"] for d in r.log]
    assert ids == sorted(set(ids))
    for i, d in enumerate(r.log):
        msg = Decision.model_validate({
            "type": "decision", "schema_version": 1, "session_id": "s1", "seq": i, "publisher": "predictor",
            "instance": "0123abcd", "ts_utc": dt.datetime.now(dt.UTC), **d,
        })
        assert msg.rationale.count(". ") == 0 and msg.rationale.endswith("."), "one sentence"
        assert msg.synthetic is True and msg.notice == "synthetic — not for clinical use"
        assert msg.provisional == (msg.kind == "evaluating")


@pytest.mark.parametrize("call,match", [
    (lambda e: e.on_stage("opening"), "stage must be one of baseline, .*; got 'opening'"),
    (lambda e: e.on_amr_state("m", "gone"), "state must be one of present, .*; got 'gone'"),
    (lambda e: e.on_amr_state("m", "present", -3.0), r"pct_of_baseline must be >= 0 \(%\); got -3.0"),
    (lambda e: e.on_prediction(1.5, "low", 0.1, 0.3), r"probability must be in \[0, 1\]; got 1.5"),
    (lambda e: e.on_prediction(0.5, "medium", 0.1, 0.3), "band must be one of low, intermediate, high"),
    (lambda e: e.on_measurement(-1, "m", False), "stimulus_index must be a whole number >= 0; got -1"),
    (lambda e: e.on_measurement(1, "m", False, True, "lunch"), "stage must be one of baseline, .*; got 'lunch'"),
    (lambda e: e.on_course("vanished"), "course must be one of never_detected"),
    (lambda e: e.on_measurement(1, "m", False, assessment="maybe"), "assessment must be one of present, .*; got 'maybe'"),
    (lambda e: e.on_prediction(0.9, "high", 0.1, 0.3, adequate={"probability": 2.0, "band": "high"}),
     r"adequate.probability must be in \[0, 1\]; got 2.0"),
])
def test_bad_inputs_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call(DecisionEngine())


def test_decisions_carry_what_the_engine_was_told_about_the_model():
    e = DecisionEngine(synthetic=False, notice=None)
    e.on_stage("baseline")
    e.on_amr_state("m", "present", 100.0)
    d = only(e.on_stage("decompression"), "evaluating")
    assert d["synthetic"] is False and d["notice"] is None


def test_settings_are_validated():
    with pytest.raises(ValueError, match=r"evaluation_sweeps must be a whole number in \[1, 10000\] sweeps; got 0"):
        DecisionSettings(evaluation_sweeps=0)
    with pytest.raises(ValueError, match=r"reduction_criterion_pct must be null .* \[80, 100\] .*; got 50"):
        DecisionSettings(reduction_criterion_pct=50)
    with pytest.raises(ValueError, match=r"counterfactual_displacement must be a whole grade in \[2, 3\].*; got 1"):
        DecisionSettings(counterfactual_displacement=1)
    with pytest.raises(ValueError, match=r"counterfactual_retraction_mm must be in \[3, 9\] mm.*; got 14"):
        DecisionSettings(counterfactual_retraction_mm=14)
    wire = DecisionSettings(reduction_criterion_pct=86.5).to_wire()
    assert wire["reduction_criterion_pct"] == 86.5 and wire["counterfactual_displacement"] == 3
    assert wire["counterfactual_retraction_mm"] == 9.0
    assert DecisionSettings.from_wire(wire) == DecisionSettings(reduction_criterion_pct=86.5)
    with pytest.raises(ValueError, match="recovery_fraction must be below rejection_fraction"):
        DecisionSettings(rejection_fraction=0.3, recovery_fraction=0.4)


def test_recovery_from_rejected_sweeps_does_not_forget_an_absent_amr():
    """Never detected, then diathermy, then clean sweeps again: still not monitorable."""
    # DecisionEngine and DecisionSettings: this module's (decisions read as dicts)

    eng = DecisionEngine(DecisionSettings())
    eng.on_stage("baseline")
    i = 0
    for _ in range(30):
        eng.on_measurement(i, "MENT", rejected=False, present=False)
        i += 1
    out = eng.on_stage("incision")
    assert [d["kind"] for d in out] == ["amr_not_monitorable"]
    kinds = []
    for _ in range(20):
        kinds += [d["kind"] for d in eng.on_measurement(i, "MENT", rejected=True)]
        i += 1
    for _ in range(20):
        kinds += [(d["kind"], d["evidence"].get("reason")) for d in eng.on_measurement(i, "MENT", rejected=False,
                                                                                       present=False)]
        i += 1
    assert kinds[0] == "amr_not_monitorable"
    assert kinds[-1] == ("amr_not_monitorable", "never_detected")
    assert [d["kind"] for d in eng.active() if d["kind"] != "prognosis"] == ["amr_not_monitorable"]


def test_a_disappearance_after_a_persisting_verdict_is_judged_over_a_new_window():
    """The window judged a persisting AMR; a later disappearance was not in it, so it is not confirmed at once."""
    r = Run()
    r.to_decompression(LOW)
    r.complete()
    first = only(r.sweeps(20), "explore_further")
    d = only(r.state("disappeared", 0.0), "evaluating")
    assert d["supersedes"] == first["decision_id"] and "waiting for a new decompression_complete mark" in d["rationale"]
    assert r.sweeps(30, present=False) == []
    r.complete()
    only(r.sweeps(20, present=False), "decompression_confirmed")


def test_closure_waits_for_the_sweeps_recorded_before_it():
    """The analyzer's measurements lag the stage markers (at 40x replay by ~12 stimuli): sweeps recorded
    before closure that arrive after its marker still count; the first sweep recorded in closure cuts."""
    r = Run()
    r.to_decompression(LOW)
    r.complete()
    r.sweeps(5, stage="decompression_complete")
    assert r.stage("closure") == [], "not yet: sweeps of the window are on their way"
    assert r.sweeps(3, stage="decompression_complete") == []
    d = only(r.sweeps(1, stage="closure"), "explore_further")
    assert d["evidence"]["assessable_sweeps"] == 8 and d["evidence"]["window_to"] == "closure"
    # and a window that fills with the late sweeps is complete, not cut short
    r2 = Run(DecisionSettings(evaluation_sweeps=6))
    r2.to_decompression(LOW)
    r2.complete()
    r2.sweeps(5, stage="decompression_complete")
    r2.stage("closure")
    d2 = only(r2.sweeps(1, stage="decompression_complete"), "explore_further")
    assert d2["evidence"]["window_to"] == "window_complete"
