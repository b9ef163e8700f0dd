"""The bus as a real process: publishers and subscribers on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import zmq

from amrwatch.bus import Publisher, Subscriber
from amrwatch.proto.codec import encode
from amrwatch.proto.messages import Heartbeat, StageMarker

from ..proto.examples import example


def wait_for_bus(ctx, endpoint, timeout=10.0) -> Subscriber:
    """A subscriber that has seen the bus's own heartbeat: the path exists."""
    sub = Subscriber(ctx, endpoint, ("",))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if isinstance(msg, Heartbeat) and msg.service == "bus":
            return sub
    raise AssertionError(f"no bus heartbeat on {endpoint}")


def test_publisher_waits_for_subscription_then_nothing_is_lost(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = wait_for_bus(ctx, stack_env["AMRWATCH_BUS_OUT"])
        pub = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "tester")
        assert pub.wait_ready(10), "the proxy never forwarded a subscription"
        for i in range(500):
            pub.publish(StageMarker, "S1", stage="baseline", source="operator", sample_index=i)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 500 and time.monotonic() < deadline:
            msg = sub.recv(200)
            if isinstance(msg, StageMarker):
                got.append(msg.seq)
        assert got == list(range(500))
        assert sub.lost == 0
    finally:
        ctx.destroy(linger=0)


def test_publisher_without_subscribers_is_not_ready(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "tester")
        # The proxy only forwards subscriptions it has; with no subscriber there are none.
        assert pub.wait_ready(1.0) is False
    finally:
        ctx.destroy(linger=0)


def test_skipped_seq_is_reported_by_events_client(procs, stack_env):
    """A publisher that skips seq numbers: `amrwatch events` names the gap."""
    procs.start("bus")
    ctx = zmq.Context()
    ev = subprocess.Popen(
        [sys.executable, "-m", "amrwatch", "events", "--json", "--type", "stage", "--timeout", "3"],
        env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        raw = ctx.socket(zmq.XPUB)
        raw.connect(stack_env["AMRWATCH_BUS_IN"])
        assert raw.poll(15000, zmq.POLLIN), "events client never subscribed"
        raw.recv()
        for seq in (0, 1, 2, 7, 8):
            msg = example("stage", seq=seq)
            raw.send_multipart(encode(msg))
        out, err = ev.communicate(timeout=20)
    finally:
        if ev.poll() is None:
            ev.kill()
        ctx.destroy(linger=0)
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == [0, 1, 2, 7, 8]
    assert "expected seq 3, got 7 (4 message(s) lost)" in err


def test_malformed_messages_do_not_stop_a_subscriber(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    rejected = []
    try:
        sub = wait_for_bus(ctx, stack_env["AMRWATCH_BUS_OUT"])
        sub.on_reject = lambda reason, text, frames: rejected.append(reason)
        raw = ctx.socket(zmq.XPUB)
        raw.connect(stack_env["AMRWATCH_BUS_IN"])
        assert raw.poll(10000, zmq.POLLIN)
        raw.recv()
        raw.send_multipart([b"stage", b"{not json", b""])
        raw.send_multipart([b"nonsense", b"{}", b""])
        raw.send_multipart([b"stage"])
        raw.send_multipart(encode(example("stage", seq=0)))
        good = None
        deadline = time.monotonic() + 10
        while good is None and time.monotonic() < deadline:
            msg = sub.recv(200)
            if isinstance(msg, StageMarker):
                good = msg
        assert good is not None and good.stage == "decompression"
        assert sorted(rejected) == ["frame_count", "invalid", "unknown_topic"]
    finally:
        ctx.destroy(linger=0)
