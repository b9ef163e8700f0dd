"""amrwatch/control.py against real ROUTER sockets: the acquirer's own ControlServer, and a ROUTER that
answers late or not at all. Every wait is on an event or a poll with a deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from amrwatch import security, sessionstate
from amrwatch.control import REQUEST_TIMEOUT_S, ControlClient, ControlError, no_answer, request
from amrwatch.proto.control import ControlReply
from amrwatch.control_server import ControlLimits, ControlServer, configure


def _reply(**kw) -> bytes:
    return ControlReply(**kw).model_dump_json(exclude_none=True).encode()


class Router:
    """A ROUTER on a free loopback port, served by `serve(sock, stop)` on a thread of its own."""

    def __init__(self, serve: Callable[[zmq.Socket, threading.Event], None], *, curve: bool = False) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            security.server(self.sock, self.ctx)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.sock, self.stop), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close(linger=0)
        security.stop(self.ctx)
        self.ctx.term()


@pytest.fixture
def router() -> Iterator[Callable[..., Router]]:
    made: list[Router] = []

    def make(serve, **kw) -> Router:
        r = Router(serve, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def acquirer_like(handle: Callable[[dict], tuple[ControlReply, list[bytes]]]):
    """The acquirer's own ControlServer in front of `handle` (the request's JSON as a dict)."""

    def serve(sock: zmq.Socket, stop: threading.Event) -> None:
        configure(sock, ControlLimits())
        server = ControlServer(sock, lambda raw: handle(json.loads(raw)))
        while not stop.is_set():
            if sock.poll(50, zmq.POLLIN):
                server.pump()

    return serve


def test_a_refusal_comes_back_with_its_reason_and_a_session_reply_with_its_messages(router):
    def handle(req: dict):
        if req["op"] == "mark":
            return ControlReply(ok=False, error=f"stage {req['stage']!r} is not allowed now"), []
        return ControlReply(ok=True, session_id="S1", n_messages=1), [b"session_start", b"{}", b""]

    r = router(acquirer_like(handle))
    refused = request(r.endpoint, {"op": "mark", "stage": "closure"})
    assert refused is not None and not refused.ok
    assert refused.reply.error == "stage 'closure' is not allowed now" and refused.frames == []
    got = request(r.endpoint, {"op": "session"})
    assert got is not None and got.ok and got.reply.session_id == "S1"
    assert got.triples == [[b"session_start", b"{}", b""]] and got.tag == b""


def test_no_answer_within_the_timeout_is_none_and_said_in_one_wording(router):
    heard = threading.Event()

    def silent(sock: zmq.Socket, stop: threading.Event) -> None:
        while not stop.is_set():
            if sock.poll(50, zmq.POLLIN):
                sock.recv_multipart()
                heard.set()

    r = router(silent)
    t = time.monotonic()
    assert request(r.endpoint, {"op": "session"}, timeout_s=0.3) is None
    assert time.monotonic() - t >= 0.3
    assert heard.wait(5), "the request never reached the ROUTER"
    assert no_answer(r.endpoint, REQUEST_TIMEOUT_S) == f"no acquirer answered at {r.endpoint} within 3 s"


def test_after_a_timeout_a_late_reply_is_never_taken_for_the_next_requests(router):
    """Lazy pirate: the first reply comes only after the second request was sent; the client must have
    replaced its socket, so the second request gets its own reply (a reused DEALER would get the first)."""
    first_heard = threading.Event()

    def late(sock: zmq.Socket, stop: threading.Event) -> None:
        held: list[list[bytes]] = []
        while not stop.is_set():
            if not sock.poll(50, zmq.POLLIN):
                continue
            parts = sock.recv_multipart()
            envelope, body = parts[:-1], json.loads(parts[-1])
            if body.get("n") == 1:
                held.append(envelope)
                first_heard.set()
                continue
            for env in held:  # the late answer to the first request, to whoever sent it
                try:
                    sock.send_multipart([*env, _reply(ok=True, detail={"n": 1})], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            held.clear()
            sock.send_multipart([*envelope, _reply(ok=True, detail={"n": body["n"]})])

    r = router(late)
    ctx = zmq.Context()
    client = ControlClient(ctx, r.endpoint)
    try:
        old = client.socket
        assert client.request({"op": "session", "n": 1}, timeout_s=0.3) is None
        assert first_heard.wait(5)
        assert client.socket is not old and old.closed
        second = client.request({"op": "session", "n": 2}, timeout_s=5)
        assert second is not None and second.reply.detail == {"n": 2}
        # Nothing else arrives: the late reply went to the closed socket's identity and was dropped.
        assert client.socket.poll(200, zmq.POLLIN) == 0
    finally:
        client.close()
        ctx.term()


def test_a_reply_that_is_not_a_control_reply_is_an_error_naming_the_endpoint(router):
    def garbage(sock: zmq.Socket, stop: threading.Event) -> None:
        while not stop.is_set():
            if sock.poll(50, zmq.POLLIN):
                parts = sock.recv_multipart()
                sock.send_multipart([*parts[:-1], b'{"ok": "perhaps"}'])

    r = router(garbage)
    with pytest.raises(ControlError, match=f"the reply from {r.endpoint} is not a control reply"):
        request(r.endpoint, {"op": "session"})


def test_a_service_keeps_untagged_and_state_requests_in_flight_and_tells_their_replies_apart(router):
    def handle(req: dict):
        if req["op"] == "state":
            return ControlReply(ok=False, session_id=req["session_id"], error="no such session"), []
        return ControlReply(ok=True, session_id="S1"), []

    r = router(acquirer_like(handle))
    ctx = zmq.Context()
    client = ControlClient(ctx, r.endpoint)
    try:
        client.ask_state("S9")
        client.send({"op": "session"})
        got: list[list[bytes]] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            if client.socket.poll(100, zmq.POLLIN):
                got += list(client.replies())
        assert len(got) == 2
        state = [p for p in got if sessionstate.is_state_reply(p)]
        plain = [p for p in got if not sessionstate.is_state_reply(p)]
        assert len(state) == len(plain) == 1
        parsed = sessionstate.parse(state[0])
        assert parsed.session_id == "S9" and "no such session" in (parsed.unknown or "")
        tagged = client.parse(state[0])
        assert tagged is not None and tagged.tag == sessionstate.TAG and not tagged.ok
        untagged = client.parse(plain[0])
        assert untagged is not None and untagged.ok and untagged.tag == b""
        assert client.parse([b"not-an-envelope"]) is None
    finally:
        client.close()
        ctx.term()


def test_with_curve_keys_a_keyed_client_is_answered_and_an_unkeyed_one_is_not(router, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    keys = tmp_path / "keys"
    security.generate(keys, clients=("client",))
    monkeypatch.setenv("AMRWATCH_KEYS", str(keys))
    r = router(acquirer_like(lambda req: (ControlReply(ok=True, session_id="S1"), [])), curve=True)
    got = request(r.endpoint, {"op": "session"}, timeout_s=5)
    assert got is not None and got.ok and got.reply.session_id == "S1"
    monkeypatch.delenv("AMRWATCH_KEYS")
    assert request(r.endpoint, {"op": "session"}, timeout_s=0.5) is None
