"""The event bus: an XSUB/XPUB proxy, and the publisher/subscriber ends.

Topology (proto/README.md has the full page): every service *connects* a
publisher to the proxy's XSUB endpoint (`bus_in`) and a subscriber to its XPUB
endpoint (`bus_out`), so one address gives everything.

PUB/SUB loses messages and says nothing; we do not pretend otherwise:
- every message carries a per-(publisher instance, type) gap-free `seq`, and
  every subscriber runs a `GapTracker` that counts and reports jumps;
- publishers use an XPUB socket so they *see* subscriptions arrive and can
  wait for the path to exist instead of sleeping (the slow-joiner);
- the recorder does not rely on PUB/SUB alone: it refills gaps from the
  acquirer's retransmit buffer over the control socket.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import dataclass

import numpy as np
import zmq

from . import security
from .proto.codec import FAST, MAX_PART_BYTES, DecodeError, decode, encode
from .proto.messages import BY_TYPE, SCHEMA_VERSION, EmgFrame, Heartbeat, Message, utc_now

log = logging.getLogger(__name__)

#: Queue depth (messages) before ZeroMQ drops on a PUB/XPUB or blocks a SUB.
DEFAULT_HWM = 200_000


def new_instance_id() -> str:
    return secrets.token_hex(4)


def harden(sock: zmq.Socket) -> None:
    """Socket options every amrwatch socket gets: bounded input, no linger."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_PART_BYTES + 1024)
    sock.setsockopt(zmq.LINGER, 500)


# --------------------------------------------------------------------------- #
# Sequence tracking (pure)


@dataclass(frozen=True)
class SeqEvent:
    """What the tracker noticed about one message."""

    kind: str  # "gap" | "duplicate" | "joined" | "restarted"
    publisher: str
    instance: str
    type: str
    expected: int
    got: int

    @property
    def missing(self) -> int:
        return self.got - self.expected if self.kind == "gap" else 0

    def describe(self) -> str:
        who = f"{self.publisher}/{self.instance} {self.type}"
        if self.kind == "gap":
            return (
                f"sequence gap from {who}: expected seq {self.expected}, got {self.got} "
                f"({self.missing} message(s) lost)"
            )
        if self.kind == "duplicate":
            return f"duplicate or out-of-order seq from {who}: expected {self.expected}, got {self.got}"
        if self.kind == "restarted":
            return f"{self.publisher} restarted (new instance {self.instance}); its seq starts again"
        return f"joined {who} at seq {self.got}"


class GapTracker:
    """Follows seq per (publisher, instance, type) stream.

    A stream seen for the first time at seq > 0 is a late join, reported as
    `joined` (the subscriber was not there), not as loss; a subscriber that
    must have everything (the recorder) asks for 0..seq-1 itself."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str, str], int] = {}
        self._instance: dict[str, str] = {}

    def track(self, msg: Message) -> SeqEvent | None:
        return self.observe(msg.publisher, msg.instance, msg.type, msg.seq)

    def observe(self, publisher: str, instance: str, type_: str, seq: int) -> SeqEvent | None:
        key = (publisher, instance, type_)
        expected = self._next.get(key)
        self._next[key] = max(seq + 1, expected or 0)
        if expected is None:
            previous = self._instance.get(publisher)
            self._instance[publisher] = instance
            restarted = previous is not None and previous != instance
            if restarted and seq > 0:
                # We were listening when it restarted: its first messages were lost.
                return SeqEvent("gap", publisher, instance, type_, 0, seq)
            if restarted:
                return SeqEvent("restarted", publisher, instance, type_, 0, seq)
            return SeqEvent("joined", publisher, instance, type_, 0, seq) if seq > 0 else None
        if seq == expected:
            return None
        if seq > expected:
            return SeqEvent("gap", publisher, instance, type_, expected, seq)
        return SeqEvent("duplicate", publisher, instance, type_, expected, seq)


# --------------------------------------------------------------------------- #
# Publisher


_MORE = int(zmq.SNDMORE)
#: The fields the publisher stamps; a body that gives one again is pydantic's to refuse (a TypeError).
_ENVELOPE = frozenset(("type", "schema_version", "session_id", "seq", "publisher", "instance", "ts_utc"))
_F4 = np.dtype("<f4")


class Publisher:
    """Stamps the envelope (seq, instance, time) and sends.

    Uses XPUB rather than PUB so it can tell when the proxy's subscriptions
    have reached it: `wait_ready()` is the slow-joiner fix without a sleep."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        name: str,
        *,
        hwm: int = DEFAULT_HWM,
        instance: str | None = None,
        configure: Callable[[zmq.Socket], None] | None = None,
    ) -> None:
        self.name = name
        self.instance = instance or new_instance_id()
        self.sock = ctx.socket(zmq.XPUB)
        harden(self.sock)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        if configure:
            configure(self.sock)
        security.client(self.sock, endpoint)  # keyed unlike the bus: an error with the hint, not silence
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self._seq: dict[str, int] = {}
        self._subscriptions: set[bytes] = set()
        #: The last message `build` made on the fast path, with its frames: `send` sends those bytes.
        self._built: tuple[Message, list] | None = None
        self.on_sent: list[Callable[[Message, list[bytes]], None]] = []
        self._copy_threshold = self.sock.copy_threshold

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                event = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self._subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                self._subscriptions.discard(event[1:])

    def reset_ready(self) -> None:
        """Forget seen subscriptions (the proxy restarted; they must arrive again)."""
        self._drain_subscriptions()
        self._subscriptions.clear()

    def _covered(self, topics: tuple[str, ...] | None) -> bool:
        if topics is None:
            return bool(self._subscriptions)
        return any(t.encode().startswith(p) for p in self._subscriptions for t in topics)

    def wait_ready(self, timeout_s: float, topics: tuple[str, ...] | None = None) -> bool:
        """Block until the proxy has forwarded a subscription that covers
        one of `topics` (any subscription if None): someone is listening."""
        deadline = time.monotonic() + timeout_s
        self._drain_subscriptions()
        while not self._covered(topics):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                self._drain_subscriptions()
        return True

    def next_seq(self, type_: str) -> int:
        return self._seq.get(type_, 0)

    def build(self, cls: type[Message], session_id: str | None, **body) -> Message:
        samples = body.pop("samples", None)
        fast = FAST.get(cls.TOPIC)
        if fast is not None:
            if samples is not None:
                msg = self._build_fast(fast, cls, session_id, samples, body)
            elif cls is not EmgFrame:
                msg = self._build_gated(fast, cls, session_id, body)
            else:  # a frame without samples: pydantic's path builds the header alone
                msg = None
            if msg is not None:
                return msg
        return self._build_pydantic(cls, session_id, samples, body)

    def _build_pydantic(self, cls: type[Message], session_id: str | None, samples, body: dict) -> Message:
        """Built and checked by pydantic: the path that words every refusal (field, range, value)."""
        msg = cls(
            type=cls.TOPIC,
            schema_version=SCHEMA_VERSION,
            session_id=session_id,
            seq=self._seq.get(cls.TOPIC, 0),
            publisher=self.name,
            instance=self.instance,
            ts_utc=utc_now(),
            **body,
        )
        if samples is not None:
            msg.with_samples(samples)
        return msg

    def _build_fast(self, fast, cls: type[Message], session_id: str | None, samples, body: dict) -> Message | None:
        """Frames: checked by the compiled gate (proto/hotpath.py) from the Python values and encoded by
        msgspec, in a few µs; anything the gate is not sure of is built by pydantic, which words the refusal."""
        arr = np.asarray(samples, dtype=_F4)
        n = (body.get("n_channels"), body.get("n_samples"))
        if arr.shape != n or not _ENVELOPE.isdisjoint(body):
            return None  # pydantic's path builds it and `with_samples` refuses the shape with the numbers
        done = self._encode_gated(fast, cls, session_id, body)
        if done is None:
            return None
        header, checked = done
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        msg = fast.build(checked, {"_samples": arr})
        self._built = (msg, [cls.TOPIC.encode("ascii"), header, arr.tobytes()])
        return msg

    def _encode_gated(self, fast, cls: type[Message], session_id: str | None,
                      body: dict) -> tuple[bytes, dict[str, Any]] | None:
        """The envelope stamped on `body` and the whole header checked and encoded by the type's gate."""
        values = {"type": cls.TOPIC, "schema_version": SCHEMA_VERSION, "session_id": session_id,
                  "seq": self._seq.get(cls.TOPIC, 0), "publisher": self.name, "instance": self.instance,
                  "ts_utc": utc_now(), **body}
        return fast.encode(values)

    def _build_gated(self, fast, cls: type[Message], session_id: str | None, body: dict) -> Message | None:
        """A message without samples (`amr_measurement`, `stimulus`, ...) of a type with a gate: checked from
        its Python values and encoded by msgspec (the analyzer builds its bodies unchecked, so this is their
        one contract check); None to let pydantic build it and word the refusal."""
        if not _ENVELOPE.isdisjoint(body):  # the publisher stamps these: pydantic's path refuses a second one
            return None
        done = self._encode_gated(fast, cls, session_id, body)
        if done is None:
            return None
        header, checked = done
        msg = fast.build(checked)
        self._built = (msg, [cls.TOPIC.encode("ascii"), header, b""])
        return msg

    def publish(self, cls: type[Message], session_id: str | None = None, **body) -> Message:
        fast = FAST.get(cls.TOPIC)
        if fast is not None:  # straight to the compiled path, one kwargs copy less
            if "samples" in body:
                samples = body.pop("samples")
                msg = self._build_fast(fast, cls, session_id, samples, body)
            elif cls is not EmgFrame:
                samples = None
                msg = self._build_gated(fast, cls, session_id, body)
            else:
                samples = msg = None
            if msg is None:  # pydantic's path builds it, or words the refusal
                msg = self._build_pydantic(cls, session_id, samples, body)
            self.send(msg)
            return msg
        msg = self.build(cls, session_id, **body)
        self.send(msg)
        return msg

    def send(self, msg: Message) -> None:
        """Send a message built by `build` (seq must be the next one)."""
        if msg.seq != self._seq.get(msg.type, 0) or msg.instance != self.instance:
            raise ValueError(f"{msg.type} seq {msg.seq} is not this publisher's next seq")
        built, self._built = self._built, None
        frames = built[1] if built is not None and built[0] is msg else encode(msg)
        # The three parts sent one by one with a plain int flag: pyzmq's send_multipart checks every part's
        # type and ORs enum flags per call, which was half of a frame's send (2.7 against 5.5 µs). The samples
        # go without a copy when large (zero-copy pays above pyzmq's threshold, a copy is cheaper below).
        topic, header, payload = frames
        send = self.sock.send
        send(topic, _MORE)
        send(header, _MORE)
        send(payload, 0, copy=len(payload) < self._copy_threshold)
        self._seq[msg.type] = msg.seq + 1
        if not self._subscriptions:
            self._drain_subscriptions()
        for hook in self.on_sent:
            hook(msg, frames)

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- #
# Subscriber


_KNOWN = frozenset(t.encode() for t in BY_TYPE)


def _topic(part) -> bytes | memoryview:
    return part.buffer if hasattr(part, "buffer") else part


class Subscriber:
    """Receives, validates and sequence-checks messages.

    Bad messages never raise out of `recv`: they go to `on_reject(reason,
    text, frames)` and the loop goes on. Sequence events go to `on_seq`."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        topics: Iterable[str] = ("",),
        *,
        hwm: int = DEFAULT_HWM,
        on_seq: Callable[[SeqEvent], None] | None = None,
        on_reject: Callable[[str, str, list], None] | None = None,
        configure: Callable[[zmq.Socket], None] | None = None,
    ) -> None:
        self.sock = ctx.socket(zmq.SUB)
        harden(self.sock)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        if configure:
            configure(self.sock)
        topics = tuple(topics)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        # ZeroMQ filters by prefix ('alarm' also lets 'alarm_ack' through): the exact set is checked on the
        # topic frame before anything is decoded. None: everything was asked for.
        self._exact: set[bytes] | None = None if "" in topics else {t.encode() for t in topics}
        #: Messages of a known type the prefix filter let through unasked (dropped undecoded).
        self.unasked = 0
        security.client(self.sock, endpoint)  # keyed unlike the bus: an error with the hint, not silence
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.tracker = GapTracker()
        self.on_seq = on_seq
        self.on_reject = on_reject
        self.received = 0
        self.rejected = 0
        self.lost = 0

    def subscribe(self, topic: str) -> None:
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if topic == "":
            self._exact = None
        elif self._exact is not None:
            self._exact.add(topic.encode())

    def recv_frames(self, timeout_ms: int | None = None) -> list | None:
        if timeout_ms == 0:  # one non-blocking receive: no poll call per message when draining a queue
            try:
                return self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
        if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        return self.sock.recv_multipart(copy=False)

    def accept(self, frames: list) -> Message | None:
        """Decode and sequence-check frames already received."""
        if self._exact is not None and frames:
            topic = bytes(_topic(frames[0]))
            if topic not in self._exact and topic in _KNOWN:  # unknown topics are refused and counted below
                self.unasked += 1
                return None
        try:
            msg = decode(frames)
        except DecodeError as err:
            self.rejected += 1
            if self.on_reject:
                self.on_reject(err.reason, str(err), frames)
            else:
                log.warning("rejected message: %s", err)
            return None
        self.received += 1
        event = self.tracker.track(msg)
        if event is not None:
            if event.kind == "gap":
                self.lost += event.missing
            if self.on_seq:
                self.on_seq(event)
            elif event.kind in ("gap", "duplicate"):
                log.warning("%s", event.describe())
        return msg

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """Next valid message, or None on timeout / rejected input."""
        frames = self.recv_frames(timeout_ms)
        if frames is None:
            return None
        return self.accept(frames)

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- #
# Proxy


class _OwnVoice:
    """The proxy's own messages (heartbeat, service_down alarms), each type
    with its own gap-free seq. They enter the forwarder like any publisher's
    (over inproc into its XSUB): the forwarding thread owns the XPUB, and a
    ZeroMQ socket is never shared between threads."""

    def __init__(self, sock: zmq.Socket, name: str = "bus") -> None:
        self.sock = sock
        self.name = name
        self.instance = new_instance_id()
        self.seq: dict[str, int] = {}
        self.sent = 0

    def send(self, cls: type[Message], session_id: str | None, **body) -> None:
        msg = cls(type=cls.TOPIC, schema_version=SCHEMA_VERSION, session_id=session_id,
                  seq=self.seq.get(cls.TOPIC, 0), publisher=self.name, instance=self.instance,
                  ts_utc=utc_now(), **body)
        self.sock.send_multipart(encode(msg))
        self.seq[cls.TOPIC] = msg.seq + 1
        self.sent += 1


#: Queue depth of the capture path: a watcher that falls this far behind loses capture copies, never traffic.
CAPTURE_HWM = 10_000


def _forward(xsub: zmq.Socket, xpub: zmq.Socket, capture: zmq.Socket, control: zmq.Socket) -> None:
    """The forwarding thread: libzmq's proxy, in C without the GIL, until TERMINATE on `control`."""
    try:
        zmq.proxy_steerable(xsub, xpub, capture, control)
    except zmq.ContextTerminated:  # pragma: no cover - the context ended under it
        pass


def _statistics(control: zmq.Socket) -> int:
    """Messages the proxy has taken in from its XSUB side (libzmq's STATISTICS: a multipart message counts once)."""
    control.send(b"STATISTICS")
    try:
        parts = control.recv_multipart()
    except zmq.Again:  # RCVTIMEO: a proxy that does not answer its control socket is not forwarding either
        raise RuntimeError("the bus's forwarding thread does not answer its control socket") from None
    return int.from_bytes(parts[0], sys.byteorder)


def run_proxy(
    ctx: zmq.Context,
    bind_in: str,
    bind_out: str,
    *,
    stop: Callable[[], bool],
    heartbeat_s: float = 0.5,
    version: str = "",
    on_forward: Callable[[int], None] | None = None,
    hwm: int = DEFAULT_HWM,
) -> None:
    """Forward publishers (XSUB, `bind_in`) to subscribers (XPUB, `bind_out`)
    and subscriptions back; publish the bus's own heartbeat and watch everyone
    else's, raising `service_down` when one goes quiet.

    Forwarding is `zmq.proxy_steerable` on its own thread: libzmq's C loop,
    which never takes the GIL. Everything in Python happens beside it, on
    this thread, and cannot slow it down:

    - the watcher reads the proxy's *capture* socket, a PUB that drops
      rather than blocks when the watcher is behind, subscribed to
      `heartbeat` only (the filter runs in C; frames never reach Python);
    - the bus's own voice (heartbeats, alarms) enters over inproc into the
      XSUB like any other publisher;
    - the `forwarded` count comes from the proxy's STATISTICS command on the
      control socket, once per heartbeat, instead of a call per message.
    """
    from .health import HeartbeatWatch
    from .proto.messages import Alarm

    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        harden(s)
        s.setsockopt(zmq.RCVHWM, hwm)
        s.setsockopt(zmq.SNDHWM, hwm)
        security.server(s, ctx)
    tag = f"{os.getpid()}-{new_instance_id()}"
    inner: list[zmq.Socket] = []

    def socket(kind: int) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        inner.append(sock)
        return sock

    try:
        xsub.bind(bind_in)
        xpub.bind(bind_out)
        # inproc has no security handshake: these never leave the process.
        xsub.bind(f"inproc://amrwatch-bus-voice-{tag}")
        capture = socket(zmq.PUB)
        capture.setsockopt(zmq.SNDHWM, CAPTURE_HWM)
        capture.bind(f"inproc://amrwatch-bus-capture-{tag}")
        control_end = socket(zmq.PAIR)
        control_end.bind(f"inproc://amrwatch-bus-control-{tag}")
        control = socket(zmq.PAIR)
        control.setsockopt(zmq.RCVTIMEO, 5000)
        control.connect(f"inproc://amrwatch-bus-control-{tag}")
        heard_sock = socket(zmq.SUB)
        heard_sock.setsockopt(zmq.RCVHWM, CAPTURE_HWM)
        heard_sock.setsockopt(zmq.SUBSCRIBE, Heartbeat.TOPIC.encode())
        heard_sock.connect(f"inproc://amrwatch-bus-capture-{tag}")
        voice_sock = socket(zmq.PUB)
        voice_sock.setsockopt(zmq.SNDHWM, 1000)
        voice_sock.connect(f"inproc://amrwatch-bus-voice-{tag}")
    except zmq.ZMQError:
        for sock in (xsub, xpub, *inner):
            sock.close(linger=0)
        raise
    forwarder = threading.Thread(target=_forward, args=(xsub, xpub, capture, control_end), name="bus-forward",
                                 daemon=True)
    forwarder.start()
    voice = _OwnVoice(voice_sock)
    watch = HeartbeatWatch()
    session: dict[str, str | None] = {"id": None}
    started = time.monotonic()
    next_hb = started
    next_check = started
    counted = {"taken": 0}

    def alarm(change) -> None:
        voice.send(Alarm, session["id"], kind="service_down", priority="high",
                   state="raised" if change.kind == "down" else "cleared", message=change.message[:1000],
                   source="bus", alarm_key=f"service_down:{change.service}")
        log.log(logging.WARNING if change.kind == "down" else logging.INFO, "%s", change.message)

    unreadable = {"n": 0}

    def heard(frames: list) -> None:
        try:
            hb = decode(frames)
        except DecodeError as err:
            unreadable["n"] += 1
            if unreadable["n"] in (1, 10, 100, 1000) or unreadable["n"] % 10000 == 0:
                log.warning("unreadable heartbeat (%d so far): %s", unreadable["n"], err)
            return
        if isinstance(hb, Heartbeat):
            if hb.session_id:
                session["id"] = hb.session_id
            for change in watch.observe(hb.service, hb.instance, hb.status, hb.interval_s, time.monotonic()):
                alarm(change)

    def count_forwarded() -> None:
        if on_forward is None:
            return
        taken = _statistics(control)
        # The bus's own voice goes through the proxy too; it is not forwarded traffic.
        n = taken - counted["taken"] - voice.sent
        counted["taken"] = taken - voice.sent
        if n > 0:
            on_forward(n)

    try:
        while not stop():
            now = time.monotonic()
            if now >= next_hb:
                count_forwarded()
                voice.send(Heartbeat, session["id"], service="bus", version=version, status="ok",
                           uptime_s=now - started, interval_s=heartbeat_s,
                           active_alarms=sorted(f"service_down:{n}" for n, s in watch.seen.items() if s.down),
                           info={"watching": len(watch.seen)})
                next_hb = now + heartbeat_s
            if now >= next_check:
                for change in watch.check(now):
                    alarm(change)
                next_check = now + 0.1
            timeout = max(0, int((min(next_hb, next_check) - now) * 1000))
            if heard_sock.poll(timeout, zmq.POLLIN):
                for _ in range(1000):
                    try:
                        frames = heard_sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    heard(frames)
            if not forwarder.is_alive():
                raise RuntimeError("the bus's forwarding thread ended")
        count_forwarded()
    finally:
        if forwarder.is_alive():
            control.send(b"TERMINATE")
            forwarder.join(5)
        for sock in inner:
            sock.close(linger=0)
        xsub.close(linger=0)
        xpub.close(linger=0)
