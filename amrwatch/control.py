"""The one client of the acquirer's control socket (requests and replies: proto/control.py).

Every service and the CLI talk to the acquirer through `ControlClient`, so the
socket type, its options, CURVE keys, timeouts and the wording of an unanswered
or malformed reply are written once:

- the services (analyzer, predictor, recorder) keep one client and poll its
  socket from their own loop (`send`, `replies`, `parse`): a request never
  blocks the bus;
- the CLI and the monitor's web threads ask once and wait (`request`, or the
  module-level `request` on a context of its own).

The socket is a DEALER, so several requests may be in flight (the analyzer's
`session` and `state` requests, the latter tagged by `amrwatch/sessionstate.py`);
the acquirer's ROUTER answers each with the envelope it came with. A request
that stays unanswered replaces the socket (`reconnect`, ZeroMQ's "lazy
pirate"): a late reply must never be taken for the next request's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import zmq

from . import security, sessionstate
from .bus import harden
from .proto.control import ControlReply

#: Seconds one request (mark, factors, session, retransmit) waits for its reply before the caller says so.
REQUEST_TIMEOUT_S = 3.0
#: Seconds a restarted service waits for its session's state before it goes on without it (as unknown).
STATE_TIMEOUT_S = 5.0


class ControlError(ValueError):
    """The acquirer answered with something that is not a control reply."""


def no_answer(endpoint: str, timeout_s: float) -> str:
    """The one wording of an unanswered request (the CLI, the monitor and the services' logs)."""
    return f"no acquirer answered at {endpoint} within {timeout_s:g} s"


@dataclass(frozen=True)
class Reply:
    """One reply: its head, the messages it carries (three frames each), and its tag (b"" when untagged)."""

    reply: ControlReply
    frames: list[bytes] = field(default_factory=list)
    tag: bytes = b""

    @property
    def ok(self) -> bool:
        return self.reply.ok

    @property
    def triples(self) -> list[list[bytes]]:
        """The carried messages as [topic, header, payload] triples, ready for `proto.codec.decode`."""
        return [self.frames[i:i + 3] for i in range(0, len(self.frames) - 2, 3)]


class ControlClient:
    """A DEALER connected to a control-style socket (the acquirer's control socket, the recorder's archive
    read-out), with CURVE keys when AMRWATCH_KEYS is set — or, for a process that keeps its keys elsewhere
    (the hub: its rooms file), the `curve` keys given (server public, own public, own secret). `options`
    sets further socket options before connect (the hub's reconnect and heartbeat settings)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, *, curve: tuple[bytes, bytes, bytes] | None = None,
                 options: Callable[[zmq.Socket], None] | None = None) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.curve = curve
        self.options = options
        self.socket: zmq.Socket = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        harden(sock)
        if self.options is not None:
            self.options(sock)
        if self.curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self.curve
        else:
            security.client(sock)
        sock.connect(self.endpoint)
        return sock

    # -- asynchronous use (a service's poll loop) ------------------------------------------------
    def send(self, request: dict, *, tag: bytes = b"") -> None:
        """Queue one request; its reply comes back with the same tag (b"": untagged)."""
        body = json.dumps(request).encode()
        self.socket.send_multipart([tag, b"", body] if tag else [b"", body])

    def ask_state(self, session_id: str | None) -> None:
        """Ask for a session's state (the reply is tagged: `sessionstate.is_state_reply`)."""
        self.socket.send_multipart(sessionstate.request(session_id))

    def replies(self) -> Iterator[list[bytes]]:
        """Every reply already received, as raw frames, without waiting."""
        while True:
            try:
                yield self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return

    def parse(self, parts: list[bytes]) -> Reply | None:
        """A reply's frames as a `Reply`; None for frames that are not a reply envelope at all.

        Raises `ControlError` when the head is not a `ControlReply`."""
        tag = b""
        if len(parts) >= 3 and parts[0] != b"" and parts[1] == b"":
            tag, parts = parts[0], parts[1:]
        if len(parts) < 2 or parts[0] != b"":
            return None
        try:
            head = ControlReply.model_validate_json(parts[1])
        except ValueError as err:
            raise ControlError(f"the reply from {self.endpoint} is not a control reply "
                               f"({str(err).splitlines()[0]}); ignored") from None
        return Reply(head, list(parts[2:]), tag)

    def reconnect(self) -> None:
        """A fresh socket in place of this one (after an unanswered request)."""
        self.socket.close(linger=0)
        self.socket = self._connect()

    def close(self) -> None:
        self.socket.close(linger=0)

    # -- synchronous use (the CLI, the monitor's web threads) --------------------------------------
    def request(self, request: dict, timeout_s: float = REQUEST_TIMEOUT_S) -> Reply | None:
        """Send one request and wait for its reply; None when none came within `timeout_s` (the socket is
        then replaced, so that a late reply is never taken for the next request's)."""
        self.send(request)
        if self.socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            reply = self.parse(self.socket.recv_multipart())
            if reply is not None:
                return reply
            raise ControlError(f"the reply from {self.endpoint} is not a control reply envelope")
        self.reconnect()
        return None


def request(endpoint: str, body: dict, timeout_s: float = REQUEST_TIMEOUT_S) -> Reply | None:
    """One request on a context of its own; None when no acquirer answered within `timeout_s`."""
    ctx = zmq.Context()
    client = ControlClient(ctx, endpoint)
    try:
        return client.request(body, timeout_s)
    finally:
        client.close()
        ctx.term()
