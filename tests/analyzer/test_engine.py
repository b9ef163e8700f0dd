"""The engine end to end: same numbers however the input is split, and bad input
counted, alarmed, marked — and survived."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from amrwatch.proto.messages import BY_TYPE, NOT_ASSESSABLE_REASONS, REJECT_REASONS, message_of, validate_body
from amrwatch.services.analyzer.engine import AnalyzerEngine

from .streams import Session, by_key, feed, of_type, simulate


@pytest.fixture(scope="module")
def session() -> Session:
    return simulate(seed=4, scenario="disappears-after-decompression", time_scale=0.2)


@pytest.fixture(scope="module")
def reference(session):
    return feed(AnalyzerEngine(session.montage), session, [100])  # 5 ms frames, as live


def test_every_output_is_a_valid_proto_body(reference):
    """The engine builds its bodies unchecked (the publisher validates): each must pass validation unchanged,
    and become a whole message with an envelope."""
    kinds = {o.TOPIC for o in reference}
    assert {"amr_measurement", "amr_state", "baseline", "amr_course"} <= kinds
    for o in reference:
        cls = BY_TYPE[o.TOPIC]
        assert set(o.fields()) == cls.body_fields(), o.TOPIC
        checked = validate_body(o.TOPIC, o.fields())  # validates every field
        assert type(checked) is type(o) and checked == o and checked.model_dump_json() == o.model_dump_json()
        msg = message_of(o, session_id="S1", seq=0, publisher="analyzer", instance="0123abcd",
                         ts_utc=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        assert msg.type == o.TOPIC and {k: getattr(msg, k) for k in cls.body_fields()} == o.fields()
    assert_reasons_in_proto(reference)


def test_one_measurement_per_stimulus_and_recording_channel(session, reference):
    got = sorted(by_key(reference))
    want = sorted((k, ch) for k, _, d in session.stimuli for ch in session.montage.recording_channels(d))
    assert got == want
    assert len(of_type(reference, "amr_measurement")) == len(want)


@pytest.mark.parametrize("sizes", [[20_000], [1, 7, 333, 4096, 19_999, 50], [61]])
def test_numbers_do_not_depend_on_how_frames_are_split(session, reference, sizes):
    other = feed(AnalyzerEngine(session.montage), session, sizes)
    a, b = by_key(reference), by_key(other)
    assert a.keys() == b.keys()
    for key in a:
        assert json.dumps(a[key]) == json.dumps(b[key]), key
    assert of_type(reference, "amr_course") == of_type(other, "amr_course")
    assert of_type(reference, "amr_state") == of_type(other, "amr_state")


def test_stage_attribution_is_by_sample_index_not_arrival(session, reference):
    late = feed(AnalyzerEngine(session.montage), session, [100], stages_after_frame=True)
    assert by_key(late) == by_key(reference)
    stages = {f["stage"] for f in of_type(reference, "amr_measurement")}
    assert {"baseline", "decompression", "closure"} <= stages


def test_session_outputs(reference):
    course = of_type(reference, "amr_course")
    assert len(course) == 1 and course[0]["course"] == "disappeared_after_decompression"
    baselines = of_type(reference, "baseline")
    assert {b["channel"] for b in baselines} == {"MENT", "OORIS", "OOCUL"}
    assert baselines[-1]["amr_amplitude_uv"] == max(b["baseline_uv"] for b in baselines)
    assert course[0]["baseline_uv"] == baselines[-1]["amr_amplitude_uv"]


# --------------------------------------------------------------------------- #
# Bad input


def short() -> Session:
    return simulate(seed=2, scenario="calibration", calibration_stimuli=30, calibration_absent_fraction=0.0)


def run_with(s: Session, deliver) -> tuple[AnalyzerEngine, list]:
    """`deliver(engine, pos, end, frame)` sends one 5 ms frame (and may misbehave)."""
    e = AnalyzerEngine(s.montage)
    out, si = [], 0
    n = s.samples.shape[1]
    for pos in range(0, n, 100):
        end = min(n, pos + 100)
        out += deliver(e, pos, end, s.samples[:, pos:end])
        while si < len(s.stimuli) and s.stimuli[si][1] < end:
            k, idx, d = s.stimuli[si]
            out += e.on_stimulus(k, idx, idx / s.fs, d)
            si += 1
    out += e.on_end()
    for o in out:  # the bodies made on bad input, alarms included, pass proto's validation unchanged
        assert validate_body(o.TOPIC, o.fields()) == o, o
    assert_reasons_in_proto(out)
    return e, out


def assert_reasons_in_proto(out) -> None:
    """The engine says why in proto's words only (the monitor and the docs list these)."""
    for m in of_type(out, "amr_measurement"):
        if m["assessment"] == "not_assessable":
            assert m["assessment_reason"] in NOT_ASSESSABLE_REASONS, m
        if m["rejected"]:
            assert m["reject_reason"] in REJECT_REASONS and m["assessment_reason"] == m["reject_reason"], m


def stim_at(s: Session, k: int) -> int:
    return s.stimuli[k][1]


def alarms(out, key: str) -> list[dict]:
    return [a for a in of_type(out, "alarm") if a["alarm_key"] == f"analyzer:{key}"]


def test_wrong_channel_count_frame(tmp_path):
    s = short()
    bad = stim_at(s, 5) + 200  # inside stimulus 5's sweep

    def deliver(e, pos, end, frame):
        if pos <= bad < end:
            return e.on_frame(pos, frame[:2], s.fs)
        return e.on_frame(pos, frame, s.fs)

    e, out = run_with(s, deliver)
    a = alarms(out, "channel_count")
    assert len(a) == 1 and a[0]["kind"] == "input_rejected"
    assert "has 2 channels; the session's montage has 3" in a[0]["message"]
    assert e.counters["channel_count"] == 1 and e.counters["gap"] == 1
    m = by_key(out)
    for ch in s.montage.recording_channels(s.stimuli[5][2]):
        assert m[(5, ch)]["rejected"] and m[(5, ch)]["reject_reason"] == "gap"
    assert all(not f["rejected"] for (k, _), f in m.items() if k > 6)  # it keeps going
    assert sum(f["present"] for (k, _), f in m.items() if k > 6) > 10


def test_sampling_rate_change_is_refused():
    s = short()
    bad = stim_at(s, 3)

    def deliver(e, pos, end, frame):
        return e.on_frame(pos, frame, s.fs / 2 if pos <= bad < end else s.fs)

    e, out = run_with(s, deliver)
    a = alarms(out, "sampling_rate")
    assert len(a) == 1 and a[0]["priority"] == "high"
    assert "sampled at 10000 Hz; this session started at 20000 Hz" in a[0]["message"]
    assert by_key(out)[(3, s.montage.recording_channels(s.stimuli[3][2])[0])]["reject_reason"] == "gap"


def test_nan_samples_mark_only_their_channel():
    s = short()
    k = 8
    d = s.stimuli[k][2]
    chans = s.montage.recording_channels(d)
    row = s.montage.channel_names().index(chans[0])
    bad = stim_at(s, k) + 300

    def deliver(e, pos, end, frame):
        if pos <= bad < end:
            frame = frame.copy()
            frame[row, bad - pos] = np.nan
        return e.on_frame(pos, frame, s.fs)

    e, out = run_with(s, deliver)
    assert "1 NaN/infinite sample(s)" in alarms(out, "nan")[0]["message"]
    m = by_key(out)
    assert m[(k, chans[0])]["reject_reason"] == "nan"
    if len(chans) > 1:
        assert not m[(k, chans[1])]["rejected"]
    assert e.counters["rejected_nan"] == 1


def test_repeated_and_out_of_order_frames():
    s = short()
    k_dup, k_late = 4, 12
    held = {}

    def deliver(e, pos, end, frame):
        out = []
        if pos == stim_at(s, k_late) // 100 * 100:  # hold this frame back: it arrives after the next one
            held["frame"] = (pos, frame)
            return out
        out += e.on_frame(pos, frame, s.fs)
        if "frame" in held:
            p, f = held.pop("frame")
            out += e.on_frame(p, f, s.fs)
        if pos <= stim_at(s, k_dup) < end:
            out += e.on_frame(pos, frame, s.fs)  # the same frame twice
        return out

    e, out = run_with(s, deliver)
    assert "repeats samples already received" in alarms(out, "duplicate")[0]["message"]
    assert "out of order" in alarms(out, "out_of_order")[0]["message"]
    assert alarms(out, "gap"), "the held-back frame left a hole when the next one came"
    m = by_key(out)
    ch = s.montage.recording_channels(s.stimuli[k_dup][2])[0]
    assert not m[(k_dup, ch)]["rejected"]  # a repeat changes nothing
    ch = s.montage.recording_channels(s.stimuli[k_late][2])[0]
    assert m[(k_late, ch)]["reject_reason"] == "gap"  # never measured as if whole


def test_stimulus_far_in_the_past_and_other_bad_stimuli():
    s = short()
    e = AnalyzerEngine(s.montage)
    n = s.samples.shape[1]
    out = []
    for pos in range(0, n, 2000):
        out += e.on_frame(pos, s.samples[:, pos : pos + 2000], s.fs)
    k, idx, d = s.stimuli[0]
    out += e.on_stimulus(k, idx, idx / s.fs, d)  # 3 s old, within the 10 s buffer: fine
    assert not any(f["rejected"] for f in by_key(out).values())
    e2 = AnalyzerEngine(s.montage, e.settings.model_copy(update={"buffer_s": 1.0}))
    last = s.stimuli[20][1] + e2.geometry.post
    out = e2.on_frame(0, s.samples[:, :last], s.fs)
    out += e2.on_stimulus(k, idx, idx / s.fs, d)
    a = alarms(out, "stale_stimulus")
    assert len(a) == 1 and "older than the 1 s of signal the analyzer keeps" in a[0]["message"]
    assert {f["reject_reason"] for f in by_key(out).values()} == {"stale"}
    out = e2.on_stimulus(k, idx, idx / s.fs, d)
    assert "received twice" in alarms(out, "duplicate_stimulus")[0]["message"]
    assert not of_type(out, "amr_measurement")
    mono = s.montage.model_copy(update={"channels": [c for c in s.montage.channels if c.direction == "ZYG"]})
    e3 = AnalyzerEngine(mono)
    out = e3.on_stimulus(0, 100_000, 5.0, "MAR")
    assert "no channel recording MAR-LSR" in alarms(out, "unknown_direction")[0]["message"]
    # A good stimulus after all that is still measured.
    k, idx, d = s.stimuli[20]
    out = e2.on_stimulus(k, idx, idx / s.fs, d)
    m = of_type(out, "amr_measurement")
    assert m and all(f["present"] and not f["rejected"] for f in m)


def test_session_end_rejects_sweeps_that_never_completed():
    s = short()
    e = AnalyzerEngine(s.montage)
    k, idx, d = s.stimuli[3]
    e.on_frame(0, s.samples[:, : idx + 10], s.fs)
    assert e.on_stimulus(k, idx, idx / s.fs, d) == []  # waits for its sweep
    out = e.on_end()
    assert {f["reject_reason"] for f in of_type(out, "amr_measurement")} == {"incomplete"}
