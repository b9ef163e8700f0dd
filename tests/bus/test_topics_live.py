"""Each service subscribes to the types it needs, and its gap tracking stays right.

A real bus (`run_proxy`, loopback TCP) carries every message type, interleaved, from one publisher; one
subscriber per service subscribes with that service's own `topics`. Each must get exactly its types (the
predictor never sees a frame: ZeroMQ filters at the publisher), the types it did not ask for never reach
its decoder, and no gap is reported although most of each publisher's messages went elsewhere (seq runs
per (publisher, type)). Then one stimulus is withheld: only the subscribers of stimuli see the gap."""

from __future__ import annotations

import threading
import time

import zmq
from amrwatch.proto.messages import BY_TYPE

from amrwatch.bus import Publisher, Subscriber, run_proxy

from ..conftest import free_port
from ..proto.examples import BODIES, example


def service_topics() -> dict[str, tuple[str, ...]]:
    from amrwatch.services.analyzer.service import Analyzer
    from amrwatch.services.monitor.service import Monitor
    from amrwatch.services.predictor.service import Predictor
    from amrwatch.services.recorder.service import Recorder

    return {c.name: tuple(c.topics) for c in (Analyzer, Predictor, Recorder, Monitor)}


def test_each_service_gets_its_types_and_no_false_gaps():
    topics = service_topics()
    assert "emg_frame" not in topics["predictor"] and topics["recorder"] == ("",)
    ctx = zmq.Context()
    bin_, bout = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    bus = threading.Thread(target=run_proxy, args=(ctx, bin_, bout), kwargs={"stop": stop.is_set}, daemon=True)
    bus.start()
    events: dict[str, list] = {name: [] for name in topics}
    subs = {name: Subscriber(ctx, bout, t, on_seq=events[name].append) for name, t in topics.items()}
    pub = Publisher(ctx, bin_, "acquirer")
    try:
        # every subscriber's subscriptions are in place at the bus: each has heard the bus's heartbeat
        # (they are sent together on connect), and they have reached the publisher
        for name, sub in subs.items():
            deadline = time.monotonic() + 20
            while not ((m := sub.recv(100)) is not None and m.publisher == "bus"):
                assert time.monotonic() < deadline, f"{name} never heard the bus"
        for t in {t for ts in topics.values() for t in ts if t}:
            assert pub.wait_ready(10, (t,)), t
        rounds = 20
        withheld = 7
        for i in range(rounds):
            for type_ in sorted(BODIES):
                msg = example(type_)
                m = pub.build(type(msg), msg.session_id if msg.session_id else None, **{
                    k: getattr(msg, k) for k in BODIES[type_]},
                    **({"samples": msg.samples} if type_ == "emg_frame" else {}))
                if type_ == "stimulus" and i == withheld:
                    pub._seq["stimulus"] += 1  # sent by nobody: a gap for whoever takes stimuli
                    continue
                pub.send(m)
        expected = {name: {t for t in BY_TYPE if "" in ts or t in ts} for name, ts in topics.items()}
        got: dict[str, dict[str, int]] = {name: {} for name in topics}
        deadline = time.monotonic() + 20
        want = {name: sum(rounds - (t == "stimulus") for t in exp if t in BODIES) for name, exp in expected.items()}
        while time.monotonic() < deadline and any(sum(got[n].values()) < want[n] for n in topics):
            for name, sub in subs.items():
                msg = sub.recv(10)
                if msg is not None and msg.publisher == "acquirer":
                    got[name][msg.type] = got[name].get(msg.type, 0) + 1
        for name in topics:
            assert set(got[name]) == {t for t in expected[name] if t in BODIES}, name
            assert sum(got[name].values()) == want[name], (name, got[name])
            gaps = [e for e in events[name] if e.kind in ("gap", "duplicate") and e.publisher == "acquirer"]
            if "stimulus" in expected[name]:
                assert [(e.type, e.expected, e.got) for e in gaps] == [("stimulus", withheld, withheld + 1)], name
            else:
                assert gaps == [], name
        # the predictor asked for 'alarm': ZeroMQ's prefix let 'alarm_ack' through, dropped before decoding
        assert subs["predictor"].unasked == rounds
        assert subs["analyzer"].unasked == 0
    finally:
        stop.set()
        bus.join(10)
        pub.close()
        for s in subs.values():
            s.close()
        ctx.term()
