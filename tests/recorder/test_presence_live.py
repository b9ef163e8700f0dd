"""The presence log (issue #19): a real recorder on a real bus turns the reader_note messages of a session
into presence intervals in the cart's registry, and closes the ones still open with the session."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import zmq

from amrwatch.bus import Publisher
from amrwatch.proto.messages import ReaderNote
from amrwatch.registry.store import Registry

from .stack import cli, sessions, wait_closed


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_reader_notes_become_presence_rows_closed_by_the_reader_or_the_session(procs, stack_env):
    data = Path(stack_env["AMRWATCH_DATA"])
    procs.start("bus")
    procs.start("recorder")
    procs.start("acquirer", "--speed", "40", "--time-scale", "0.5", "--wait-for", "recorder")
    deadline = time.monotonic() + 60
    sid = None
    while sid is None and time.monotonic() < deadline:
        sid = next((r.session_id for r in sessions(data) if r.status == "recording"), None)
        if sid is None:
            time.sleep(0.2)
    assert sid is not None, procs.log("recorder")[-3000:]
    ctx = zmq.Context()
    try:
        # As the acquirer publishes them when the hub's `note` request reaches its control socket.
        pub = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "acquirer-notes")
        assert pub.wait_ready(10, ("reader_note",))
        sent = [pub.publish(ReaderNote, sid, reader=reader, direction="to_room", kind=kind, text=text)
                for reader, kind, text in (("reader-ana", "watching", None), ("reader-bo", "watching", None),
                                           ("reader-ana", "note", "looks fine"), ("reader-ana", "left", None))]
        until = time.monotonic() + 30
        with Registry.in_data_dir(data) as reg:
            live = reg.presence(sid)
            while len(live) < 2 or not any(p.closed_by == "reader" for p in live):
                assert time.monotonic() < until, (live, procs.log("recorder")[-3000:])
                time.sleep(0.2)
                live = reg.presence(sid)
        assert {p.reader: (p.until_at is None) for p in live} == {"reader-ana": False, "reader-bo": True}
    finally:
        pub.sock.close(0)
        ctx.term()
    rows = wait_closed(data, 1, timeout=180, procs=procs)
    assert rows[0].session_id == sid
    with Registry.in_data_dir(data) as reg:
        log = {p.reader: (p.from_at, p.until_at, p.closed_by) for p in reg.presence(sid)}
        ended = reg.get(sid).ended_at
        actors = {a.actor for a in reg.audit_trail("reader_presence")}
    assert log == {"reader-ana": (_iso(sent[0].ts_utc), _iso(sent[3].ts_utc), "reader"),
                   "reader-bo": (_iso(sent[1].ts_utc), ended, "session_end")}
    assert actors == {"recorder"}
    shown = cli(stack_env, "session", "show", sid)
    assert shown.returncode == 0, shown.stderr
    assert "reader-ana" in shown.stdout and "reader-bo" in shown.stdout and "session end" in shown.stdout
