"""The decision rules of DOMAIN.md, one story at a time."""

import datetime as dt

import pytest

from amrwatch.proto.messages import Decision
from amrwatch.services.predictor.decision import DecisionEngine, DecisionSettings

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

    def sweeps(self, n, rejected=False, present=True, stage=None):
        out = []
        for _ in range(n):
            for ch in self.channels:
                out += self.e.on_measurement(self.i, ch, rejected, present, stage)
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
        assert self.stage("decompression") == []


def only(decisions, kind=None):
    assert len(decisions) == 1, decisions
    if kind:
        assert decisions[0]["kind"] == kind, decisions[0]
    return decisions[0]


def test_disappearance_is_confirmed_only_after_the_window():
    r = Run()
    r.to_decompression()
    r.sweeps(8, present=False)
    assert r.state("disappeared", 0.0) == []
    assert r.sweeps(11, present=False) == [], "19 good sweeps: still waiting"
    d = only(r.sweeps(1, present=False), "decompression_confirmed")
    assert d["priority"] == "low" and d["supersedes"] is None
    ev = d["evidence"]
    assert ev["good_sweeps"] == 20 and ev["window_sweeps"] == 20 and ev["amr_state"] == "disappeared"
    assert ev["stage"] == "decompression" and ev["pct_of_baseline"] == 0.0 and ev["probability"] == 0.03
    assert "disappeared after decompression" in d["rationale"]


def test_window_counts_good_sweeps_only_and_is_a_setting():
    r = Run(DecisionSettings(evaluation_sweeps=5))
    r.to_decompression()
    r.state("disappeared", 0.0)
    assert r.sweeps(8, rejected=True) == [], "diathermy sweeps do not count"
    assert r.sweeps(4, present=False) == []
    only(r.sweeps(1, present=False), "decompression_confirmed")


def test_sweeps_recorded_before_the_decompression_mark_do_not_count_however_late_they_arrive():
    """The analyzer publishes a sweep's measurement ~50 ms after its stimulus, so sweeps recorded just
    before the mark arrive after it: their own stage (by sample index) keeps them out of the window."""
    r = Run()
    r.to_decompression(HIGH)
    assert r.sweeps(3, stage="arachnoid_dissection") == [], "recorded before the mark"
    assert r.sweeps(19, stage="decompression") == [], "19 good sweeps of the window"
    d = only(r.sweeps(1, stage="decompression"), "termination_acceptable")
    assert d["evidence"]["good_sweeps"] == 20
    # Without the stage (an older publisher), arrival decides: the same 3 + 17 arrivals would have sufficed.
    old = Run()
    old.to_decompression(HIGH)
    old.sweeps(3)
    only(old.sweeps(17), "termination_acceptable")


def test_persistence_with_a_low_prediction_means_explore_further():
    r = Run()
    r.to_decompression(LOW)
    r.state("diminished", 80.0)
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
    d = only(r.sweeps(20), "termination_acceptable")
    assert d["priority"] == "medium" and "seen to be adequate" in d["rationale"] and "0.27" in d["rationale"]


def test_intermediate_prediction_is_indeterminate():
    r = Run()
    r.to_decompression(MID)
    d = only(r.sweeps(20), "indeterminate")
    assert d["priority"] == "medium" and "between the cut-offs" in d["rationale"]


def test_no_advice_without_a_prediction_and_the_missing_inputs_are_named():
    r = Run()
    r.to_decompression(prediction=None)
    assert r.e.on_prediction_unavailable(["retraction_mm", "displacement"]) == []
    d = only(r.sweeps(20), "indeterminate")
    assert "because retraction_mm and displacement have not been entered" in d["rationale"]
    assert d["evidence"]["probability"] is None and d["evidence"]["missing_inputs"] == "retraction_mm,displacement"
    later = only(r.predict(**LOW), "explore_further")
    assert later["supersedes"] == d["decision_id"]


def test_never_any_prediction_names_all_seven_inputs():
    r = Run()
    r.to_decompression(prediction=None)
    d = only(r.sweeps(20), "indeterminate")
    assert "duration_years" in d["rationale"] and "displacement" in d["rationale"]


def test_reappearance_supersedes_the_confirmation_and_disappearance_supersedes_again():
    r = Run()
    r.to_decompression(LOW)
    r.state("disappeared", 0.0)
    confirmed = only(r.sweeps(20, present=False), "decompression_confirmed")
    back = only(r.state("reappeared", 60.0, channels=["mentalis"]), "explore_further")
    assert back["supersedes"] == confirmed["decision_id"] and back["evidence"]["trigger"] == "amr_reappeared"
    assert back["evidence"]["amr_state"] == "reappeared" and back["evidence"]["channels_disappeared"] == 1
    again = only(r.state("disappeared", 0.0, channels=["mentalis"]), "decompression_confirmed")
    assert again["supersedes"] == back["decision_id"]
    assert [d["decision_id"] for d in r.e.active()] == [again["decision_id"]]


def test_a_changed_prediction_supersedes_and_an_unchanged_one_does_not():
    r = Run()
    r.to_decompression(LOW)
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
    r.stage("decompression")
    d = only(r.sweeps(20), "termination_acceptable")
    assert d["supersedes"] == back["decision_id"]


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


def test_closure_before_the_window_ends_evaluates_now():
    r = Run()
    r.to_decompression(LOW)
    r.sweeps(7)
    d = only(r.stage("closure"), "explore_further")
    assert d["evidence"]["good_sweeps"] == 7 and d["evidence"]["trigger"] == "window_cut_short"


def test_a_second_decompression_is_judged_again():
    r = Run()
    r.to_decompression(LOW)
    first = only(r.sweeps(20), "explore_further")
    assert r.stage("decompression") == []
    r.sweeps(5)
    r.state("disappeared", 0.0)
    assert r.sweeps(14, present=False) == []
    d = only(r.sweeps(1, present=False), "decompression_confirmed")
    assert d["supersedes"] == first["decision_id"]


def test_prognosis_when_the_amr_persisted_cites_the_literature():
    r = Run()
    r.to_decompression(HIGH)
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
    r.sweeps(20)
    r.predict(**LOW)
    r.state("disappeared", 0.0)
    r.state("reappeared", 40.0)
    r.stage("closure")
    r.stage("end")
    assert len(r.log) >= 4
    ids = [d["decision_id"] for d in r.log]
    assert ids == sorted(set(ids))
    for i, d in enumerate(r.log):
        msg = Decision.model_validate({
            "type": "decision", "schema_version": 1, "session_id": "s1", "seq": i, "publisher": "predictor",
            "instance": "0123abcd", "ts_utc": dt.datetime.now(dt.timezone.utc), **d,
        })
        assert msg.rationale.count(". ") == 0 and msg.rationale.endswith("."), "one sentence"


@pytest.mark.parametrize("call,match", [
    (lambda e: e.on_stage("opening"), "stage must be one of baseline, .*; got 'opening'"),
    (lambda e: e.on_amr_state("m", "gone"), "state must be one of present, .*; got 'gone'"),
    (lambda e: e.on_amr_state("m", "present", -3.0), r"pct_of_baseline must be >= 0 \(%\); got -3.0"),
    (lambda e: e.on_prediction(1.5, "low", 0.1, 0.3), r"probability must be in \[0, 1\]; got 1.5"),
    (lambda e: e.on_prediction(0.5, "medium", 0.1, 0.3), "band must be one of low, intermediate, high"),
    (lambda e: e.on_measurement(-1, "m", False), "stimulus_index must be a whole number >= 0; got -1"),
    (lambda e: e.on_measurement(1, "m", False, True, "lunch"), "stage must be one of baseline, .*; got 'lunch'"),
    (lambda e: e.on_course("vanished"), "course must be one of never_detected"),
])
def test_bad_inputs_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call(DecisionEngine())


def test_settings_are_validated():
    with pytest.raises(ValueError, match=r"evaluation_sweeps must be a whole number in \[1, 10000\] sweeps; got 0"):
        DecisionSettings(evaluation_sweeps=0)
    with pytest.raises(ValueError, match="recovery_fraction must be below rejection_fraction"):
        DecisionSettings(rejection_fraction=0.3, recovery_fraction=0.4)


def test_recovery_from_rejected_sweeps_does_not_forget_an_absent_amr():
    """Never detected, then diathermy, then clean sweeps again: still not monitorable."""
    from amrwatch.services.predictor.decision import DecisionEngine, DecisionSettings

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
