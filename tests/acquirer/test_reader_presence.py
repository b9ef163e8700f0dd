"""The cart's own word on a remote reader's link (issue #19): a reader that said it watches and then falls
silent is logged as cut off (`reader_note` link_lost, its presence interval ending when last heard), and is
restored when heard again — on a real acquirer with CURVE, a real recorder and its registry.

The reader here is a bare control client with the reader's key (what the hub's link does), so the silence is
the reader's, not a network fault's: the cart cannot tell the two apart, which is the point.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import zmq

from amrwatch import security
from amrwatch.bus import Subscriber
from amrwatch.control import ControlClient
from amrwatch.proto.messages import ReaderNote
from amrwatch.registry.store import Registry
from amrwatch.services.acquirer.readers import ReaderWatch

LOST_S = 20.0  # the smallest --reader-lost-s allowed (two of the hub's 10 s probes)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_watch_declares_a_silent_reader_lost_once_and_restores_it_when_heard():
    utc = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
    w = ReaderWatch(LOST_S)
    w.watching("anna", 100.0, utc)
    assert not w.heard("bo", 101.0, utc)  # not a watching reader: nothing to say
    assert w.newly_lost(100.0 + LOST_S) == []  # at the bound, not past it
    assert w.heard("anna", 110.0, utc + dt.timedelta(seconds=10)) is False
    assert w.newly_lost(110.0 + LOST_S + 0.1) == [("anna", utc + dt.timedelta(seconds=10))]
    assert w.newly_lost(200.0) == []  # declared once
    assert w.watching_now == []
    assert w.heard("anna", 201.0, utc) is True and w.watching_now == ["anna"]
    w.left("anna")
    assert w.newly_lost(1000.0) == [] and not w.heard("anna", 1001.0, utc)


def test_watch_refuses_a_threshold_a_healthy_reader_would_cross():
    import pytest

    with pytest.raises(ValueError, match=r"--reader-lost-s must be 20 to 600 seconds.*got 5"):
        ReaderWatch(5)


def test_a_silent_reader_is_logged_cut_off_when_last_heard_and_reopened_when_heard_again(
        procs, stack_env, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "reader-anna"))
    stack_env["AMRWATCH_KEYS"] = str(keys)
    data = Path(stack_env["AMRWATCH_DATA"])
    procs.start("bus")
    procs.start("recorder")
    procs.start("acquirer", "--speed", "1", "--loop", "--wait-for", "recorder", "--reader-lost-s", f"{LOST_S:g}")
    monkeypatch.setenv("AMRWATCH_KEYS", str(keys))
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("reader_note",))
        monkeypatch.setenv("AMRWATCH_CLIENT_KEY", "reader-anna")
        reader = ControlClient(ctx, stack_env["AMRWATCH_CONTROL"])
        monkeypatch.setenv("AMRWATCH_CLIENT_KEY", "client")

        def ask(body: dict, what: str) -> None:
            deadline = time.monotonic() + 60
            while True:
                r = reader.request(body, timeout_s=5)
                if r is not None and r.ok:
                    return
                assert time.monotonic() < deadline, (what, r and r.reply, procs.log("acquirer")[-2000:])
                time.sleep(0.5)  # the acquirer has no session yet: ask again (its reply says so)

        def note(kind: str, timeout_s: float) -> ReaderNote:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                m = sub.recv(200)
                if isinstance(m, ReaderNote) and m.kind == kind:
                    return m
            raise AssertionError(f"no reader_note {kind} within {timeout_s:g} s: {procs.log('acquirer')[-2000:]}")

        ask({"op": "note", "kind": "watching"}, "watching")
        watching = note("watching", 30)
        assert watching.reader == "reader-anna"
        silent_from = time.monotonic()
        lost = note("link_lost", LOST_S + 30)
        waited = time.monotonic() - silent_from
        print(f"silent reader declared lost after {waited:.1f} s (--reader-lost-s {LOST_S:g})")
        assert waited >= LOST_S - 1.0  # not before the threshold (the cart's check runs every second)
        assert lost.reader == "reader-anna" and lost.session_id == watching.session_id
        # the interval ends when the reader was last heard (its watching request), not when the loss was noticed
        assert lost.last_heard_utc is not None
        assert abs((lost.last_heard_utc - watching.ts_utc).total_seconds()) < 1.0
        assert (lost.ts_utc - lost.last_heard_utc).total_seconds() >= LOST_S - 1.0

        ask({"op": "streams"}, "streams")  # any request: the hub's probe, here
        restored = note("link_restored", 30)
        assert restored.reader == "reader-anna"

        sid = watching.session_id
        want = [(_iso(lost.last_heard_utc), "link_lost"), (None, None)]
        deadline = time.monotonic() + 30
        with Registry.in_data_dir(data) as reg:
            while True:
                log = reg.presence(sid)
                if [(p.until_at, p.closed_by) for p in log] == want:
                    break
                assert time.monotonic() < deadline, (log, procs.log("recorder")[-3000:])
                time.sleep(0.2)  # polling the registry with a deadline
        assert log[0].from_at <= _iso(watching.ts_utc) and log[1].from_at == _iso(restored.ts_utc)
        reader.close()
        sub.sock.close(0)
    finally:
        ctx.destroy(linger=0)
