"""After a recorder restart, a loss record names only seqs that were sent and are gone.

Before: the restarted recorder asked the acquirer for session_start 1..2000 (a probe past the newest it
had archived); the acquirer's buffer for that type had aged out, and the reply said "unavailable 1..2000",
so "2000 session_start (seq 1..2000) lost" was recorded — for messages never sent.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import zmq

from amrwatch.archive.writer import session_path
from amrwatch.archive.index import ArchiveIndex

from .stack import sessions

KEEP_S = 60.0  # the acquirer's shortest allowed retransmit buffer


def ask(endpoint: str, body: dict) -> dict:
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(json.dumps(body).encode())
        assert s.poll(5000), "the acquirer did not answer"
        return json.loads(s.recv_multipart()[0])
    finally:
        s.close(0)
        ctx.term()


def wait_for(what: str, cond, timeout: float, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def test_a_restarted_recorder_records_as_lost_only_seqs_that_were_sent_and_aged_out(procs, stack_env):
    data = Path(stack_env["AMRWATCH_DATA"])
    control = stack_env["AMRWATCH_CONTROL"]
    procs.start("bus")
    rec = procs.start("recorder")
    procs.start("acquirer", "--speed", "1", "--time-scale", "20", "--retransmit-s", str(KEEP_S),
                "--wait-for", "recorder")
    row = wait_for("a recording session", lambda: next((r for r in sessions(data) if r.status == "recording"),
                                                      None), 60)
    sid = row.session_id
    start = ask(control, {"op": "session"})
    assert start["ok"]
    d = session_path(data, sid)

    def archived_start():
        if not d.is_dir():
            return None
        with ArchiveIndex.build(d) as idx:
            return idx.session_start()

    head = wait_for("session_start durable in the archive", archived_start, 30)

    os.kill(rec.pid, signal.SIGKILL)
    rec.wait(10)
    # The acquirer goes on; wait (asking it, not sleeping) until its buffer no longer holds session_start.
    instance = head.instance

    def aged_out() -> bool:
        r = ask(control, {"op": "retransmit", "session_id": sid, "instance": instance, "type": "session_start",
                          "from_seq": 0, "to_seq": 0})
        return r["ok"] and r["n_messages"] == 0

    wait_for("session_start aged out of the acquirer's buffer", aged_out, KEEP_S + 40, step=1.0)
    procs.start("recorder", name="recorder-2")
    # The restarted recorder resumes the session and refills; wait until it has written its gap records
    # for the frames that aged out while it was away (the first live frame after the restart shows the hole).
    def refilled():
        with ArchiveIndex.build(d) as idx:
            return [g for _, g in idx.gaps if g.type == "emg_frame"]

    wait_for("the restarted recorder's loss records", refilled, 60)
    with ArchiveIndex.build(d) as idx:
        early = [g for _, g in idx.gaps if g.publisher == "acquirer" and g.type == "session_start"]
    assert not early, f"recorded as lost, though only seq 0 was ever sent (and archived): {early}"
    last_sent = {}
    for t in ("session_start", "emg_frame", "stimulus", "stage", "factors", "sim_truth"):
        r = ask(control, {"op": "retransmit", "session_id": sid, "instance": instance, "type": t,
                          "from_seq": 10**12, "to_seq": 10**12})
        assert not r["ok"] and r["detail"]["reason"] == "not_yet_sent", r
        last_sent[t] = r["detail"]["last_sent_seq"]
    procs.stop_all()
    with ArchiveIndex.build(d) as idx:
        gaps = [g for _, g in idx.gaps if g.publisher == "acquirer"]
        held = idx.seqs()
    assert not [g for g in gaps if g.type == "session_start"], gaps
    assert gaps, "no frames were lost, so nothing was shown"
    for g in gaps:
        assert 0 <= g.from_seq <= g.to_seq <= last_sent[g.type], (g, last_sent)
        archived = held.get(("acquirer", instance, g.type))
        if archived is not None:
            assert not any(seq in archived for seq in (g.from_seq, g.to_seq)), g
