"""The analyzer as a real process on a real bus."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import zmq

from amrwatch.bus import Publisher, Subscriber
from amrwatch.proto.codec import encode
from amrwatch.proto.messages import (
    Alarm,
    AmrCourse,
    AmrMeasurement,
    EmgFrame,
    Heartbeat,
    Message,
    SessionEnd,
    SessionStart,
    StageMarker,
    Stimulus,
    utc_now,
)
from amrwatch.services.acquirer.simsource import SimSource
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.analyzer.offline import analyze_source

from ..conftest import free_port
from .streams import by_key, feed, of_type, simulate

BODY = sorted(AmrMeasurement.body_fields())


def collect(sub: Subscriber, until, timeout: float) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is None:
            continue
        out.append(msg)
        if until(msg, out):
            return out
    raise AssertionError(f"timed out after {len(out)} messages: {[m.type for m in out[-5:]]}")


def drain(sub: Subscriber, seconds: float) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = sub.recv(100)
        if msg is not None:
            out.append(msg)
    return out


def wait_for_analyzer(sub: Subscriber, timeout: float = 30.0) -> None:
    collect(sub, lambda m, _: isinstance(m, Heartbeat) and m.service == "analyzer" and m.status == "ok", timeout)


def test_live_measurements_match_offline_analysis(procs, stack_env):
    scenario, seed = "disappears-after-decompression", 3
    procs.start("bus")
    procs.start("analyzer", "--metrics-port", "0")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"],
                         ("amr_measurement", "amr_state", "amr_course", "baseline", "session_end", "heartbeat"))
        wait_for_analyzer(sub)
        procs.start("acquirer", "--source", "sim", "--scenario", scenario, "--seed", str(seed), "--speed", "20",
                    "--time-scale", "0.2", "--wait-for", "analyzer", "--metrics-port", "0")
        seen_end = {}

        def done(m, _):
            if isinstance(m, SessionEnd):
                seen_end["at"] = time.monotonic()
            return isinstance(m, AmrCourse) and "at" in seen_end

        msgs = collect(sub, done, timeout=90)
    finally:
        ctx.destroy(linger=0)
    assert sub.lost == 0
    live = sorted((m for m in msgs if isinstance(m, AmrMeasurement)), key=lambda m: (m.stimulus_index, m.channel))
    offline = sorted(of_type(list(analyze_source(SimSource(seed=seed, scenario=scenario, time_scale=0.2))),
                             "amr_measurement"), key=lambda f: (f["stimulus_index"], f["channel"]))
    assert len(live) == len(offline) > 100
    for m, f in zip(live, offline):
        assert json.dumps(m.model_dump(include=set(BODY), mode="json"), sort_keys=True) == \
            json.dumps(f, sort_keys=True)
    course = [m for m in msgs if isinstance(m, AmrCourse)][-1]
    assert course.course == "disappeared_after_decompression"
    assert {m.session_id for m in live} == {course.session_id}


def test_bad_input_is_counted_alarmed_marked_and_survived(procs, stack_env):
    port = free_port()
    procs.start("bus")
    procs.start("analyzer", "--metrics-port", str(port))
    s = simulate(seed=5, scenario="calibration", calibration_stimuli=130, calibration_absent_fraction=0.0)
    sid = "20260101T000000Z-badbad"
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("amr_measurement", "alarm", "heartbeat"))
        wait_for_analyzer(sub)
        pub = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "acquirer")
        assert pub.wait_ready(20, ("emg_frame",)), "the analyzer's subscription never reached us"
        pub.publish(SessionStart, sid, started_at=utc_now(), source="sim", scenario="calibration", replay_of=None,
                    manual=False, montage=s.montage, settings={}, ground_truth=False)
        bad = {"channels": s.stimuli[3][1], "nan": s.stimuli[6][1] + 300, "rate": s.stimuli[9][1]}
        nan_row = s.montage.channel_names().index(s.montage.recording_channels(s.stimuli[6][2])[0])
        n = s.samples.shape[1]
        si = gi = 0
        for pos in range(0, n, 100):
            end = min(n, pos + 100)
            while gi < len(s.stages) and s.stages[gi][0] < end:
                pub.publish(StageMarker, sid, stage=s.stages[gi][1], source="scenario", sample_index=s.stages[gi][0])
                gi += 1
            frame = s.samples[:, pos:end]
            rate = s.fs
            if pos <= bad["channels"] < end:
                frame = frame[:2]
            if pos <= bad["nan"] < end:
                frame = frame.copy()
                frame[nan_row, bad["nan"] - pos] = np.nan
            if pos <= bad["rate"] < end:
                rate = s.fs * 2
            msg = pub.publish(EmgFrame, sid, first_sample_index=pos, n_channels=frame.shape[0],
                              n_samples=end - pos, sampling_rate_hz=rate, dtype="<f4", layout="channel_major",
                              first_sample_device_s=pos / s.fs, first_sample_utc=utc_now(), samples=frame)
            if pos == 20_000:
                pub.sock.send_multipart(encode(msg))  # the same frame, same seq, a second time
            while si < len(s.stimuli) and s.stimuli[si][1] < end:
                k, idx, d = s.stimuli[si]
                pub.publish(Stimulus, sid, stimulus_index=k, sample_index=idx, stim_time_s=idx / s.fs,
                            direction=d, intensity_ma=None, width_ms=None)
                si += 1
            if pos % 4000 == 0:
                time.sleep(0.002)  # a real acquirer is paced; do not flood the bus
        old = n - int(12 * s.fs)  # 12 s before the newest sample; the analyzer keeps 10 s
        assert old > 0
        pub.publish(Stimulus, sid, stimulus_index=999, sample_index=old, stim_time_s=old / s.fs,
                    direction="ZYG", intensity_ma=None, width_ms=None)
        pub.publish(SessionEnd, sid, ended_at=utc_now(), reason="scenario_end", n_frames=0,
                    n_stimuli=len(s.stimuli) + 1, n_samples=n)
        want = sum(len(s.montage.recording_channels(d)) for _, _, d in s.stimuli) + 1

        def done(_m, out):
            return len([x for x in out if isinstance(x, AmrMeasurement)]) >= want

        msgs = collect(sub, done, timeout=60)
        msgs += drain(sub, 1.0)  # alarms raised with the last sweeps
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        ctx.destroy(linger=0)

    alarms = {a.alarm_key: a for a in msgs if isinstance(a, Alarm) and a.state == "raised"}
    assert "has 2 channels; the session's montage has 3" in alarms["analyzer:channel_count"].message
    assert "NaN/infinite" in alarms["analyzer:nan"].message
    assert "sampled at 40000 Hz" in alarms["analyzer:sampling_rate"].message
    assert "repeats samples already received" in alarms["analyzer:duplicate"].message
    assert "missing before sample" in alarms["analyzer:gap"].message
    assert "stale" in alarms["analyzer:stale_stimulus"].message
    meas = {(m.stimulus_index, m.channel): m for m in msgs if isinstance(m, AmrMeasurement)}
    reasons = {k: m.reject_reason for k, m in meas.items() if m.rejected}
    assert {reasons.get((3, c)) for c in s.montage.recording_channels(s.stimuli[3][2])} == {"gap"}
    assert reasons.get((6, s.montage.channel_names()[nan_row])) == "nan"
    assert {reasons.get((9, c)) for c in s.montage.recording_channels(s.stimuli[9][2])} == {"gap"}
    assert {m.reject_reason for (k, _), m in meas.items() if k == 999} == {"stale"}
    # After all that, the sweeps are measured exactly as from a clean stream (the baseline
    # would differ: the faults removed three of its sweeps).
    clean = by_key(feed(AnalyzerEngine(s.montage), s, [100]))
    later = [(key, m) for key, m in meas.items() if 12 <= key[0] < 999]
    assert len(later) == len([key for key in clean if key[0] >= 12])
    for key, m in later:
        got = m.model_dump(include=set(BODY) - {"pct_of_baseline"}, mode="json")
        assert got == {f: v for f, v in clean[key].items() if f != "pct_of_baseline"}, key
    for kind in ("channel_count", "nan", "sampling_rate", "duplicate", "gap", "stale_stimulus"):
        assert f'amrwatch_analyzer_bad_input_total{{kind="{kind}"}}' in metrics, kind
    assert 'amrwatch_analyzer_rejected_sweeps_total{reason="gap"}' in metrics
    assert 'amrwatch_messages_rejected_total{reason="duplicate_seq"} 1.0' in metrics
    assert procs.procs[1][1].poll() is None, "the analyzer must keep running"


#: The late joiner is started once the acquirer has published this stimulus.
JOIN_AFTER = 5


def test_late_joiner_asks_the_acquirer_for_the_session(procs, stack_env):
    """Started mid-session, the analyzer gets the montage over the control socket and measures
    every sweep from then on with the same numbers (sweeps are self-contained)."""
    scenario, seed = "persists-expected", 8
    offline = {(f["stimulus_index"], f["channel"]): f
               for f in of_type(list(analyze_source(SimSource(seed=seed, scenario=scenario, time_scale=0.2))),
                                "amr_measurement")}

    def measured_to_the_end(m: Message, out: list[Message]) -> bool:
        """The session has ended and every sweep from a few after its first on has been measured."""
        if not isinstance(m, (AmrMeasurement, SessionEnd)) or not any(isinstance(x, SessionEnd) for x in out):
            return False
        got = {(x.stimulus_index, x.channel) for x in out if isinstance(x, AmrMeasurement)}
        return bool(got) and all(k in got for k in offline if k[0] > min(i for i, _ in got) + 2)

    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"],
                         ("amr_measurement", "session_start", "session_end", "stimulus"))
        # Speed 4: the session lasts ~30 s, so an analyzer that takes ~10 s to start on a loaded machine
        # still joins with most of it to go (at speed 10 it could arrive as the session ended).
        procs.start("acquirer", "--source", "sim", "--scenario", scenario, "--seed", str(seed), "--speed", "4",
                    "--time-scale", "0.2", "--metrics-port", "0")
        collect(sub, lambda m, _: isinstance(m, SessionStart), timeout=30)
        # The session runs without an analyzer until stimuli 0-5 have gone by: those are not its to measure.
        collect(sub, lambda m, _: isinstance(m, Stimulus) and m.stimulus_index >= JOIN_AFTER, timeout=60)
        procs.start("analyzer", "--metrics-port", "0")
        msgs = collect(sub, measured_to_the_end, timeout=120)
    finally:
        ctx.destroy(linger=0)
    assert "asking" in procs.log("analyzer")
    live = {(m.stimulus_index, m.channel): m for m in msgs if isinstance(m, AmrMeasurement)}
    first = min(k for k, _ in live)
    assert first > JOIN_AFTER, "it joined late, so the first stimuli are not its to measure"
    later = [k for k in offline if k[0] > first + 2]
    assert len(later) > 50 and all(k in live for k in later)
    sweep_local = set(BODY) - {"pct_of_baseline", "stage"}  # those need the session's history
    for k in later:
        assert live[k].model_dump(include=sweep_local, mode="json") == \
            {f: v for f, v in offline[k].items() if f in sweep_local}, k


def test_stimulation_failure_is_raised_and_cleared_on_the_bus(procs, stack_env, tmp_path):
    """A dead stimulator (tests/analyzer/hazards.py), played from EDF+ through the real acquirer: the
    analyzer service raises the high-priority `stimulation_failure` once per direction (a condition, not
    a pulse) and clears it, same alarm_key, when the stimulator is back."""
    from .hazards import Segment, render, write_edf

    rec = render([Segment(20.0, "baseline"), Segment(10.0, "decompression", stimulator=False, amr_uv=0.0),
                  Segment(14.0, "closure")], seed=3)
    path = write_edf(tmp_path / "dead.edf", rec)
    procs.start("bus")
    procs.start("analyzer", "--metrics-port", "0")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm", "session_end", "heartbeat"))
        wait_for_analyzer(sub)
        procs.start("acquirer", "--source", f"edf:{path}", "--speed", "10", "--wait-for", "analyzer",
                    "--metrics-port", "0")
        msgs = collect(sub, lambda m, _: isinstance(m, SessionEnd), timeout=120)
        msgs += drain(sub, 2.0)
    finally:
        ctx.destroy(linger=0)
    mine = [m for m in msgs if isinstance(m, Alarm) and m.kind == "stimulation_failure"]
    for d in ("ZYG", "MAR"):
        key = f"analyzer:stimulation_failure:{d}"
        seq = [(m.state, m.priority) for m in mine if m.alarm_key == key]
        assert seq == [("raised", "high"), ("cleared", "high")], (d, [(m.alarm_key, m.state) for m in mine])
        cleared = next(m for m in mine if m.alarm_key == key and m.state == "cleared")
        assert "confirmed again" in cleared.message
