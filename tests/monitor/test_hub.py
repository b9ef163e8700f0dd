"""Fan-out to the page's clients: numbered, complete, and never thinned."""

from __future__ import annotations

import json
import random
import threading

from amrwatch.services.monitor.hub import Hub
from amrwatch.services.monitor.view import SessionView

from .build import FS, Stream, session_messages, session_signal


def _lines(client):
    lines, reason = client.take()
    return [json.loads(x) for x in lines], reason


def test_a_client_gets_its_snapshot_then_every_later_message_exactly_once_in_order():
    st = Stream()
    x, stims = session_signal(30)
    msgs = session_messages(st, x, stims)
    hub = Hub(SessionView(), limit=100_000)
    first_n: dict[int, int] = {}
    clients = {}

    def feeder():
        for m in msgs:
            hub.feed(m)
            if m.type == "stimulus":
                hub.feed(st.measurement(m.stimulus_index, "MENT", m.direction, m.stim_time_s, 50.0))

    t = threading.Thread(target=feeder)
    t.start()
    rnd = random.Random(4)
    for cid in range(6):  # clients join at arbitrary moments while the feed runs
        threading.Event().wait(rnd.uniform(0, 0.05))
        c, first = hub.connect(lambda: None)
        clients[cid] = c
        first_n[cid] = json.loads(first)["n"]
    t.join()
    total = hub.n
    for cid, c in clients.items():
        items, reason = _lines(c)
        assert reason is None
        ns = [i["n"] for i in items]
        assert ns == list(range(first_n[cid] + 1, total + 1)), f"client {cid} missed or repeated messages"
    # what a client joining now missed is all in its snapshot
    c, first = hub.connect(lambda: None)
    snap = json.loads(first)["snapshot"]
    assert snap["trend"]["MENT"]["i"] == [k for k, _, _ in stims]


def test_a_client_that_falls_behind_is_closed_with_the_reason_and_can_resync():
    st = Stream()
    hub = Hub(SessionView(), limit=10)
    wakes = []
    slow, _ = hub.connect(lambda: wakes.append(1))
    fast, _ = hub.connect(lambda: None)
    hub.feed(st.start())
    for k in range(20):
        hub.feed(st.measurement(k, "MENT", "ZYG", k / 2, 40.0))
        if k % 5 == 0:
            _lines(fast)  # this one keeps up
    lines, reason = slow.take()
    assert lines == [] and "fell 10 messages behind" in reason and "snapshot" in reason
    assert slow not in hub.clients and fast in hub.clients and hub.overflows == 1
    assert wakes  # its sender was woken to deliver the reason
    again, first = hub.connect(lambda: None)
    snap = json.loads(first)
    assert snap["n"] == hub.n and len(snap["snapshot"]["trend"]["MENT"]["i"]) == 20


def test_disconnected_clients_receive_nothing_more():
    hub = Hub(SessionView())
    c, _ = hub.connect(lambda: None)
    hub.disconnect(c)
    hub.feed(Stream().start())
    assert c.take() == ([], None)


def test_stimulus_times_survive_in_sweeps_sent_through_the_hub():
    st = Stream()
    x, stims = session_signal(2)
    hub = Hub(SessionView())
    c, _ = hub.connect(lambda: None)
    for m in session_messages(st, x, stims):
        hub.feed(m)
    items, _ = _lines(c)
    sweeps = [i["sweep"] for i in items if i["kind"] == "sweep"]
    assert [(s["stimulus_index"], s["channel"], s["stim_time_s"]) for s in sweeps] == [
        (0, "MENT", stims[0][1] / FS), (0, "OORIS", stims[0][1] / FS), (1, "OOCUL", stims[1][1] / FS)]
