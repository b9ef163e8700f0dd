"""The hub's thin loop: one SUB (events, never frames) and one DEALER (control) per cart, all outbound.

Per room:
- the SUB connects to the cart's bus_out with the hub's CURVE identity and the
  cart's server key, subscribed to `core.EVENT_TYPES` + heartbeats only;
- ZeroMQ reconnects by itself with exponential backoff (RECONNECT_IVL 100 ms
  doubling to RECONNECT_IVL_MAX 5 s), and ZMTP heartbeats (1 s, timeout 3 s)
  notice a dead link that TCP would keep open for minutes under a partition;
- the DEALER asks the cart's acquirer for what the room missed (`retransmit`),
  one request at a time with a timeout (a request lost with the link is sent
  again on a fresh socket), and carries the reader's acks and notes;
- after the link comes back (and every `PROBE_S`), each known stream is probed
  past its newest seq, which finds what was lost at the end of a stream;
- with the room's `archive` endpoint, a second DEALER (the platform's
  `ControlClient`, the hub's own keys) asks the cart's archive read-out (the
  recorder, services/recorder/readout.py) for what the retransmit buffer no
  longer held, one `archive_read` at a time, chunk after chunk, with a timeout
  and `ARCHIVE_TRIES` tries on a fresh socket; the core (core.py) plans the
  asks and turns what neither source held into gaps.

Events taken (live or backfilled) are appended to DATA/ROOM/events.jsonl and
link_stale changes to DATA/ROOM/alarms.jsonl: the hub's own record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq
from prometheus_client import Counter, Gauge
from zmq.utils.monitor import recv_monitor_message

from ...bus import harden
from ...control import ControlClient, ControlError, no_answer
from ...proto.codec import DecodeError, decode
from ...proto.control import ControlReply
from .config import HubConfig, RoomConfig
from .core import DISPLAY_TYPES, EVENT_TYPES, LIVENESS_TYPES, SOURCES, VIA, ArchiveAsk, Request, Room

log = logging.getLogger(__name__)

#: Seconds a control request waits for its reply before it is sent again on a fresh socket.
REQUEST_TIMEOUT_S = 5.0
#: Every known stream is probed for lost tails this often (and at once when a link comes back).
PROBE_S = 10.0
#: Seconds an archive_read waits for its reply (the cart may first have to index a long session), and how
#: many times it is sent (each on a fresh socket) before what it asked for is shown as a gap.
ARCHIVE_TIMEOUT_S = 10.0
ARCHIVE_TRIES = 3

CONNECTED = Gauge("amrwatch_hub_room_connected", "1 while the hub's link to the room is up", ["room"])
STALENESS = Gauge("amrwatch_hub_room_staleness_seconds", "Age of the newest data from the room", ["room"])
STALE = Gauge("amrwatch_hub_room_stale", "1 while the room's link_stale alarm is raised", ["room"])
EVENTS = Counter("amrwatch_hub_room_events_total", "Events taken from the room (exactly once by seq)", ["room"])
BACKFILLED = Counter("amrwatch_hub_room_backfilled_total", "Events taken by backfill, by source (the cart's "
                     "retransmit buffer, or its archive read-out)", ["room", "source"])
GAPS = Counter("amrwatch_hub_room_gap_messages_total", "Events the cart could no longer give (shown as gaps)",
               ["room"])
BYTES = Counter("amrwatch_hub_room_received_bytes_total", "Message bytes received from the room (live and "
                "backfill)", ["room"])


def _curve(sock: zmq.Socket, cfg: HubConfig, room: RoomConfig) -> None:
    if cfg.key_secret is None:
        return
    sock.curve_serverkey = room.server_key
    sock.curve_publickey = cfg.key_public
    sock.curve_secretkey = cfg.key_secret


def _links(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 6000)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, 3000)
    sock.setsockopt(zmq.LINGER, 0)


class Link:
    """One cart: its sockets, and the control requests waiting to go."""

    def __init__(self, ctx: zmq.Context, cfg: HubConfig, rc: RoomConfig, room: Room, n: int) -> None:
        self.ctx, self.cfg, self.rc, self.room, self.n = ctx, cfg, rc, room, n
        self.sub = ctx.socket(zmq.SUB)
        harden(self.sub)
        _links(self.sub)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        for t in (*EVENT_TYPES, *LIVENESS_TYPES, *DISPLAY_TYPES):
            self.sub.setsockopt(zmq.SUBSCRIBE, t.encode())
        _curve(self.sub, cfg, rc)
        addr = f"inproc://hub-mon-{os.getpid()}-{n}"
        self.sub.monitor(addr, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                         | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.mon = ctx.socket(zmq.PAIR)
        self.mon.connect(addr)
        self.sub.connect(rc.bus)
        self.dealer: zmq.Socket | None = None
        self.dealer_gen = 0
        self._new_dealer()
        #: The cart's archive read-out (optional), one request at a time: what waits, what is in flight.
        self.archive: ControlClient | None = None
        if rc.archive is not None:
            keys = (rc.server_key, cfg.key_public, cfg.key_secret) if cfg.key_secret is not None else None
            self.archive = ControlClient(ctx, rc.archive, curve=keys, options=_links)  # type: ignore[arg-type]
        self.archive_queue: deque[ArchiveAsk] = deque()
        self.archive_pending: tuple[ArchiveAsk, float] | None = None
        self.queue: deque[tuple[dict, Request | None, Future | None]] = deque()
        self.pending: tuple[dict, Request | None, Future | None, float] | None = None
        self.next_probe = time.monotonic() + PROBE_S
        self.announced: str | None = None  # the session this reader's presence ('watching') was logged in
        self.announcing = False
        self.announce_after = 0.0
        self.events_file = self.ack_file = None
        if cfg.data is not None:
            d = cfg.data / rc.name
            d.mkdir(parents=True, exist_ok=True)
            self.events_file = open(d / "events.jsonl", "a", buffering=1)  # noqa: SIM115 - open for the link's life
            self.alarms_file = open(d / "alarms.jsonl", "a", buffering=1)  # noqa: SIM115

    def _new_dealer(self) -> None:
        if self.dealer is not None:
            self.dealer.close(linger=0)
        self.dealer_gen += 1
        self.dealer = self.ctx.socket(zmq.DEALER)
        harden(self.dealer)
        _links(self.dealer)
        _curve(self.dealer, self.cfg, self.rc)
        self.dealer.connect(self.rc.control)

    def close(self) -> None:
        for s in (self.sub, self.mon, self.dealer):
            if s is not None:
                s.close(linger=0)
        if self.archive is not None:
            self.archive.close()
        for f in (self.events_file, getattr(self, "alarms_file", None)):
            if f is not None:
                f.close()


def room_name(link: Link) -> str:
    return link.room.name


class Hub:
    """Follows every room of the config; `tiles()` and `send()` are safe from other threads."""

    def __init__(self, cfg: HubConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ctx = zmq.Context()
        self.lock = threading.Lock()
        self.rooms = {rc.name: Room(rc.name, cfg.stale_after_s, archive=rc.archive is not None) for rc in cfg.rooms}
        self.links = {rc.name: Link(self.ctx, cfg, rc, self.rooms[rc.name], i) for i, rc in enumerate(cfg.rooms)}
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        #: Bumped whenever a tile changes other than by age (an event taken, a link or staleness change): the
        #: page's long poll returns at once when it moves.
        self.version = 0
        for name in self.rooms:
            for m in (CONNECTED, STALENESS, STALE):
                m.labels(name)
            for c in (EVENTS, GAPS, BYTES):
                c.labels(name)
            for source in SOURCES:
                BACKFILLED.labels(name, source)

    # -- for the page (other threads) ----------------------------------------
    def tiles(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.lock:
            out = []
            for name, room in self.rooms.items():
                t = room.tile(now)
                t["monitor"] = self.links[name].rc.monitor
                t["monitor_proxy_port"] = self.links[name].rc.proxy_port
                out.append(t)
            return out

    def room_detail(self, name: str) -> dict[str, Any] | None:
        now = self.clock()
        with self.lock:
            room = self.rooms.get(name)
            if room is None:
                return None
            t = room.tile(now)
            t["recent"] = list(room.recent)[-200:]
            t["gaps"] = [g.__dict__ | {"n": g.n} for g in room.gaps]
            return t

    def send(self, room: str, body: dict) -> Future:
        """Queue a control request (ack, note) for the room's cart; the future gets the reply as a dict."""
        fut: Future = Future()
        with self.lock:
            self.links[room].queue.appendleft((body, None, fut))  # the reader's own requests before backfill
        return fut

    # -- the loop -------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="hub", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def run(self) -> None:
        next_sweep = 0.0
        try:
            while not self._stop.is_set():
                poller = zmq.Poller()
                for link in self.links.values():
                    poller.register(link.sub, zmq.POLLIN)
                    poller.register(link.mon, zmq.POLLIN)
                    poller.register(link.dealer, zmq.POLLIN)
                    if link.archive is not None:
                        poller.register(link.archive.socket, zmq.POLLIN)
                events = dict(poller.poll(100))
                now = self.clock()
                sweep = now >= next_sweep  # staleness, timeouts, probes: every 50 ms, not on every message
                if sweep:
                    next_sweep = now + 0.05
                with self.lock:
                    for link in self.links.values():
                        busy = False
                        if events.get(link.mon):
                            self._monitor(link, now)
                            busy = True
                        if events.get(link.sub):
                            self._live(link)
                        if events.get(link.dealer):
                            self._reply(link)
                            busy = True
                        if link.archive is not None and events.get(link.archive.socket):
                            self._archive_reply(link)
                            busy = True
                        if sweep or busy or (link.queue and link.pending is None) or \
                                (link.archive_queue and link.archive_pending is None):
                            self._housekeeping(link, self.clock())
        finally:
            with self.lock:
                for link in self.links.values():
                    self._farewell(link)
                    link.close()
            self.ctx.term()

    def _farewell(self, link: Link) -> None:
        """Presence log: tell the cart this reader left (best effort, the link may be down)."""
        if not link.announced or link.dealer is None:
            return
        try:
            link.dealer.send_multipart([b"", json.dumps({"op": "note", "kind": "left"}).encode()], zmq.NOBLOCK)
            if link.dealer.poll(1000):
                link.dealer.recv_multipart()
        except zmq.ZMQError:
            pass

    def _monitor(self, link: Link, now: float) -> None:
        room = link.room
        while True:
            try:
                ev = recv_monitor_message(link.mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            event = int(ev["event"])
            self.version += 1
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                room.connected, room.refused = True, None
                CONNECTED.labels(room.name).set(1)
                log.info("room %s: link up (%s)", room.name, link.rc.bus)
                link.next_probe = now  # backfill what the outage cost, at once
            elif event == zmq.EVENT_DISCONNECTED:
                if room.connected:
                    log.warning("room %s: link down (%s); reconnecting with backoff", room.name, link.rc.bus)
                room.connected = False
                CONNECTED.labels(room.name).set(0)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                room.refused = ("the cart refused the hub's CURVE key: add the hub's public key to the cart's "
                                "authorized/ directory")
                if room.connected is not False or not getattr(link, "_refusal_logged", False):
                    log.error("room %s: %s", room.name, room.refused)
                    link._refusal_logged = True
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                room.refused = "security mismatch: the cart and the hub are not keyed alike (CURVE on one side only)"

    def _take(self, link: Link, frames: list, via: str) -> None:
        room = link.room
        nbytes = sum(len(f) for f in frames)
        BYTES.labels(room.name).inc(nbytes)
        try:
            msg = decode(frames)
        except DecodeError as err:
            log.warning("room %s: rejected a message: %s", room.name, err)
            return
        now = self.clock()
        if msg.type in LIVENESS_TYPES:
            room.heard(now)
            return
        if msg.type in DISPLAY_TYPES:
            room.show_sweep(msg.model_dump(mode="json"), now)
            self.version += 1
            return
        d = msg.model_dump(mode="json")
        key = (d["instance"], d["type"])
        new_stream = key not in room.streams
        if room.take(d, now, via):
            self.version += 1
            EVENTS.labels(room.name).inc()
            if via != "live":
                BACKFILLED.labels(room.name, "archive" if via == VIA["archive"] else "retransmit").inc()
            if link.events_file is not None:
                link.events_file.write(json.dumps({"publisher": d["publisher"], "instance": d["instance"],
                                                   "type": d["type"], "seq": d["seq"], "via": via,
                                                   "session_id": d.get("session_id")}) + "\n")
        if via == "live":
            if new_stream:
                req = room.joined(d["publisher"], d["instance"], d["type"], d["seq"])
                if req is not None:
                    link.queue.append((req.body(""), req, None))
            elif room.streams[key].held_above:
                for req in room.backfill_plan():
                    if (req.instance, req.type) == key:
                        link.queue.append((req.body(""), req, None))

    def _live(self, link: Link) -> None:
        for _ in range(1000):
            try:
                frames = link.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._take(link, frames, "live")

    def _reply(self, link: Link) -> None:
        while True:
            try:
                parts = link.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if link.pending is None or len(parts) < 2:
                continue  # a late reply to a request already given up
            body, req, fut, _sent = link.pending
            link.pending = None
            try:
                reply = ControlReply.model_validate_json(parts[1])
            except ValueError as err:
                log.warning("room %s: unreadable control reply: %s", link.room.name, err)
                continue
            extra = parts[2:]
            if fut is not None:
                fut.set_result(reply.model_dump())
            if req is None and body.get("op") == "streams":
                self._streams(link, reply, extra)
                continue
            if req is None:
                if body.get("kind") == "watching":
                    link.announcing = False
                    if reply.ok:
                        link.announced = reply.session_id
                    else:  # no session yet, or a cart that refuses it: try again later, not at once
                        link.announce_after = self.clock() + PROBE_S
                        log.info("room %s: presence not logged (%s); trying again in %g s", room_name(link),
                                 reply.error, PROBE_S)
                continue
            room = link.room
            if reply.ok:
                for i in range(0, len(extra) - 2, 3):
                    self._take(link, extra[i:i + 3], "backfill")
                det = reply.detail
                if "unavailable_from" in det:
                    self._aged_out(link, req, int(det["unavailable_from"]), int(det["unavailable_to"]),
                                   "aged out of the cart's retransmit buffer")
                if "resume_from_seq" in det:
                    more = Request(req.publisher, req.instance, req.type, int(det["resume_from_seq"]), req.to_seq)
                    link.queue.appendleft((more.body(""), more, None))
            elif reply.detail.get("reason") == "not_yet_sent":
                last = reply.detail.get("last_sent_seq")
                stream = room.streams.get((req.instance, req.type))
                if stream is not None and isinstance(last, int) and stream.highest < last:
                    more = Request(req.publisher, req.instance, req.type, stream.next_seq, last)
                    link.queue.append((more.body(""), more, None))
            elif not req.probe or reply.detail.get("reason") == "unknown_instance":
                stream = room.streams.get((req.instance, req.type))
                if stream is not None and not req.probe:
                    self._aged_out(link, req, req.from_seq, req.to_seq,
                                   f"the cart's retransmit refused: {reply.error or 'no reason given'}")

    def _aged_out(self, link: Link, req: Request, from_seq: int, to_seq: int, why: str) -> None:
        """The retransmit buffer does not hold them: ask the archive read-out, or (without one) a gap."""
        got = link.room.aged_out(req, from_seq, to_seq, why)
        if isinstance(got, ArchiveAsk):
            link.archive_queue.append(got)
        else:
            for gap in got or []:
                self._gap(link, gap)

    def _archive_reply(self, link: Link) -> None:
        assert link.archive is not None
        room = link.room
        for parts in link.archive.replies():
            if link.archive_pending is None:
                continue  # a late reply to an ask already given up
            ask, _sent = link.archive_pending
            try:
                parsed = link.archive.parse(parts)
            except ControlError as err:
                log.warning("room %s: %s", room.name, err)
                continue
            if parsed is None:
                continue
            link.archive_pending = None
            if not parsed.ok:
                log.warning("room %s: the archive read-out refused %s %s %d..%d: %s", room.name, ask.instance,
                            ask.type, ask.from_seq, ask.to_seq, parsed.reply.error)
                for gap in room.archive_failed(ask, f"refused: {parsed.reply.error or 'no reason given'}"):
                    self._gap(link, gap)
                continue
            taken = 0
            for frames in parsed.triples:
                try:
                    head = json.loads(frames[1])
                except (ValueError, IndexError):
                    head = {}
                if (head.get("instance"), head.get("type")) != (ask.instance, ask.type) or \
                        not (isinstance(head.get("seq"), int) and ask.from_seq <= head["seq"] <= ask.to_seq):
                    log.warning("room %s: the archive read-out sent a message not asked for; ignored", room.name)
                    continue
                self._take(link, frames, VIA["archive"])
                taken += 1
            nxt, gaps = room.archive_answered(ask, parsed.reply.detail)
            log.info("room %s: %d %s message(s) of %s from the cart's archive (seq %d..%d asked)", room.name, taken,
                     ask.type, ask.instance, ask.from_seq, ask.to_seq)
            if nxt is not None:
                link.archive_queue.appendleft(nxt)
            for gap in gaps:
                self._gap(link, gap)

    def _archive_housekeeping(self, link: Link, now: float) -> None:
        """Send the next archive ask; an unanswered one is sent again on a fresh socket, then given up as gaps."""
        if link.archive is None:
            return
        room = link.room
        if link.archive_pending is not None and now - link.archive_pending[1] > ARCHIVE_TIMEOUT_S:
            ask, _ = link.archive_pending
            link.archive_pending = None
            link.archive.reconnect()  # lazy pirate: a late reply must never be taken for the next ask's
            if ask.tries < ARCHIVE_TRIES:
                log.info("room %s: archive_read unanswered after %g s; asking again on a fresh socket", room.name,
                         ARCHIVE_TIMEOUT_S)
                link.archive_queue.appendleft(ask)
            else:
                why = f"did not answer ({no_answer(link.rc.archive or '?', ARCHIVE_TIMEOUT_S)}, {ask.tries} tries)"
                for gap in room.archive_failed(ask, why.replace("no acquirer", "no archive read-out")):
                    self._gap(link, gap)
        if link.archive_pending is None and link.archive_queue and room.session_id:
            ask = link.archive_queue.popleft()
            ask.tries += 1
            link.archive.send(ask.body(room.session_id))
            link.archive_pending = (ask, now)

    def _streams(self, link: Link, reply: ControlReply, extra: list) -> None:
        room = link.room
        if not reply.ok or not extra:
            log.warning("room %s: the cart did not list its streams: %s", room.name, reply.error)
            return
        try:
            entries = json.loads(extra[0])
        except ValueError as err:
            log.warning("room %s: unreadable streams list: %s", room.name, err)
            return
        if room.session_id is None and reply.session_id:
            room.session_id = reply.session_id
        planned = {(r.instance, r.type, r.from_seq) for _, r, _ in link.queue if r is not None}
        for req in room.plan_streams(entries if isinstance(entries, list) else []):
            if (req.instance, req.type, req.from_seq) not in planned:
                link.queue.append((req.body(""), req, None))

    def _gap(self, link: Link, gap) -> None:
        if gap is None:
            return
        GAPS.labels(link.room.name).inc(gap.n)
        log.warning("room %s: %d %s message(s) of %s/%s (seq %d..%d) could not be got: %s — shown as a gap",
                    link.room.name, gap.n, gap.type, gap.publisher, gap.instance, gap.from_seq, gap.to_seq,
                    gap.reason)

    def _housekeeping(self, link: Link, now: float) -> None:
        room = link.room
        change = room.check_stale(now)
        age = room.age(now)
        STALENESS.labels(room.name).set(age if age is not None else float("nan"))
        STALE.labels(room.name).set(1 if room.stale_alarm else 0)
        if change is not None:
            self.version += 1
            log.log(logging.WARNING if change == "raised" else logging.INFO, "room %s: link_stale %s (age %s s)",
                    room.name, change, "never" if age is None else f"{age:.1f}")
            if link.events_file is not None:
                link.alarms_file.write(json.dumps({"kind": "link_stale", "state": change, "room": room.name,
                                                   "age_s": age, "ts": time.time()}) + "\n")
            if change == "cleared":
                link.next_probe = now
        if link.pending is not None and now - link.pending[3] > REQUEST_TIMEOUT_S:
            body, req, fut, _ = link.pending
            link.pending = None
            log.info("room %s: control request %s unanswered after %g s; sending again on a fresh socket",
                     room.name, body.get("op"), REQUEST_TIMEOUT_S)
            link._new_dealer()
            link.queue.appendleft((body, req, fut))
        if (room.connected and room.session_id and link.announced != room.session_id and not link.announcing
                and now >= link.announce_after):
            # Presence log: this reader watches the room's session (again after a new session starts).
            link.queue.append(({"op": "note", "kind": "watching"}, None, None))
            link.announcing = True
        if now >= link.next_probe and room.connected:
            link.next_probe = now + PROBE_S
            asked = [b for b, _, _ in link.queue] + ([link.pending[0]] if link.pending else [])
            if not any(b.get("op") == "streams" for b in asked):
                link.queue.append(({"op": "streams"}, None, None))
        self._archive_housekeeping(link, now)
        if link.pending is None and link.queue and room.connected:
            body, req, fut = link.queue.popleft()
            if req is not None:
                if not room.session_id:
                    link.queue.appendleft((body, req, fut))
                    return
                body = req.body(room.session_id)
            link.dealer.send_multipart([b"", json.dumps(body).encode()])
            link.pending = (body, req, fut, now)

