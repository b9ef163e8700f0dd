"""The acquirer's session snapshot (Clone pattern): what a restarted service is given back."""

from __future__ import annotations

from amrwatch import sessionstate
from amrwatch.proto.codec import encode
from amrwatch.proto.control import ControlReply
from amrwatch.proto.messages import (
    AmrCourse,
    AmrState,
    Baseline,
    Decision,
    EmgFrame,
    Factors,
    FactorValues,
    Prediction,
    StageMarker,
    utc_now,
)
from amrwatch.services.acquirer.snapshot import SessionSnapshot

SID = "a1b2c3d4e5f60718"
_seq: dict[tuple[str, str], int] = {}


def msg(cls, publisher="analyzer", instance="0123abcd", session=SID, **body):
    key = (publisher + instance, cls.TOPIC)
    seq = _seq.get(key, 0)
    _seq[key] = seq + 1
    return cls(type=cls.TOPIC, schema_version=1, session_id=session, seq=seq, publisher=publisher,
               instance=instance, ts_utc=utc_now(), **body)


def stage(name, idx):
    return msg(StageMarker, "acquirer", stage=name, source="scenario", sample_index=idx)


def baseline(ch, uv, instance="0123abcd"):
    return msg(Baseline, instance=instance, channel=ch, direction="ZYG", baseline_uv=uv, n_sweeps=30,
               amr_amplitude_uv=uv)


def state(ch, st, prev, k):
    return msg(AmrState, channel=ch, direction="ZYG", state=st, previous_state=prev, stage="decompression",
               stimulus_index=k, pct_of_baseline=None)


def decision(i, kind, supersedes=None):
    return msg(Decision, "predictor", "99aa88bb", decision_id=i, kind=kind, priority="low", rationale="r",
               evidence={}, supersedes=supersedes, provisional=False, synthetic=True, notice="synthetic")


def keep(snap, *msgs):
    return [snap.add(m, encode(m)) for m in msgs]


def types(snap):
    return [(k.type, k.seq) for k in snap.messages()]


def test_keeps_every_stage_and_the_latest_per_channel_in_the_order_seen():
    snap = SessionSnapshot(SID)
    s0, s1 = stage("baseline", 0), stage("decompression", 9000)
    b_ment, b_oris = baseline("MENT", 80.0), baseline("ORIS", 0.0)
    a1, a2 = state("MENT", "present", None, 3), state("MENT", "disappeared", "present", 40)
    keep(snap, s0, b_ment, b_oris, a1, s1, a2)
    kept = snap.messages()
    assert [(k.type, k.seq) for k in kept] == [("stage", s0.seq), ("baseline", b_ment.seq), ("baseline", b_oris.seq),
                                               ("stage", s1.seq), ("amr_state", a2.seq)]
    # The frames are the ones sent: they decode to the very messages.
    reply = ControlReply(ok=True, session_id=SID, n_messages=len(kept))
    parts = [sessionstate.TAG, b"", reply.model_dump_json().encode()] + [f for k in kept for f in k.frames]
    got = sessionstate.parse(parts)
    assert got.unknown is None
    assert [m.model_dump() for m in got.messages] == [m.model_dump() for m in (s0, b_ment, b_oris, s1, a2)]


def test_a_restarted_publisher_replaces_its_channel_values():
    snap = SessionSnapshot(SID)
    keep(snap, baseline("MENT", 80.0, "0123abcd"), baseline("MENT", 0.0, "feedbeef"))
    (only,) = snap.messages()
    assert only.instance == "feedbeef"


def test_ignores_other_sessions_and_non_state_types():
    snap = SessionSnapshot(SID)
    other = baseline("MENT", 5.0)
    other = other.model_copy(update={"session_id": "ffffffffffffffff"})
    frame = msg(EmgFrame, "acquirer", first_sample_index=0, n_channels=1, n_samples=1, sampling_rate_hz=1000.0,
                dtype="<f4", layout="channel_major", first_sample_device_s=0.0, first_sample_utc=utc_now())
    assert keep(snap, other) == [False]
    assert snap.add(frame, [b"emg_frame", b"{}", b""]) is False
    assert len(snap) == 0


def test_factors_course_prediction_kept():
    snap = SessionSnapshot(SID)
    f1 = msg(Factors, "acquirer", factors=FactorValues(duration_years=3.0), source="operator")
    f2 = msg(Factors, "acquirer", factors=FactorValues(cohen_grade=2), source="operator")
    p1 = msg(Prediction, "predictor", "99aa88bb", probability=0.2, band="low", cutoff_low=0.3, cutoff_high=0.7,
             model_sha256="0" * 64, synthetic=True, notice="synthetic", inputs={}, extrapolated=[])
    p2 = p1.model_copy(update={"seq": p1.seq + 1, "probability": 0.8, "band": "high"})
    c = msg(AmrCourse, course="persisted", baseline_uv=80.0, final_pct_of_baseline=90.0, disappeared_at_stage=None,
            per_channel={})
    keep(snap, f1, p1, f2, p2, c)
    assert [k.type for k in snap.messages()] == ["factors", "factors", "prediction", "amr_course"]
    assert snap.messages()[2].seq == p2.seq


def test_bounded_decisions_drop_superseded_ones_first():
    snap = SessionSnapshot(SID, max_every=4)
    keep(snap, decision(1, "amr_not_monitorable"), decision(2, "indeterminate"), decision(3, "prognosis"),
         decision(4, "indeterminate", supersedes=2), decision(5, "decompression_confirmed", supersedes=4))
    ids = [int(__import__("json").loads(k.frames[1])["decision_id"]) for k in snap.messages()]
    assert ids == [1, 3, 4, 5]  # 2 was superseded: dropped first; the newest id is always kept
    assert snap.incomplete == []


def test_more_stages_than_the_bound_makes_it_incomplete():
    snap = SessionSnapshot(SID, max_every=3)
    keep(snap, *(stage("retraction", i) for i in range(4)))
    assert len(snap) == 3 and "stage" in snap.incomplete[0]


def test_a_gap_on_the_bus_makes_it_incomplete_and_the_client_says_unknown():
    snap = SessionSnapshot(SID)
    keep(snap, stage("baseline", 0))
    snap.note_gap("analyzer", "baseline", 2, 4)
    snap.note_gap("analyzer", "amr_measurement", 2, 4)  # not state: no matter
    assert snap.incomplete == ["analyzer baseline seq 2..3 lost before the acquirer"]
    kept = snap.messages()
    reply = ControlReply(ok=True, session_id=SID, n_messages=1, detail={"incomplete": snap.incomplete[0]})
    got = sessionstate.parse([sessionstate.TAG, b"", reply.model_dump_json().encode(), *kept[0].frames])
    assert got.unknown is not None and "baseline seq 2..3" in got.unknown
    assert len(got.messages) == 1


def test_client_reports_refusal_and_malformed_replies_as_unknown():
    refused = ControlReply(ok=False, error="this acquirer keeps no session state (started with --no-state)")
    got = sessionstate.parse([sessionstate.TAG, b"", refused.model_dump_json().encode()])
    assert got.unknown and "--no-state" in got.unknown and got.messages == []
    short = ControlReply(ok=True, session_id=SID, n_messages=2)
    got = sessionstate.parse([sessionstate.TAG, b"", short.model_dump_json().encode(), b"stage", b"{}", b""])
    assert got.unknown and "announces 2 messages" in got.unknown
    bad = ControlReply(ok=True, session_id=SID, n_messages=1)
    got = sessionstate.parse([sessionstate.TAG, b"", bad.model_dump_json().encode(), b"stage", b"{}", b""])
    assert got.unknown and "invalid message" in got.unknown


def heartbeat(stage_sent, factors_sent=0, instance="aaaa0001"):
    from amrwatch.proto.messages import Heartbeat

    return msg(Heartbeat, "acquirer", instance, service="acquirer", version="t", status="ok", uptime_s=1.0,
               interval_s=0.5, active_alarms=[], info={"stage_sent": stage_sent, "factors_sent": factors_sent})


def test_sent_counts_report_a_lost_marker_once_and_not_what_came_before_listening():
    counts = sessionstate.SentCounts()
    assert counts.behind(heartbeat(5)) == []  # sent before we listened: not ours to miss
    for i in (5, 6):
        counts.seen(stage("incision", i).model_copy(update={"seq": i, "instance": "aaaa0001"}))
    assert counts.behind(heartbeat(7)) == []
    assert counts.behind(heartbeat(9)) == ["stage"]  # seq 7 and 8 never came
    assert counts.behind(heartbeat(9)) == []  # said once
    assert counts.behind(heartbeat(9, 2)) == ["factors"]  # two sent since we listened, none came
    counts.seen(msg(Factors, "acquirer", "aaaa0001", factors=FactorValues(vessels=1), source="operator")
                .model_copy(update={"seq": 2}))
    assert counts.behind(heartbeat(9, 3)) == []
    assert counts.behind(heartbeat(1, instance="bbbb0002")) == []  # a restarted acquirer starts afresh


def test_settings_kept_per_instance_so_a_restart_can_compare():
    from amrwatch.proto.messages import ServiceSettings

    def settings(instance, value):
        return msg(ServiceSettings, "analyzer", instance, **ServiceSettings.body_for("analyzer", {"k": value}, {}))

    snap = SessionSnapshot(SID)
    keep(snap, settings("0123abcd", 1), settings("0123abcd", 2), settings("feedbeef", 3))
    kept = [(k.instance, __import__("json").loads(k.frames[1])["settings"]["k"]) for k in snap.messages()]
    assert kept == [("0123abcd", 2), ("feedbeef", 3)]
