"""The recorder on the bus: every message of every session into its archive, nothing lost quietly.

It subscribes to everything, keeps one ArchiveWriter per open session
(group commit from `tick`), registers each session in the registry, and
accounts for every seq of every stream (gapfill.py): holes in the
acquirer's streams are refetched from its retransmit buffer over the
control socket, the rest are recorded as `gap` records with a `data_gap`
alarm. At start it resumes the sessions the registry still shows as
recording: recovery cuts a torn tail (logged), a corrupt archive is marked
corrupt with an `archive_corrupt` alarm and left untouched, and what was
sent while the recorder was away is fetched again.

A failed write or fsync is never retried: `archive_fatal` alarm, exit 74,
and the supervisor's restart runs the recovery.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ... import __version__, config
from ...control import ControlClient, ControlError, no_answer
from ...proto.codec import DecodeError, decode
from ...proto.messages import Alarm, AmrCourse, Message, Prediction, ReaderNote, SessionEnd, SessionStart
from ...service import Service
from amrwatch.archive.writer import ArchiveClosed, ArchiveCorrupt, ArchiveFatal, ArchiveWriter, session_path, utc_iso
from amrwatch.archive.durable import ArchiveIO
from .gapfill import ACQUIRER_TYPES, GapFiller, GapNote, Request
from amrwatch.archive.index import ArchiveIndex
from .live import LiveSession
from .readout import ArchiveReadout, ReadoutThread
from .recorder_settings import RecorderSettings
from amrwatch.registry.store import Registry, RegistryError, UnknownSession, new_patient_token
from amrwatch.archive.seqset import SeqSet
from amrwatch.registry.summary import SummaryError, summarize

log = logging.getLogger(__name__)

#: sysexits.h EX_IOERR: the archive could not be written; the supervisor restarts the recorder.
EXIT_ARCHIVE_FATAL = 74
#: Notes that the last recorder stopped with archive_fatal, so the next one clears the alarm.
FATAL_MARKER = "archive_fatal.json"
#: Messages of sessions the recorder has not seen start, held while it asks the acquirer.
HOLD_MESSAGES = 4000
#: Message types the registry's session summary is built from.
#: session_start for its montage: the muscle each channel records, which the summary's per-channel figures name.
SUMMARY_TYPES = frozenset({"session_start", "factors", "baseline", "amr_course", "prediction"})
#: Types never archived: a session's archive holds its events, not the services' pulse.
NOT_ARCHIVED = ("heartbeat",)

FSYNC = Histogram("amrwatch_fsync_seconds", "Time of one group commit (write + fsync) of an archive",
                  buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
LAST_COMMIT = Gauge("amrwatch_last_commit_timestamp_seconds", "When the last group commit became durable")
RECORDS = Counter("amrwatch_archived_records_total", "Records appended to session archives", ["kind"])
BYTES = Counter("amrwatch_archived_bytes_total", "Bytes of bus messages appended to session archives")
REFILLED = Counter("amrwatch_refilled_messages_total", "Lost messages refetched from the acquirer and archived")
UNFILLED = Counter("amrwatch_unfilled_messages_total", "Lost messages recorded as gaps (could not be refetched)")
REQUESTS = Counter("amrwatch_retransmit_requests_total", "Requests sent to the acquirer's control socket",
                   ["op", "outcome"])
DROPPED = Counter("amrwatch_recorder_dropped_messages_total",
                  "Messages not archived, by reason (a duplicate of one archived, or its session closed)",
                  ["reason"])
SESSIONS = Gauge("amrwatch_recorder_open_sessions", "Sessions whose archive is open")


class Recorder(Service):
    name = "recorder"
    topics = ("",)

    def __init__(self, *, data_dir: Path | None = None, settings: RecorderSettings | None = None,
                 control: str | None = None, io: ArchiveIO | None = None, archive_read_bind: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        #: Where the archive read-out listens (readout.py); None: not served.
        self.archive_read_bind = archive_read_bind
        self.readout: ReadoutThread | None = None
        self.settings = settings or RecorderSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else config.data_dir()
        self.control_endpoint = control or config.get("control")
        self.io = io
        self.registry: Registry | None = None
        self.sessions: dict[str, LiveSession] = {}
        self.closed: dict[str, float] = {}
        self.filler = GapFiller(is_recording=lambda sid: sid in self.sessions,
                                batch=self.settings.retransmit_batch, attempts=self.settings.request_attempts)
        self.control: ControlClient | None = None
        self._outstanding: tuple[str, Any, float] | None = None
        self._held: dict[str, list[tuple[Message, list]]] = {}
        self._held_count = 0
        self._asked: dict[str, tuple[float, int]] = {}
        self._last_commit_utc: str | None = None
        self._setup_fatal: ArchiveFatal | None = None
        self._last_tick = time.monotonic()
        self._fatal_before: str | None = None  # what stopped the recorder before this one (FATAL_MARKER)
        self._committed = False

    # ---------------------------------------------------------------- lifecycle

    def setup(self) -> None:
        self.control = ControlClient(self.ctx, self.control_endpoint)
        try:
            self._fatal_before = json.loads((self.data_dir / FATAL_MARKER).read_text()).get("error") or "unknown"
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as err:
            self._fatal_before = f"unknown ({FATAL_MARKER} unreadable: {err})"
        try:
            try:
                self.registry = Registry.in_data_dir(self.data_dir)
                for row in self.registry.list(status="recording"):
                    self._resume(row.session_id)
            except (sqlite3.Error, RegistryError) as err:
                raise ArchiveFatal(f"registry in {self.data_dir}: {err}", None) from err
        except ArchiveFatal as err:
            self._setup_fatal = err  # raised from the first tick, where the alarm can be published
            return
        log.info("recorder ready: data %s, %d session(s) resumed", self.data_dir, len(self.sessions))
        if self.archive_read_bind:
            self.readout = ReadoutThread(self.ctx, self.archive_read_bind,
                                         ArchiveReadout(self.data_dir, self._durable_record_no))
            self.readout.start()

    def _readout_rejections(self) -> None:
        """The read-out thread's refusals, raised here (the loop owns the publisher) as the acquirer raises its
        control socket's: a `low` `input_rejected` alarm that clears itself."""
        assert self.readout is not None
        q = self.readout.readout.rejections
        while q:
            key, text = q.popleft()
            self.alarms.raise_("input_rejected", key, "low", text, pulse=True)

    def _durable_record_no(self, session_id: str) -> int | None:
        """For the read-out's thread: how far a session being recorded is durable (None: not recording it)."""
        live = self.sessions.get(session_id)
        return None if live is None else live.writer.durable_record_no

    def teardown(self) -> None:
        if self.readout is not None:
            self.readout.stop()
            self.readout = None
        now = time.monotonic()
        try:
            self._write_notes(now)
        except ArchiveFatal:
            pass
        for sid, live in list(self.sessions.items()):
            try:
                if live.ended_at is not None:
                    self._close(live, now)
                else:
                    live.writer.release()
                    log.info("session %s left open for resume (%d records)", sid, live.records)
            except ArchiveFatal as err:
                log.error("session %s: %s", sid, err)
            except (ArchiveClosed, RegistryError, sqlite3.Error) as err:
                log.error("session %s not closed cleanly: %s", sid, err)
        self.sessions.clear()
        if self.registry is not None:
            self.registry.close()
        if self.control is not None:
            self.control.close()
            self.control = None

    def heartbeat_info(self) -> dict:
        live = self.sessions.get(self.session_id or "")
        return {
            "open_sessions": len(self.sessions),
            "durable_record_no": live.writer.durable_record_no if live else None,
            "last_commit_utc": self._last_commit_utc,
            "refetching": self._outstanding is not None,
        }

    # ---------------------------------------------------------------- messages

    def on_wire(self, msg: Message, frames: list) -> None:
        """The archive keeps the frames as they travelled, not a re-encoding."""
        self._on_wire(msg, [f.buffer for f in frames])

    def _on_wire(self, msg: Message, frames: list) -> None:
        if msg.type in NOT_ARCHIVED:
            return
        try:
            self._take(msg, frames, live=True)
            self._write_notes(time.monotonic())
        except ArchiveFatal as err:
            self._fatal(err)

    def _take(self, msg: Message, frames: list, *, live: bool) -> bool:
        """Archive one message (live or refetched); False if it was not archived."""
        now = time.monotonic()
        sid = msg.session_id
        key = (msg.publisher, msg.instance, msg.type)
        session = self.sessions.get(sid) if sid is not None else None
        if sid is not None and session is None:
            if isinstance(msg, SessionStart) and sid not in self.closed and self._known_status(sid) is None:
                session = self._open(msg)
            elif sid in self.closed or self._known_status(sid) is not None:
                if self.filler.claim(key, msg.seq, sid, live=live):
                    DROPPED.labels("session_closed").inc()
                return False
            elif live:
                self._hold(msg, frames)
                return False
            else:
                # Refetched, of a session the recorder knows nothing of: not ours to archive.
                self.filler.claim(key, msg.seq, sid, live=False)
                DROPPED.labels("unknown_session").inc()
                return False
        if not self.filler.claim(key, msg.seq, sid, live=live):
            DROPPED.labels("duplicate").inc()
            return False
        if session is None:
            return False  # a message outside any session (e.g. an alarm between sessions): accounted, not archived
        session.append(frames, msg.type, now)
        if msg.type in SUMMARY_TYPES:
            session.summary_inputs.append(msg)
        RECORDS.labels("message").inc()
        BYTES.inc(sum(len(f) for f in frames))
        self._follow(session, msg, now)
        return True

    def _follow(self, s: LiveSession, msg: Message, now: float) -> None:
        """What a session's own messages say about its registry row and its end."""
        if isinstance(msg, SessionStart) and s.start is None:
            s.start = json.loads(msg.model_dump_json())
            s.acquirer_instance = msg.instance
        elif isinstance(msg, SessionEnd):
            s.end(now)
        elif isinstance(msg, AmrCourse):
            s.course_seen = True
        elif isinstance(msg, ReaderNote) and msg.kind != "note":
            # The presence log: which remote reader watched this session from when to when (issue #19).
            # Open intervals are closed with the session (Registry.close_session); the cart's 'link_lost'
            # ends one when the reader was last heard, its 'link_restored' opens the next.
            if msg.kind == "link_lost":
                heard = msg.last_heard_utc
                self._registry(lambda r: r.reader_link_lost(s.session_id, msg.reader, heard,
                                                            actor=self.settings.actor))
            else:
                mark = Registry.reader_left if msg.kind == "left" else Registry.reader_watching
                self._registry(lambda r: mark(r, s.session_id, msg.reader, msg.ts_utc, actor=self.settings.actor))
        elif isinstance(msg, Prediction) and not s.model_known:
            s.model_known = True
            self._registry(lambda r: r.update_session(s.session_id, actor=self.settings.actor,
                                                      model_sha256=msg.model_sha256, model_synthetic=msg.synthetic))

    # ---------------------------------------------------------------- sessions

    def _known_status(self, sid: str) -> str | None:
        row = self._registry(lambda r: r.find(sid))
        return None if row is None else row.status

    def _open(self, start: SessionStart | None, sid: str | None = None, first_ts: str | None = None) -> LiveSession:
        """A new session: registry row, then its archive (so a crash between them leaves a row to resume)."""
        sid = start.session_id if start is not None else sid
        assert sid is not None
        meta: dict[str, Any] = {"recorder_version": __version__}
        if start is not None:
            head = json.loads(start.model_dump_json())
            meta.update({k: head[k] for k in ("started_at", "source", "scenario", "replay_of", "manual",
                                              "montage", "settings", "ground_truth")})
        else:
            meta["session_start"] = "missing: the recorder met this session after its start and the acquirer " \
                                    "could not give its session_start"
        replay_of = start.replay_of if start is not None else None
        source_row = self._registry(lambda r: r.find(replay_of)) if replay_of is not None else None
        if replay_of is not None and source_row is None:
            log.warning("session %s replays %s, which this registry does not hold; replay_of left empty "
                        "(the archive's open record keeps it)", sid, replay_of)
            replay_of = None
        # A replay is the same patient's operation again: it keeps the source's pseudonym.
        token = source_row.patient_token if source_row is not None and source_row.patient_token else \
            new_patient_token()
        meta["patient_token"] = token

        def create(r: Registry):
            return r.create_session(
                sid, actor=self.settings.actor,
                started_at=start.started_at if start is not None else (first_ts or utc_iso(time.time())),
                source=start.source if start is not None else "unknown",
                scenario=start.scenario if start is not None else None,
                replay_of=replay_of,
                montage=start.montage.model_dump(mode="json") if start is not None else {},
                settings=dict(start.settings) if start is not None else {},
                patient_token=token)

        self._registry(create)
        writer = self._writer(sid, meta)
        live = LiveSession(sid, writer, time.monotonic())
        self.sessions[sid] = live
        self.session_id = sid
        SESSIONS.set(len(self.sessions))
        log.info("session %s: recording (%s)", sid, meta.get("source", "session_start unknown"))
        for other in list(self.sessions.values()):
            if other is live or other.ended_at is not None or start is None:
                continue
            if other.acquirer_instance is not None and other.acquirer_instance != start.instance \
                    and start.publisher == "acquirer":
                # A new acquirer process: the old one, and what it never sent, are gone.
                self.filler.instance_gone("acquirer", other.acquirer_instance,
                                          "the acquirer that sent them was replaced by a new process")
                other.end(time.monotonic(), "acquirer_replaced")
        return live

    def _writer(self, sid: str, meta: dict) -> ArchiveWriter:
        return ArchiveWriter(session_path(self.data_dir, sid), self.settings.archive, meta=meta, io=self.io)

    def _resume(self, sid: str) -> None:
        """A session the registry shows as recording: recover its archive and carry on where it stopped."""
        assert self.registry is not None
        try:
            writer = self._writer(sid, {"recorder_version": __version__, "resumed": True})
        except ArchiveCorrupt as err:
            self.registry.mark_corrupt(sid, str(err)[:2000], actor=self.settings.actor)
            self.alarms.raise_("archive_corrupt", f"archive_corrupt:{sid}", "high",
                               f"session {sid} has a corrupt archive and was left untouched: {err}")
            return
        except ArchiveClosed:
            self.registry.close_session(sid, actor=self.settings.actor)
            log.info("session %s: archive was closed, registry updated", sid)
            return
        cut = writer.recovery.cut if writer.recovery is not None else None
        if cut is not None:
            log.warning("session %s: recovery cut a torn tail of %s at byte %d (%d bytes): %s", sid, cut.segment,
                        cut.offset, cut.bytes_cut, cut.reason)
        now = time.monotonic()
        live = LiveSession(sid, writer, now, resumed=True, last_message_at=now)
        with ArchiveIndex.build(writer.dir) as idx:
            start = idx.session_start()
            if start is not None:
                live.start = start.header
                live.acquirer_instance = start.instance if start.publisher == "acquirer" else None
            if idx.session_end() is not None:
                live.end(now)
            live.course_seen = bool(idx.events_of("amr_course"))
            live.model_known = bool(idx.events_of("prediction"))
            seqs = idx.seqs()
            for _no, gap in idx.gaps:
                if gap.type is not None:  # recorded as lost: accounted for, never asked for again
                    seqs.setdefault((gap.publisher, gap.instance, gap.type), SeqSet()).add_range(gap.from_seq,
                                                                                                gap.to_seq)
            live.records = idx.record_count
        self.sessions[sid] = live
        for key, got in seqs.items():
            self.filler.preload(key, got, sid, tail=True)
        instances = {k[1] for k in seqs if k[0] == "acquirer"}
        for inst in instances:
            for t in ACQUIRER_TYPES:
                if ("acquirer", inst, t) not in seqs:
                    self.filler.probe_type("acquirer", inst, t)
        if self.session_id is None or (live.start or {}).get("started_at", "") >= \
                (self.sessions[self.session_id].start or {}).get("started_at", ""):
            self.session_id = sid
        SESSIONS.set(len(self.sessions))
        log.info("session %s resumed at record %d%s", sid, writer.next_record_no,
                 " (ended; closing after its grace)" if live.ended_at is not None else "")

    def _close(self, live: LiveSession, now: float) -> None:
        sid = live.session_id
        live.writer.close(live.end_reason, records=live.records, gap_messages=live.gap_messages)
        RECORDS.labels("close").inc()
        self._registry(lambda r: r.close_session(sid, actor=self.settings.actor))
        self._store_summary(live)
        del self.sessions[sid]
        self.closed[sid] = now
        SESSIONS.set(len(self.sessions))
        if self.session_id == sid:
            newest = max(self.sessions.values(), key=lambda s: s.opened_at, default=None)
            self.session_id = newest.session_id if newest else None
        log.info("session %s closed (%s): %d records, %d message(s) recorded as lost", sid, live.end_reason,
                 live.records, live.gap_messages)

    def _store_summary(self, live: LiveSession) -> None:
        """What the session contributes to the cohort table. A resumed session
        saw only part of its messages live: it gets no summary here, and the
        cohort export reads its archive instead."""
        if live.resumed or all(m.type == "session_start" for m in live.summary_inputs):
            return
        try:
            summary = summarize(live.summary_inputs, live.session_id)
            self._registry(lambda r: r.set_summary(live.session_id, summary, actor=self.settings.actor))
        except SummaryError as err:
            log.error("session %s: no cohort summary stored (%s); `amrwatch export cohort` will read the archive",
                      live.session_id, err)

    # --------------------------------------------------------------- unknown sessions

    def _hold(self, msg: Message, frames: list) -> None:
        sid = msg.session_id
        assert sid is not None
        if self._held_count >= HOLD_MESSAGES:
            DROPPED.labels("held_overflow").inc()
            return
        self._held.setdefault(sid, []).append((msg, [bytes(f) for f in frames]))
        self._held_count += 1
        self._asked.setdefault(sid, (float("-inf"), 0))

    def _release_held(self, sid: str) -> None:
        held = self._held.pop(sid, [])
        self._held_count -= len(held)
        self._asked.pop(sid, None)
        for msg, frames in held:
            self._take(msg, frames, live=True)

    def _settle_unknown(self, now: float) -> None:
        """Sessions met without their start: ask the acquirer, and after a few tries record them anyway."""
        for sid, (at, tries) in list(self._asked.items()):
            if sid in self.sessions:
                self._release_held(sid)
            elif tries >= 3 and now - at >= self.settings.session_query_s:
                held = self._held.get(sid) or []
                first = held[0][0].ts_utc.isoformat() if held else None
                log.warning("session %s: no session_start after %d requests; recording it without one", sid, tries)
                self._open(None, sid, first)
                self._release_held(sid)

    # ---------------------------------------------------------------- control socket

    def _send(self, now: float) -> None:
        if self._outstanding is not None or self.control is None:
            return
        for sid, (at, tries) in self._asked.items():
            if sid not in self.sessions and now - at >= self.settings.session_query_s and tries < 3:
                self._asked[sid] = (now, tries + 1)
                self._outstanding = ("session", sid, now)
                self.control.send({"op": "session"})
                REQUESTS.labels("session", "sent").inc()
                return
        req = self.filler.next_request()
        if req is None:
            return
        body = {"op": "retransmit", "session_id": self._request_session(), "instance": req.key[1],
                "type": req.key[2], "from_seq": req.from_seq, "to_seq": req.to_seq}
        self._outstanding = ("retransmit", req, now)
        self.control.send(body)
        REQUESTS.labels("retransmit", "sent").inc()

    def _request_session(self) -> str:
        """The request names a session (the buffer itself is per publisher instance)."""
        return self.session_id or next(iter(self.sessions), None) or "unknown"

    def _poll_control(self, now: float) -> None:
        if self.control is None:
            return
        for parts in self.control.replies():
            self._on_reply(parts, now)
        if self._outstanding is not None and now - self._outstanding[2] >= self.settings.request_timeout_s:
            kind, what, _ = self._outstanding
            self._outstanding = None
            REQUESTS.labels(kind, "timeout").inc()
            log.warning("control request (%s) unanswered: %s; retrying on a fresh socket", kind,
                        no_answer(self.control_endpoint, self.settings.request_timeout_s))
            self.control.reconnect()  # lazy pirate: a late reply must never be taken for the next request's
            if kind == "retransmit":
                self.filler.on_failure(what, "the acquirer did not answer")

    def _on_reply(self, parts: list[bytes], now: float) -> None:
        outstanding, self._outstanding = self._outstanding, None
        if outstanding is None or self.control is None:
            return
        kind, what, _ = outstanding
        try:
            parsed = self.control.parse(parts)
        except ControlError as err:
            log.warning("%s", err)
            REQUESTS.labels(kind, "invalid").inc()
            return
        if parsed is None or parsed.tag:
            return
        reply, triples = parsed.reply, parsed.triples
        REQUESTS.labels(kind, "ok" if reply.ok else "refused").inc()
        if kind == "session":
            if reply.ok and triples:
                try:
                    msg = decode(triples[0])
                except DecodeError as err:
                    log.warning("session reply carries an invalid session_start: %s", err)
                    return
                if isinstance(msg, SessionStart):
                    self._take(msg, triples[0], live=False)
                    self._release_held(msg.session_id)
            return
        req: Request = what
        if not reply.ok:
            log.log(logging.DEBUG if reply.detail.get("reason") == "not_yet_sent" else logging.WARNING,
                    "retransmit %s %s %d..%d refused: %s", req.key[1], req.key[2], req.from_seq, req.to_seq,
                    reply.error)
            if reply.error and "not this acquirer" in reply.error:
                self.filler.instance_gone(req.key[0], req.key[1], reply.error[:200])
            elif reply.detail.get("reason") == "not_yet_sent":
                # Nothing from from_seq on was ever sent: the end of a tail or scan, not a loss.
                last = reply.detail.get("last_sent_seq")
                self.filler.on_reply(req, [], None, last_sent=last if isinstance(last, int) else None)
            else:
                self.filler.on_failure(req, reply.error or "refused")
            return
        got = []
        archived = 0
        for frames in triples:
            try:
                msg = decode(frames)
            except DecodeError as err:
                log.warning("retransmitted message refused: %s", err)
                continue
            if (msg.instance, msg.type) != (req.key[1], req.key[2]) or not req.from_seq <= msg.seq <= req.to_seq:
                log.warning("retransmit reply holds %s %s seq %d, not asked for; ignored", msg.instance, msg.type,
                            msg.seq)
                continue
            got.append((msg.seq, msg.session_id))
            if self._take(msg, frames, live=False):
                REFILLED.inc()
                archived += 1
        if archived:
            log.info("refetched %d %s message(s) of %s/%s (seq %d..%d asked, %s)", archived, req.key[2], req.key[0],
                     req.key[1], req.from_seq, min(req.to_seq, max(s for s, _ in got)), req.purpose)
        d = reply.detail
        unavailable = None
        if isinstance(d.get("unavailable_from"), int) and isinstance(d.get("unavailable_to"), int):
            unavailable = (d["unavailable_from"], d["unavailable_to"])
        resume = d.get("resume_from_seq")
        last = d.get("last_sent_seq")
        self.filler.on_reply(req, got, unavailable, resume_from=resume if isinstance(resume, int) else None,
                             last_sent=last if isinstance(last, int) else None)

    # ---------------------------------------------------------------- gaps

    def _write_notes(self, now: float) -> None:
        for note in self.filler.take_notes():
            self._record_gap(note)

    def _record_gap(self, note: GapNote) -> None:
        publisher, instance, type_ = note.key
        sid = note.session_id if note.session_id in self.sessions else self.session_id
        live = self.sessions.get(sid) if sid is not None else None
        UNFILLED.inc(note.count)
        what = (f"{note.count} {type_} message(s) from {publisher}/{instance} (seq {note.from_seq}.."
                f"{note.to_seq}) lost: {note.reason}")
        if live is not None:
            reason = note.reason if note.session_id == sid else f"{note.reason} (session not known for certain)"
            live.writer.append_gap(publisher, instance, note.from_seq, note.to_seq, reason[:256], type_)
            live.gap_messages += note.count
            RECORDS.labels("gap").inc()
            what += f"; recorded as a gap in session {sid}"
        else:
            what += "; no open session to record it in"
        self.alarms.raise_("data_gap", f"data_gap:{publisher}:{type_}", "medium", what, pulse=True)

    # ---------------------------------------------------------------- the loop

    def tick(self, now: float) -> None:
        if self._setup_fatal is not None:
            self._fatal(self._setup_fatal)
        late = now - self._last_tick
        self._last_tick = now
        if self.readout is not None:
            self._readout_rejections()
        try:
            self._poll_control(now)
            self._settle_unknown(now)
            self._write_notes(now)
            self._commit(now, late)
            self._send(now)
            self._end_sessions(now)
        except ArchiveFatal as err:
            self._fatal(err)
        self._clear_fatal_if_resumed()

    def _commit(self, now: float, late: float) -> None:
        slow = late if late > self.settings.stall_s else 0.0
        for live in list(self.sessions.values()):
            w = live.writer
            if not w.needs_commit():
                continue
            t = time.perf_counter()
            w.commit()
            self._committed = True
            took = time.perf_counter() - t
            FSYNC.observe(took)
            LAST_COMMIT.set_to_current_time()
            self._last_commit_utc = utc_iso(time.time())
            slow = max(slow, took if took > self.settings.stall_s else 0.0)
        if slow:
            self.alarms.raise_("recorder_stalled", "recorder_stalled", "high",
                               f"recorder: archiving stalled for {slow:.1f} s (limit {self.settings.stall_s:g} s); "
                               "check the disk", pulse=True)

    def _end_sessions(self, now: float) -> None:
        for live in list(self.sessions.values()):
            if not live.settled(now, self.settings):
                continue
            if self.filler.pending_for(live.session_id) and not live.overdue(now, self.settings):
                continue
            self.filler.give_up_for(live.session_id, f"still missing {self.settings.max_grace_s:g} s after the "
                                    "session ended")
            self._write_notes(now)
            self._close(live, now)
        for sid, at in list(self.closed.items()):
            if now - at > 600:
                del self.closed[sid]

    # ---------------------------------------------------------------- failures

    def _registry(self, call):
        """A registry call; a registry that cannot write is as fatal as an archive that cannot."""
        assert self.registry is not None
        try:
            return call(self.registry)
        except UnknownSession as err:
            log.error("registry: %s", err)
            return None
        except RegistryError as err:
            log.error("registry refused a change: %s", err)
            return None
        except sqlite3.Error as err:
            raise ArchiveFatal(f"registry {self.registry.path}: {err}. Not retried: the recorder stops so the "
                               "supervisor restarts it", None) from err

    def _fatal(self, err: ArchiveFatal) -> None:
        log.critical("%s", err)
        self.pub.wait_ready(1.0, ("alarm",))
        self.alarms.raise_("archive_fatal", "archive_fatal", "high", f"recorder stopped: {err}")
        self._mark_fatal(str(err))
        raise SystemExit(EXIT_ARCHIVE_FATAL)

    def _mark_fatal(self, text: str) -> None:
        """The alarm outlives this process: the recorder that takes over clears it once it records again.
        Best effort — the disk that failed may refuse this too (then the alarm stays for the operator)."""
        try:
            fd = os.open(self.data_dir / FATAL_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"error": text[:900], "pid": os.getpid()}))
        except OSError as err:
            log.error("could not note the archive_fatal alarm in %s: %s", self.data_dir / FATAL_MARKER, err)

    def _clear_fatal_if_resumed(self) -> None:
        """Called after a tick without a fault: recording has resumed (a group commit succeeded, or there is
        nothing to commit), so the archive_fatal raised by the process before this one is cleared."""
        if self._fatal_before is None or not (self._committed or not self.sessions):
            return
        if not self.pub.wait_ready(0, ("alarm",)):
            return
        self.pub.publish(Alarm, self.session_id, kind="archive_fatal", priority="high", state="cleared",
                         message=f"recording resumed after the recorder stopped on: {self._fatal_before}"[:1000],
                         source=self.name, alarm_key="archive_fatal")
        log.info("archive_fatal cleared: recording resumed")
        self._fatal_before = None
        try:
            (self.data_dir / FATAL_MARKER).unlink()
        except OSError as err:
            log.warning("could not remove %s: %s", self.data_dir / FATAL_MARKER, err)

