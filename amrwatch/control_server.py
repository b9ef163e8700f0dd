"""A control-style ROUTER socket served so that no request pattern can delay the loop that owns it.

Shared by the acquirer's control socket and the recorder's archive read-out
(services/recorder/readout.py): the platform room holds it so both services
use one class (docs/architecture.md: services import `amrwatch`, never each
other). Written first for the acquirer, whose case is the hardest: it
answers control requests on the same loop that paces and publishes the frames (ZeroMQ sockets are not thread-safe, and a stage marker
or factors message must be published by the socket that publishes the rest).
Served naively, 200 pipelined `retransmit` requests for `emg_frame`
0..10^12 held the loop for seconds (each reply 2,000 frames), and a client
that sent 500 of them and never read its replies grew the acquirer to
1.93 GB (every reply queued in ZeroMQ for it). So:

- **a budget per turn of the loop**: after at most `turn_budget_s` of work or
  `turn_budget_bytes` of replies the loop goes back to the frames; what is
  left waits in per-client queues for the next turn (at least one request is
  answered per turn, so control always progresses);
- **per-client limits**: at most `max_pending` requests (`max_pending_bytes`)
  received and not yet answered per client, and at most `max_clients` clients
  waiting; beyond them a request is refused at once, the refusal naming the
  limit;
- **fair**: waiting clients are served round-robin, one request each;
- **bounded memory whatever a client does**: requests larger than
  `max_request_bytes` are refused by ZeroMQ itself (MAXMSGSIZE); replies to
  one client are queued up to `sndhwm` replies (each at most the reply cap
  set in the acquirer, MAX_REPLY_BYTES), and a reply to a client that does
  not read them is dropped (ROUTER_MANDATORY makes the full queue visible)
  and counted, never queued without limit.

Socket-free apart from `pump`, which reads and writes the ROUTER socket it is given.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from .proto.control import ControlReply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlLimits:
    turn_budget_s: float = 0.002
    """Work per turn of the acquirer's loop (a frame period at speed 1 is 5 ms)."""
    turn_budget_bytes: int = 1024 * 1024
    """Reply bytes per turn."""
    max_pending: int = 8
    """Requests received from one client and not yet answered."""
    max_pending_bytes: int = 64 * 1024
    """Bytes of those requests."""
    max_clients: int = 32
    """Clients with requests waiting at once."""
    max_request_bytes: int = 16 * 1024
    """Largest request part accepted (ZeroMQ drops the connection of a peer that sends more)."""
    sndhwm: int = 8
    """Replies queued to one client before further replies to it are dropped."""
    reads_per_turn: int = 256
    """Requests taken off the socket per turn (the rest wait in ZeroMQ's bounded queue)."""


def configure(sock: zmq.Socket, limits: ControlLimits) -> None:
    """Socket options the bounds rely on; call before bind."""
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_request_bytes)
    sock.setsockopt(zmq.SNDHWM, limits.sndhwm)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, KeyError):  # no ZAP handler on this socket (no CURVE)
        return None
    return user if isinstance(user, str) else None


@dataclass
class _Client:
    queue: deque
    nbytes: int = 0
    refused: int = 0
    dropped: int = 0


class ControlServer:
    """Per-client queues in front of `handle(raw) -> (ControlReply, extra frames)`."""

    def __init__(self, sock: zmq.Socket, handle: Callable[[bytes], tuple[ControlReply, list[bytes]]],
                 limits: ControlLimits | None = None, *,
                 on_refuse: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sock = sock
        self.handle = handle
        self.limits = limits or ControlLimits()
        self.on_refuse = on_refuse
        self.clock = clock
        self.clients: OrderedDict[bytes, _Client] = OrderedDict()
        self.answered = 0
        self.refused = 0
        self.dropped = 0
        self.malformed = 0
        #: The authenticated peer of the request being handled: its ZeroMQ User-Id (with CURVE, the name of
        #: its authorized key, amrwatch/security.py), None without CURVE.
        self.current_user: str | None = None

    @property
    def pending(self) -> int:
        return sum(len(c.queue) for c in self.clients.values())

    def pump(self) -> None:
        """One turn: take waiting requests off the socket, answer within the budget."""
        start = self.clock()
        self._read()
        spent = 0
        served = 0
        lim = self.limits
        while self.clients and (served == 0 or (self.clock() - start < lim.turn_budget_s
                                                  and spent < lim.turn_budget_bytes)):
            ident, client = next(iter(self.clients.items()))
            envelope, raw, self.current_user = client.queue.popleft()
            client.nbytes -= len(raw)
            if client.queue:
                self.clients.move_to_end(ident)  # round-robin: one request per client per round
            else:
                del self.clients[ident]
            try:
                reply, extra = self.handle(raw)
            finally:
                self.current_user = None
            spent += self._send(envelope, reply, extra, client)
            served += 1
            self.answered += 1

    def _read(self) -> None:
        lim = self.limits
        for _ in range(lim.reads_per_turn):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            parts = [f.bytes for f in frames]
            if len(parts) < 3 or parts[-2] != b"":
                self.malformed += 1
                if self.malformed in (1, 10, 100) or self.malformed % 1000 == 0:
                    log.warning("control: malformed request envelope (%d frames) dropped (%d so far)", len(parts),
                                self.malformed)
                continue
            envelope, raw = parts[:-1], parts[-1]
            ident = parts[0]
            client = self.clients.get(ident)
            if client is None:
                if len(self.clients) >= lim.max_clients:
                    self._refuse(envelope, "clients_waiting", lim.max_clients,
                                 f"control socket busy: {len(self.clients)} clients have requests waiting "
                                 f"(limit {lim.max_clients}); try again shortly")
                    continue
                client = self.clients[ident] = _Client(deque())
            if len(client.queue) >= lim.max_pending:
                self._refuse(envelope, "outstanding_requests", lim.max_pending,
                             f"too many requests from this client not yet answered: limit {lim.max_pending} "
                             "(send the next one when a reply has come)", client)
            elif client.nbytes + len(raw) > lim.max_pending_bytes:
                self._refuse(envelope, "outstanding_bytes", lim.max_pending_bytes,
                             f"requests from this client not yet answered would hold {client.nbytes + len(raw)} "
                             f"bytes: limit {lim.max_pending_bytes} bytes", client)
            else:
                client.queue.append((envelope, raw, _user_id(frames[-1])))
                client.nbytes += len(raw)
            if not client.queue:
                del self.clients[ident]

    def _refuse(self, envelope: list[bytes], limit: str, allowed: int, text: str,
                client: _Client | None = None) -> None:
        self.refused += 1
        reply = ControlReply(ok=False, error=f"request refused: {text}", detail={"limit": limit, "allowed": allowed})
        self._send(envelope, reply, [], client)
        if client is not None:
            client.refused += 1
        if self.on_refuse is not None:
            self.on_refuse(limit, text)

    def _send(self, envelope: list[bytes], reply: ControlReply, extra: list[bytes], client: _Client | None) -> int:
        head = reply.model_dump_json().encode()
        try:
            self.sock.send_multipart([*envelope, head, *extra], zmq.NOBLOCK)
        except zmq.Again:
            self._dropped(client, "does not read its replies (its queue of "
                          f"{self.limits.sndhwm} replies is full)")
            return 0
        except zmq.ZMQError as err:
            if err.errno != zmq.EHOSTUNREACH:
                raise
            self._dropped(client, "has gone")
            return 0
        return len(head) + sum(len(f) for f in extra)

    def _dropped(self, client: _Client | None, why: str) -> None:
        self.dropped += 1
        if client is not None:
            client.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("control: reply dropped, the client %s (%d dropped so far)", why, self.dropped)
