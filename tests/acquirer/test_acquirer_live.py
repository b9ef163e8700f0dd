"""The acquirer as a real process: frames tile the timeline, operator inputs are acknowledged."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import zmq

from amrwatch.bus import Subscriber
from amrwatch.control import request as control_request
from amrwatch.proto.codec import decode
from amrwatch.proto.messages import EmgFrame, Factors, SessionEnd, SessionStart, SimTruth, StageMarker, Stimulus


def _ask(endpoint: str, body: dict):
    """(reply head, carried frames) of one control request; fails the test when none came."""
    r = control_request(endpoint, body)
    assert r is not None, f"no reply from {endpoint} to {body}"
    return r.reply, r.frames


def run_cli(env, *args, timeout=30):
    return subprocess.run([sys.executable, "-m", "amrwatch", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def collect(sub, until, timeout=60):
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is None:
            continue
        out.append(msg)
        if until(msg):
            return out
    raise AssertionError(f"timed out after {len(out)} messages")


def test_sim_session_end_to_end(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("",))
        # The acquirer waits until a subscriber's subscription reaches it: nothing is lost to the slow joiner.
        acq = procs.start("acquirer", "--speed", "40", "--time-scale", "0.1", "--scenario", "persists-unexpected",
                          "--sample-index-channel", "--seed", "5")
        msgs = collect(sub, lambda m: isinstance(m, SessionEnd), timeout=90)
        assert acq.wait(timeout=20) == 0
    finally:
        ctx.destroy(linger=0)
    assert sub.lost == 0
    start = next(m for m in msgs if isinstance(m, SessionStart))
    assert start.scenario == "persists-unexpected" and start.ground_truth
    frames = [m for m in msgs if isinstance(m, EmgFrame)]
    idx = [f.first_sample_index for f in frames]
    assert idx[0] == 0 and all(b - a == f.n_samples for a, b, f in zip(idx, idx[1:], frames))
    names = start.montage.channel_names()
    k = names.index("SAMPLE_INDEX")
    whole = np.concatenate([f.samples[k] for f in frames])
    assert np.array_equal(whole, (np.arange(whole.size) % 2**24).astype(np.float32))
    end = msgs[-1]
    assert end.n_samples == whole.size and end.n_frames == len(frames)
    stims = [m for m in msgs if isinstance(m, Stimulus)]
    assert [s.stimulus_index for s in stims] == list(range(len(stims))) and end.n_stimuli == len(stims)
    assert {s.direction for s in stims} == {"ZYG", "MAR"}
    truths = [m for m in msgs if isinstance(m, SimTruth)]
    assert {t.stimulus_index for t in truths} == {s.stimulus_index for s in stims}
    stages = [m.stage for m in msgs if isinstance(m, StageMarker)]
    assert stages[0] == "baseline" and stages[-1] == "end" and "decompression" in stages
    factors = {}
    for m in msgs:
        if isinstance(m, Factors):
            factors.update(m.factors.given())
    assert set(factors) == {"duration_years", "cohen_grade", "carbamazepine", "vessels", "retraction_mm",
                            "displacement"}


def test_operator_inputs_and_control_socket(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("stage", "factors", "session_start", "emg_frame"))
        procs.start("acquirer", "--manual", "--speed", "1")
        first = collect(sub, lambda m: isinstance(m, EmgFrame), timeout=30)
        start = next(m for m in first if isinstance(m, SessionStart))

        ok = run_cli(stack_env, "mark", "decompression")
        assert ok.returncode == 0, ok.stderr
        assert start.session_id in ok.stdout
        bad = run_cli(stack_env, "factors", "--cohen-grade", "9", "--vessels", "2")
        assert bad.returncode == 1 and "cohen_grade" in bad.stderr and "1 to 4" in bad.stderr and "9" in bad.stderr
        good = run_cli(stack_env, "factors", "--cohen-grade", "3", "--carbamazepine", "yes", "--retraction-mm", "8.5")
        assert good.returncode == 0, good.stderr
        usage = run_cli(stack_env, "mark", "tea_time")
        assert usage.returncode == 2 and "tea_time" in usage.stderr

        got = collect(sub, lambda m: isinstance(m, Factors), timeout=20)
        marks = [m for m in got if isinstance(m, StageMarker)]
        assert [(m.stage, m.source) for m in marks] == [("decompression", "operator")]
        f = next(m for m in got if isinstance(m, Factors))
        assert f.factors.given() == {"cohen_grade": 3, "carbamazepine": True, "retraction_mm": 8.5}
        assert f.session_id == start.session_id

        # The acquirer refuses a malformed request itself too (a client that skipped validation).
        reply, _ = _ask(stack_env["AMRWATCH_CONTROL"], {"op": "factors", "factors": {"vessels": 17}})
        assert reply.ok is False and "vessels" in reply.error and "17" in reply.error

        # Session info and retransmit return the original wire messages.
        reply, extra = _ask(stack_env["AMRWATCH_CONTROL"], {"op": "session"})
        assert reply.ok and decode(extra[:3]) .session_id == start.session_id
        frame0 = next(m for m in first if isinstance(m, EmgFrame))
        reply, extra = _ask(stack_env["AMRWATCH_CONTROL"], {
            "op": "retransmit", "session_id": start.session_id, "instance": frame0.instance,
            "type": "emg_frame", "from_seq": frame0.seq, "to_seq": frame0.seq + 4})
        assert reply.ok and reply.n_messages == 5
        again = [decode(extra[i:i + 3]) for i in range(0, len(extra), 3)]
        assert [m.seq for m in again] == list(range(frame0.seq, frame0.seq + 5))
        assert again[0] == frame0
        reply, _ = _ask(stack_env["AMRWATCH_CONTROL"], {
            "op": "retransmit", "session_id": start.session_id, "instance": "deadbeef",
            "type": "emg_frame", "from_seq": 0, "to_seq": 1})
        assert not reply.ok and "deadbeef" in reply.error
    finally:
        ctx.destroy(linger=0)


def test_operator_command_without_a_stack_says_what_to_do(stack_env):
    r = run_cli(stack_env, "mark", "baseline")
    assert r.returncode == 1 and "amrwatch up" in r.stderr


def test_events_json_lines(procs, stack_env):
    procs.start("bus")
    ev = subprocess.Popen([sys.executable, "-m", "amrwatch", "events", "--json", "--type", "stimulus",
                           "--type", "session_end"], env=stack_env, stdout=subprocess.PIPE, text=True)
    procs.start("acquirer", "--speed", "50", "--time-scale", "0.05", "--wait-timeout", "20")
    out, _ = ev.communicate(timeout=90)
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and rows[-1]["type"] == "session_end"
    for r in rows:
        for field in ("type", "schema_version", "session_id", "seq", "ts_utc"):
            assert field in r
    assert [r["stimulus_index"] for r in rows[:-1]] == list(range(len(rows) - 1))
