"""The cart's archive read-out: a remote reader (the hub) fetches, from the recorder, the events that have aged
out of the acquirer's retransmit buffer (issue #19 item 2: "nothing missing after a link loss").

Who serves it, and why the recorder:

- the recorder owns the archive on the cart (it is its only writer and knows how far each live session is
  durably committed, `ArchiveWriter.durable_record_no`); the acquirer does not import `archive` and is on the
  frame path — reading segment files on its loop would delay the frames, on a thread it would make the one
  service that must never stall share its process with archive reads;
- the read goes through `archive/session.py`'s reader (`open_session` → its index), never a second reader;
  the messages are handed back as the wire frames exactly as archived (`ArchiveIndex.message_frames`), so the
  hub's `Room.take` dedups them by seq with what it got live or by retransmit;
- it is a bounded, authenticated request on its own endpoint, not a file share: a ROUTER socket that is a
  CURVE server with the cart's keys and `authorized/` directory (the same as the bus and control socket:
  amrwatch/security.py), served by the platform's `ControlServer` (per-client queues and limits, a budget
  per turn, bounded reply queues), one `archive_read` request type (proto/control.py), at most
  `MAX_ARCHIVE_READ` messages and `MAX_REPLY_BYTES` per reply (one message always fits; the reply says where
  to resume);
- it runs on a thread of its own in the recorder process, with its own socket: building the index of a long
  live session takes a while (one pass over its segments), and the recorder's loop must keep archiving
  meanwhile. The thread reads `durable_record_no` of the live sessions (an int, read under the GIL) and
  nothing else of the recorder's state;
- live sessions: only records up to the durable record number read before the index is built are served
  (`detail.durable_up_to`). The index of a live session is rebuilt only when a request asks for seqs past
  the newest the kept index holds of that stream, the session has committed more since, and the index is at
  least `refresh_s` old: a reader backfills what aged out of the retransmit buffer (a minute old or more,
  long committed), so chunk after chunk is served from one index, and a rebuild — one pass over the
  session's segments, frames included — happens at most once per `refresh_s` whatever the readers ask.
  Only the event types the hub follows are served (`ARCHIVE_READ_TYPES`,
  never `emg_frame`); anything else is refused with the field, the allowed values and the value given.

Off unless `--archive-read-bind` (AMRWATCH_ARCHIVE_READ_BIND) is given: exposing the archive on the network is
a decision, like exposing the bus (README, Operations).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from prometheus_client import Counter
from pydantic import ValidationError

from ... import security
from ...bus import harden
from ...control_server import ControlLimits, ControlServer, configure
from ...proto.control import (
    ARCHIVE_READ_REQUEST,
    MAX_ARCHIVE_READ,
    MAX_REPLY_BYTES,
    ControlReply,
    describe_archive_read,
)
from amrwatch.archive.index import Event
from amrwatch.archive.integrity import ArchiveError
from amrwatch.archive.session import ArchivedSession, NoSuchSession, open_session

log = logging.getLogger(__name__)

READS = Counter("amrwatch_archive_read_requests_total", "archive_read requests answered by the recorder",
                ["outcome"])
SERVED = Counter("amrwatch_archive_read_messages_total", "Archived messages handed to remote readers")

#: Sessions whose index is kept between requests (a reader backfills one session in chunks).
KEEP_SESSIONS = 4


@dataclass
class _Cached:
    session: ArchivedSession
    durable_at: int | None  # None: a closed session (every record in its files is durable)
    built: float
    streams: dict[tuple[str, str], list[Event]] = field(default_factory=dict)  # (instance, type) → by seq


class ArchiveReadout:
    """Socket-free: `handle(raw) -> (ControlReply, frames)` for one `archive_read` request.

    `durable(session_id)` gives the durable record number of a session the recorder is writing, None for one
    it is not (closed, or never opened by this process: all its records on disk are committed)."""

    def __init__(self, data_dir: Path, durable: Callable[[str], int | None], *, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = Path(data_dir)
        self.durable = durable
        self.refresh_s = refresh_s
        self.clock = clock
        self.cache: OrderedDict[str, _Cached] = OrderedDict()
        self.rebuilds = 0
        #: Refusals for the recorder's loop to raise as `input_rejected` alarms (the thread has no publisher);
        #: deque appends and pops are atomic, bounded so a flood cannot grow it.
        self.rejections: deque[tuple[str, str]] = deque(maxlen=64)

    def close(self) -> None:
        for c in self.cache.values():
            c.session.close()
        self.cache.clear()

    def _session(self, sid: str, stream: tuple[str, str], to_seq: int) -> _Cached:
        now = self.clock()
        durable = self.durable(sid)
        c = self.cache.get(sid)
        if c is not None:
            kept = c.streams.get(stream)
            beyond = not kept or to_seq > kept[-1].seq  # asks for what the kept index may not have yet
            stale = (c.durable_at is not None
                     and (durable is None or (beyond and durable > c.durable_at and now - c.built >= self.refresh_s)))
            if not stale:
                self.cache.move_to_end(sid)
                return c
            c.session.close()
            del self.cache[sid]
        session = open_session(self.data_dir, sid)  # NoSuchSession when there is none
        # Read the durable record number before the files: every record up to it is on disk, whatever the
        # writer appends while the index is built.
        cached = _Cached(session, durable, now)
        idx = session.index
        for e in idx.events:
            if durable is not None and e.record_no > durable:
                continue
            cached.streams.setdefault((e.instance, e.type), []).append(e)
        for events in cached.streams.values():
            events.sort(key=lambda e: (e.seq, e.record_no))
        self.rebuilds += 1
        self.cache[sid] = cached
        while len(self.cache) > KEEP_SESSIONS:
            _, old = self.cache.popitem(last=False)
            old.session.close()
        return cached

    def handle(self, raw: bytes) -> tuple[ControlReply, list[bytes]]:
        """One request. An unexpected failure answers this request with the error and raises the alarm, and the
        read-out goes on serving: it must never end its thread silently, leaving hubs to time out."""
        try:
            return self._handle(raw)
        except Exception as err:  # noqa: BLE001 - any failure of one request is reported, not fatal
            READS.labels("failed").inc()
            log.exception("archive read-out: a request failed")
            text = f"archive read-out failed on a request: {type(err).__name__}: {str(err)[:300]}"
            self.rejections.append(("archive_read_failed", text))
            return ControlReply(ok=False, error=text, detail={"reason": "failed"}), []

    def _handle(self, raw: bytes) -> tuple[ControlReply, list[bytes]]:
        try:
            req = ARCHIVE_READ_REQUEST.validate_json(raw)
        except ValidationError as err:
            text = describe_archive_read(err)
            READS.labels("invalid").inc()
            log.warning("archive read-out: request refused: %s", text[:500])
            self.rejections.append(("rejected:archive_read_invalid", f"archive read-out refused a request: {text}"[:900]))
            return ControlReply(ok=False, error=f"request refused: {text}"[:4000], detail={"reason": "invalid"}), []
        if req.to_seq < req.from_seq:
            READS.labels("refused").inc()
            return ControlReply(ok=False, error=f"archive_read: to_seq {req.to_seq} is before from_seq "
                                f"{req.from_seq}; give from_seq <= to_seq",
                                detail={"reason": "reversed_range"}), []
        try:
            c = self._session(req.session_id, (req.instance, req.type), req.to_seq)
        except NoSuchSession:
            READS.labels("refused").inc()
            return ControlReply(ok=False, error=f"archive_read: session_id {req.session_id!r} is not archived on "
                                "this cart", detail={"reason": "no_such_session"}), []
        except (ArchiveError, OSError) as err:
            READS.labels("failed").inc()
            log.error("archive read-out: session %s unreadable: %s", req.session_id, err)
            return ControlReply(ok=False, error=f"archive_read: session {req.session_id} could not be read "
                                f"({str(err)[:300]})", detail={"reason": "unreadable"}), []
        events = c.streams.get((req.instance, req.type), [])
        frames: list[bytes] = []
        nbytes = 0
        served: list[int] = []
        truncated: str | None = None
        last_seq = -1
        idx = c.session.index
        for e in events:
            last_seq = max(last_seq, e.seq)
            if e.seq < req.from_seq or e.seq > req.to_seq or (served and e.seq == served[-1]):
                continue
            if truncated:
                continue
            if len(served) >= MAX_ARCHIVE_READ:
                truncated = "max_messages"
                continue
            f = idx.message_frames(e.record_no)
            size = sum(len(x) for x in f)
            if served and nbytes + size > MAX_REPLY_BYTES:
                truncated = "max_bytes"
                continue
            frames.extend(f)
            nbytes += size
            served.append(e.seq)
        detail: dict[str, Any] = {"live": c.durable_at is not None, "last_archived_seq": last_seq,
                                  "durable_up_to": c.durable_at if c.durable_at is not None
                                  else idx.record_count - 1}
        if truncated:
            detail["truncated_by"] = truncated
            detail["resume_from_seq"] = served[-1] + 1
        lost = [g for _no, g in idx.gaps if g.instance == req.instance and g.type == req.type
                and g.from_seq <= req.to_seq and g.to_seq >= req.from_seq]
        if lost:
            detail["recorded_lost"] = sum(min(g.to_seq, req.to_seq) - max(g.from_seq, req.from_seq) + 1
                                          for g in lost)
            detail["recorded_lost_reason"] = lost[0].reason[:256]
        READS.labels("ok").inc()
        SERVED.inc(len(served))
        return ControlReply(ok=True, session_id=req.session_id, n_messages=len(served), detail=detail), frames


class ReadoutThread:
    """The read-out's socket and its loop, on a thread of the recorder process (module docstring: why)."""

    def __init__(self, ctx: zmq.Context, bind: str, readout: ArchiveReadout,
                 limits: ControlLimits | None = None) -> None:
        self.readout = readout
        self.limits = limits or ControlLimits()
        self.sock = ctx.socket(zmq.ROUTER)
        harden(self.sock)
        configure(self.sock, self.limits)
        security.server(self.sock, ctx)
        self.sock.bind(bind)  # raises here, in the recorder's setup, when the endpoint cannot be bound
        self.bind = bind
        self.server = ControlServer(self.sock, readout.handle, self.limits, on_refuse=self._refused)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="archive-readout", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("archive read-out on %s (CURVE %s)", self.bind, "on" if security.key_dir() else "off")

    def _refused(self, limit: str, text: str) -> None:
        READS.labels(f"limit_{limit}").inc()
        log.warning("archive read-out refused a request over a limit: %s", text)
        self.readout.rejections.append((f"archive_read_limit:{limit}",
                                        f"archive read-out refused requests over a limit: {text}"[:900]))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.server.clients or self.sock.poll(100):
                    self.server.pump()
        except zmq.ZMQError as err:
            if err.errno != zmq.ETERM:
                log.exception("archive read-out stopped")
        finally:
            self.sock.close(linger=0)
            self.readout.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
