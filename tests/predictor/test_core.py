"""The predictor core with the shipped model: what the model may be fed, and what the stop advice rests on.

Each test replays the messages of a session (as the bus would deliver them) through PredictorCore,
the code the live service and `amrwatch verify` run.
"""

from __future__ import annotations

import datetime as dt

import pytest

from amrwatch.proto.messages import AmrCourse, AmrMeasurement, AmrState, Baseline, Factors, StageMarker, validate_body
from amrwatch.services.predictor.core import Output, PredictorCore, Refused
from amrwatch.services.predictor.decision import DecisionSettings
from amrwatch.services.predictor.model import LoadedModel

SID = "20261202T180000Z-core01"
#: p in the high band with a slight displacement, in the low band with a marked one (shipped model).
SLIGHT = {"duration_years": 4.0, "cohen_grade": 3, "carbamazepine": False, "vessels": 2, "retraction_mm": 9.0,
          "displacement": 1}


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return LoadedModel.load()


def pair(o: Output) -> tuple[str, dict]:
    """(type, body as a dict) of one core output; every body is checked to be a valid message body."""
    if isinstance(o, Refused):
        return "refused", {"reason": o.reason, "text": o.text}
    assert validate_body(o.TOPIC, o.fields()) == o, o  # built unchecked, it must pass validation unchanged
    return o.TOPIC, o.fields()


class Session:
    def __init__(self, model, settings=None):
        self.core = PredictorCore(model, settings)
        self.seq = 0
        self.out: list[tuple[str, dict]] = []
        self.stim = 0

    def send(self, cls, **body):
        self.seq += 1
        msg = cls.model_validate({"type": cls.TOPIC, "schema_version": 1, "session_id": SID, "seq": self.seq,
                                  "publisher": "tester", "instance": "0123abcd",
                                  "ts_utc": dt.datetime(2026, 12, 2, 18, tzinfo=dt.UTC), **body})
        got = [pair(o) for o in self.core.on_message(msg)]
        self.out += got
        return got

    def stage(self, s):
        return self.send(StageMarker, stage=s, source="operator", sample_index=None)

    def factors(self, **f):
        return self.send(Factors, factors=f, source="operator")

    def baseline(self, uv):
        return self.send(Baseline, channel="MENT", direction="ZYG", baseline_uv=uv, n_sweeps=20, amr_amplitude_uv=uv)

    def state(self, s, pct):
        return self.send(AmrState, channel="MENT", direction="ZYG", state=s, previous_state=None, stage=None,
                         stimulus_index=self.stim, pct_of_baseline=pct)

    def sweeps(self, n, stage, present=True):
        got = []
        for _ in range(n):
            got += self.send(
                AmrMeasurement, stimulus_index=self.stim, stim_time_s=float(self.stim), channel="MENT", direction="ZYG",
                p2p_uv=100.0 if present else 2.0, onset_latency_ms=10.0 if present else None,
                peak_latency_ms=12.0 if present else None, area_uv_ms=50.0, n_phases=2, noise_uv=1.0, snr=30.0,
                present=present, pct_of_baseline=60.0 if present else 1.0, rejected=False, reject_reason=None,
                stage=stage, assessment="present" if present else "absent", assessment_reason=None,
                detection_limit_uv=5.0, stimulus_confirmed=True)
            self.stim += 1
        return got

    def through_decompression(self):
        self.stage("baseline")
        self.state("present", 100.0)
        self.sweeps(12, "baseline")
        self.stage("decompression")
        self.sweeps(30, "decompression")
        self.stage("decompression_complete")
        return self.sweeps(20, "decompression_complete")

    def decisions(self, kind=None):
        return [b for k, b in self.out if k == "decision" and (kind is None or b["kind"] == kind)]

    def predictions(self):
        return [b for k, b in self.out if k == "prediction"]


def test_slight_displacement_does_not_argue_for_stopping(model):
    """The hazard: slight displacement → high p → 'termination acceptable'. With a marked displacement the
    same patient is in the low band, so the advice is to check the decompression, with both figures."""
    s = Session(model)
    s.factors(**SLIGHT)
    s.baseline(300.0)
    (pred,) = s.predictions()
    assert pred["band"] == "high" and pred["extrapolated"] == []
    s.through_decompression()
    (d,) = [b for b in s.decisions() if b["kind"] not in ("evaluating",)]
    assert d["kind"] == "check_decompression", d["rationale"]
    marked, _ = model.predict(dict(SLIGHT, amr_amplitude_uv=300.0, displacement=3))
    ev = d["evidence"]
    assert ev["probability"] == pytest.approx(pred["probability"], abs=1e-6)
    assert ev["adequate_probability"] == pytest.approx(marked, abs=1e-6) and ev["adequate_band"] == "low"
    assert f"p {pred['probability']:.2f}" in d["rationale"] and "displacement marked (3) instead of slight (1)" in d["rationale"]
    assert "confirm the decompression is adequate before ending" in d["rationale"]
    assert "termination_acceptable" not in [b["kind"] for b in s.decisions()]


def test_a_patient_high_even_with_a_marked_displacement_may_stop(model):
    s = Session(model)
    s.factors(duration_years=12.0, cohen_grade=4, carbamazepine=True, vessels=3, retraction_mm=14.0, displacement=1)
    s.baseline(600.0)
    s.through_decompression()
    (d,) = s.decisions("termination_acceptable")
    assert d["evidence"]["adequate_band"] == "high"
    assert "retraction 9 mm instead of 14 mm" in d["evidence"]["adequate_inputs"]


def test_the_counterfactual_is_a_setting(model):
    """An institution that holds moderate displacement adequate sets counterfactual_displacement 2."""
    s = Session(model, DecisionSettings(counterfactual_displacement=2))
    s.factors(**dict(SLIGHT, vessels=1, displacement=1, duration_years=8.0))
    s.baseline(300.0)
    p2, band2 = model.predict(dict(SLIGHT, vessels=1, displacement=2, duration_years=8.0, amr_amplitude_uv=300.0))
    s.through_decompression()
    d = [b for b in s.decisions() if b["kind"] != "evaluating"][-1]
    assert d["evidence"]["adequate_probability"] == pytest.approx(p2, abs=1e-6)
    assert "displacement moderate (2)" in d["evidence"]["adequate_inputs"]


def test_a_zero_baseline_is_not_an_amplitude(model):
    s = Session(model)
    s.factors(**SLIGHT)
    got = s.baseline(0.0)
    assert s.predictions() == [], "no prediction from a 0 µV baseline"
    assert [k for k, _ in got] == []  # nothing to say yet: no decision before decompression
    s.through_decompression()
    (d,) = [b for b in s.decisions() if b["kind"] != "evaluating"]
    assert d["kind"] == "indeterminate"
    assert "no detectable AMR (0 µV), which is not an amplitude" in d["rationale"]
    assert d["evidence"]["missing_inputs"] == "amr_amplitude_uv" and d["evidence"]["probability"] is None


def test_a_zero_baseline_after_a_real_one_is_refused_and_the_real_one_kept(model):
    """A restarted analyzer whose new baseline has no AMR (it is already gone) must not wipe the amplitude."""
    s = Session(model)
    s.factors(**SLIGHT)
    s.baseline(300.0)
    got = s.baseline(0.0)
    assert [k for k, _ in got] == ["refused"]
    text = got[0][1]["text"]
    assert "amr_amplitude_uv must be in (0, 5000] µV" in text and "got 0" in text and "300 µV" in text
    assert len(s.predictions()) == 1 and s.core.factors.values["amr_amplitude_uv"] == 300.0


def test_course_never_detected_withdraws_the_amplitude(model):
    s = Session(model)
    s.factors(**SLIGHT)
    s.baseline(300.0)
    s.send(AmrCourse, course="never_detected", baseline_uv=None, final_pct_of_baseline=None,
           disappeared_at_stage=None, per_channel={})
    assert "amr_amplitude_uv" not in s.core.factors.values


def test_factors_outside_the_training_range_are_listed_and_the_band_not_trusted(model):
    s = Session(model)
    s.factors(**dict(SLIGHT, retraction_mm=35.0, displacement=3))
    s.baseline(300.0)
    (pred,) = s.predictions()
    lo, hi = model.training_range["retraction_mm"]
    assert pred["extrapolated"] == ["retraction_mm"] and not lo <= 35.0 <= hi
    assert pred["band"] == "high", "the model alone would be confident"
    s.through_decompression()
    (d,) = [b for b in s.decisions() if b["kind"] != "evaluating"]
    assert d["kind"] == "indeterminate" and "the model was not trained on such values" in d["rationale"]
    assert f"retraction_mm 35 (trained on {lo:g}–{hi:g})" in d["rationale"]
    assert d["evidence"]["extrapolated"] == "retraction_mm"


def test_the_training_range_is_the_training_rows_range(model):
    from amrwatch.study import cohort
    from amrwatch.services.predictor.features import FEATURE_NAMES

    X, _ = cohort.DEFAULT.eligible_cohort(157, 0)  # the rows the model was fitted on: the eligible ones
    for j, n in enumerate(FEATURE_NAMES):
        assert model.training_range[n] == (X[:, j].min(), X[:, j].max())


def test_every_decision_says_whether_the_model_is_synthetic(model):
    s = Session(model)
    s.factors(**SLIGHT)
    s.baseline(300.0)
    s.through_decompression()
    s.stage("closure")
    s.stage("end")
    assert len(s.decisions()) >= 3
    assert all(d["synthetic"] is True and d["notice"] == "synthetic — not for clinical use" for d in s.decisions())
