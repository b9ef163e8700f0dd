"""The page's state: snapshot contents, joins, baseline sweep, alarms, replay."""

from __future__ import annotations

import json

import pytest

from amrwatch.services.monitor.timeline import ReplayError, ReplayIndex
from amrwatch.services.monitor.settings import ViewSettings
from amrwatch.services.monitor.view import SessionView

from .build import FS, SID, Stream, session_messages, session_signal


def feed(view, msgs):
    return [item for m in msgs for item in view.apply(m)]


def test_snapshot_holds_everything_a_client_needs_and_is_plain_json():
    st = Stream()
    x, stims = session_signal(6)
    msgs = session_messages(st, x, stims)
    msgs.insert(1, st.stage("baseline", 0))
    view = SessionView()
    out = feed(view, msgs)
    out += feed(view, [st.measurement(0, "MENT", "ZYG", stims[0][1] / FS, 101.0, pct=100.0),
                       st.msg("factors", factors={"cohen_grade": 2, "vessels": 1}, source="scenario"),
                       st.msg("factors", factors={"vessels": 2}, source="operator")])
    snap = json.loads(json.dumps(view.snapshot(), allow_nan=False))  # strict JSON, no NaN
    assert snap["session"]["session_id"] == SID
    assert [c["name"] for c in snap["session"]["channels"]] == ["MENT", "OORIS", "OOCUL"]  # no SAMPLE_INDEX
    assert snap["stages"] == [{"stage": "baseline", "t_s": 0.0, "source": "scenario"}]
    assert [len(snap["sweeps"][c]) for c in ("MENT", "OORIS", "OOCUL")] == [3, 3, 3]
    assert snap["trend"]["MENT"]["p2p"] == [101.0] and snap["trend"]["MENT"]["pct"] == [100.0]
    assert snap["factors"] == {"cohen_grade": 2, "vessels": 2}  # later values replace earlier ones
    assert snap["display"]["analysis_window_ms"] == [6.0, 25.0]
    # the measurement reached the sweep of its stimulus, so the page can mark the peak
    ment0 = snap["sweeps"]["MENT"][0]
    assert ment0["stimulus_index"] == 0 and ment0["m"]["p2p_uv"] == 101.0 and ment0["m"]["peak_latency_ms"] == 11.0
    assert [i["kind"] for i in out].count("sweep") == 9
    assert not any(i["kind"] == "event" and i["event"]["type"] == "emg_frame" for i in out)


def test_a_measurement_that_arrives_before_its_sweep_is_attached_when_the_sweep_is_cut():
    st = Stream()
    x, stims = session_signal(1)
    msgs = session_messages(st, x, stims)
    i_stim = next(i for i, m in enumerate(msgs) if m.type == "stimulus")
    msgs.insert(i_stim + 1, st.measurement(0, "MENT", "ZYG", stims[0][1] / FS, 99.0))
    view = SessionView()
    out = feed(view, msgs)
    sweep = next(i["sweep"] for i in out if i["kind"] == "sweep" and i["sweep"]["channel"] == "MENT")
    assert sweep["m"]["p2p_uv"] == 99.0


def test_waterfall_keeps_the_newest_n_sweeps_per_channel():
    st = Stream()
    x, stims = session_signal(24)
    view = SessionView(view_settings=ViewSettings(waterfall_sweeps=5))
    feed(view, session_messages(st, x, stims))
    ment = view.snapshot()["sweeps"]["MENT"]
    assert [s["stimulus_index"] for s in ment] == [14, 16, 18, 20, 22]


def test_baseline_sweep_is_the_median_sized_real_sweep_of_the_baseline_stage():
    amps = {"MENT": [100, 0, 300, 0, 200, 0, 900, 0, 120, 0], "OORIS": [50] * 10, "OOCUL": [80] * 10}
    st = Stream()
    x, stims = session_signal(10, amplitudes=amps)
    msgs = session_messages(st, x, stims)
    msgs.insert(1, st.stage("baseline", 0))
    # the stage changes before stimulus 8: its 120 µV sweep is not a baseline candidate
    i8 = next(i for i, m in enumerate(msgs) if m.type == "stimulus" and m.stimulus_index == 8)
    msgs.insert(i8 - 2, st.stage("incision", stims[8][1] - 100))
    view = SessionView()
    out = feed(view, msgs)
    chosen = view.snapshot()["baseline_sweeps"]["MENT"]
    assert chosen["stimulus_index"] == 4  # 100, 300, 200, 900 → the median pick is the 200 µV sweep
    # the analyzer rejects sweep 4 (diathermy): the choice moves to another real sweep
    out = view.apply(st.measurement(4, "MENT", "ZYG", stims[4][1] / FS, 5000.0, rejected=True))
    update = [i for i in out if i["kind"] == "baseline_sweep"]
    assert update and update[0]["channel"] == "MENT" and update[0]["sweep"]["stimulus_index"] == 2


def test_without_a_baseline_stage_the_first_n_sweeps_stand_for_the_baseline():
    st = Stream()
    x, stims = session_signal(12, amplitudes={"MENT": [float(10 * (k + 1)) for k in range(12)],
                                              "OORIS": [50.0] * 12, "OOCUL": [50.0] * 12})
    view = SessionView(view_settings=ViewSettings(baseline_first_n=3))
    feed(view, session_messages(st, x, stims))
    assert view.baseline_pickers["MENT"].candidates.keys() == {0, 2, 4}
    assert view.snapshot()["baseline_sweeps"]["MENT"]["stimulus_index"] == 2


def test_state_transitions_carry_the_time_of_their_stimulus_for_the_disappearance_mark():
    st = Stream()
    x, stims = session_signal(4)
    view = SessionView()
    feed(view, session_messages(st, x, stims))
    out = view.apply(st.msg("amr_state", channel="MENT", direction="ZYG", state="disappeared",
                            previous_state="present", stage="decompression", stimulus_index=2, pct_of_baseline=1.0))
    assert out[0]["event"]["t_s"] == pytest.approx(stims[2][1] / FS)
    snap = view.snapshot()
    assert snap["states"]["MENT"]["state"] == "disappeared"
    assert snap["transitions"] == [{"channel": "MENT", "state": "disappeared", "previous_state": "present",
                                    "stimulus_index": 2, "stage": "decompression", "t_s": stims[2][1] / FS}]


def test_alarms_are_raised_cleared_and_acknowledged():
    st = Stream()
    view = SessionView()
    view.apply(st.start())
    view.apply(st.alarm("signal_lost"))
    view.apply(st.alarm("service_down:bus", session=False))
    assert [a["alarm_key"] for a in view.snapshot()["alarms"]] == ["signal_lost", "service_down:bus"]
    out = view.apply(st.msg("alarm_ack", alarm_key="signal_lost", operator="dr_lee", note="checked the leads"))
    assert out[0]["event"]["type"] == "alarm_ack"
    acked = view.snapshot()["alarms"][0]
    assert acked["ack"]["operator"] == "dr_lee" and acked["ack"]["note"] == "checked the leads"
    view.apply(st.alarm("signal_lost", state="cleared"))
    assert [a["alarm_key"] for a in view.snapshot()["alarms"]] == ["service_down:bus"]
    # a new session forgets the old session's alarms but keeps the service-level one
    view.apply(st.alarm("gap:x"))
    view.apply(Stream("20261124T090000Z-def456").start())
    assert [a["alarm_key"] for a in view.snapshot()["alarms"]] == ["service_down:bus"]


def test_a_new_session_replaces_the_picture_and_stragglers_of_the_old_one_are_ignored():
    old, new = Stream(), Stream("20261124T090000Z-def456")
    x, stims = session_signal(2)
    view = SessionView()
    feed(view, session_messages(old, x, stims))
    out = view.apply(new.start())
    assert [i["kind"] for i in out] == ["event", "snapshot"]
    assert out[1]["snapshot"]["session"]["session_id"] == new.session_id
    assert view.apply(old.measurement(0, "MENT", "ZYG", 0.25, 80.0)) == []
    assert view.snapshot()["trend"]["MENT"]["p2p"] == []


def test_joining_mid_session_follows_it_and_adopts_its_start_when_fetched():
    st = Stream()
    x, stims = session_signal(4)
    msgs = session_messages(st, x, stims)[1:]  # missed session_start
    view = SessionView()
    feed(view, msgs[:40])
    assert view.session_id == SID and view.joined_late and view.cutter is None
    feed(view, [st.measurement(0, "MENT", "ZYG", 0.25, 77.0)])
    out = view.set_session_start(Stream().start())
    assert out[0]["kind"] == "snapshot"
    snap = view.snapshot()
    assert snap["session"]["joined_late"] is True and snap["trend"]["MENT"]["p2p"] == [77.0]
    feed(view, msgs[40:])
    assert len(view.snapshot()["sweeps"]["MENT"]) >= 1  # cutting starts once the montage is known


def test_replay_snapshot_at_t_matches_what_the_live_view_showed_at_t():
    st = Stream()
    x, stims = session_signal(10)
    msgs = session_messages(st, x, stims, end=True)
    msgs.insert(1, st.stage("baseline", 0))
    i5 = next(i for i, m in enumerate(msgs) if m.type == "stimulus" and m.stimulus_index == 5)
    msgs.insert(i5 + 1, st.stage("decompression", stims[5][1]))
    for k, s, d in stims:
        j = next(i for i, m in enumerate(msgs) if m.type == "stimulus" and m.stimulus_index == k)
        chans = ["MENT", "OORIS"] if d == "ZYG" else ["OOCUL"]
        for ch in chans:
            msgs.insert(j + 1, st.measurement(k, ch, d, s / FS, 100.0 - 5 * k, pct=100.0 - 5 * k))
    live = SessionView()
    at = {}
    for m in msgs:
        live.apply(m)
        if m.type == "emg_frame":
            at[round(live.now_s, 3)] = json.dumps(live.snapshot(), sort_keys=True)
    idx = ReplayIndex(msgs)
    assert idx.duration_s == pytest.approx(x.shape[1] // 100 * 100 / FS)
    for t in (1.0, 2.5, 4.0, idx.duration_s):
        t = round(round(t * FS / 100) * 100 / FS, 3)
        want = json.loads(at[t])
        got = idx.snapshot_at(t)
        for key in ("stages", "trend", "sweeps", "baseline_sweeps", "stage"):
            assert got[key] == want[key], (t, key)
        assert got["replay"] == {"t_s": t, "duration_s": idx.duration_s}
    info = idx.info()
    assert [s["stage"] for s in info["stages"]] == ["baseline", "decompression"]
    assert info["session"]["ended"]["reason"] == "scenario_end"


def test_replay_without_a_session_start_is_refused_with_the_reason():
    st = Stream()
    x, stims = session_signal(1)
    with pytest.raises(ReplayError, match="no session_start"):
        ReplayIndex(session_messages(st, x, stims, start=False))
