"""The acquirer: owns the session, paces the source, publishes frames.

It is also the session's single point of entry for operator inputs (stage
markers, patient factors) and keeps the retransmit buffer the recorder
refills gaps from — both over the control socket, which acknowledges. And it
keeps the session's state-bearing messages (snapshot.py), which a service
restarted mid-session asks for (`state`) to take the session up where it was.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import time
from typing import Any

import zmq
from pydantic import ValidationError

from ... import config, security
from ...bus import harden
from ...proto.codec import encode
from ...proto.control import (
    CONTROL_REQUEST,
    MAX_REPLY_BYTES,
    MAX_RETRANSMIT,
    MAX_STATE,
    ControlReply,
    FactorsRequest,
    MarkRequest,
    RetransmitRequest,
    SessionRequest,
    StateRequest,
    describe_request,
)
from ...proto.control import AckRequest, NoteRequest, StreamsRequest
from ...freetext import identifier_problem
from ...proto.messages import (
    AlarmAck,
    ReaderNote,
    EmgFrame,
    Factors,
    FactorValues,
    Heartbeat,
    Message,
    SessionEnd,
    SessionStart,
    SimTruth,
    StageMarker,
    Stimulus,
    utc_now,
)
from ...bus import SeqEvent
from ...service import Service
from .labels import describe_channels
from ...control_server import ControlLimits, ControlServer, configure
from .readers import DEFAULT_LOST_AFTER_S, ReaderWatch
from .retransmit import RetransmitBuffer
from .snapshot import STATE_TYPES, SessionSnapshot
from .source import Chunk, Source

log = logging.getLogger(__name__)


def new_session_id() -> str:
    """Random, so that an exported cohort row cannot be matched to the operating
    list by its time (sessions keep `started_at` in the registry instead)."""
    return secrets.token_hex(8)


#: What the acquirer hears on the bus besides heartbeats: the others' state-bearing messages (its own
#: stage markers and factors it keeps as it sends them).
SNAPSHOT_TOPICS = tuple(t for t in STATE_TYPES if t not in ("stage", "factors"))


#: The others' events the acquirer also keeps, for a remote reader's backfill (`retransmit` with the other
#: publisher's instance): the state types, alarms and acknowledgements. Low rate (never frames).
FOREIGN_TOPICS = (*SNAPSHOT_TOPICS, "alarm", "alarm_ack")


class Acquirer(Service):
    name = "acquirer"
    topics = ("heartbeat", *FOREIGN_TOPICS)

    def __init__(
        self,
        make_source,
        *,
        speed: float = 1.0,
        frame_ms: float = 5.0,
        loop: bool = False,
        wait_for: tuple[str, ...] = (),
        wait_timeout_s: float = 20.0,
        control_bind: str | None = None,
        signal_lost_ms: float = 1000.0,
        retransmit_s: float = 90.0,
        reader_lost_s: float = DEFAULT_LOST_AFTER_S,
        keep_state: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not 0.01 <= speed <= 1000:
            raise ValueError(f"--speed must be between 0.01 and 1000; got {speed}")
        if not 0.5 <= frame_ms <= 100:
            raise ValueError(f"frame_ms must be between 0.5 and 100 ms; got {frame_ms}")
        self.make_source = make_source
        self.source: Source = make_source()
        self.speed = speed
        self.frame_ms = frame_ms
        # Wake once per frame period (at most every 1 ms): a frame leaves when its last sample is due,
        # not in the service's default 50 ms batches (10 frames at speed 1, 400 at speed 40), which
        # queued behind each other on the bus and in every subscriber (bench/RESULTS.md).
        self.tick_s = min(Service.tick_s, max(0.001, frame_ms / 1000.0 / speed))
        self.loop = loop
        self.wait_for = set(wait_for)
        self.wait_timeout_s = wait_timeout_s
        self.control_bind = control_bind or config.get("control_bind")
        self.signal_lost_s = signal_lost_ms / 1000.0
        self.buffer = RetransmitBuffer(keep_s=retransmit_s)
        # Other publishers' events, keyed "instance/type" (each its own gap-free seq stream); 64 MiB at most.
        self.foreign = RetransmitBuffer(keep_s=retransmit_s, max_bytes=64 * 1024 * 1024)
        self.foreign_last: dict[str, int] = {}
        # The remote readers watching the session, and whether the cart still hears them (readers.py).
        self.readers = ReaderWatch(reader_lost_s)
        self.next_reader_check = 0.0
        self.foreign_publisher: dict[str, str] = {}
        self.pub.on_sent.append(lambda m, f: self.buffer.add(m.type, m.seq, f, time.monotonic()))
        self.keep_state = keep_state
        self.snapshot: SessionSnapshot | None = None
        self.pub.on_sent.append(self._keep)
        self.ready_services: set[str] = set()
        self.session_start: SessionStart | None = None
        self.t0 = 0.0
        self.sent_samples = 0
        self.n_frames = 0
        self.n_stimuli = 0
        self.last_data = 0.0
        self.waiting_since = 0.0
        self.control: zmq.Socket | None = None
        self.source_alarms: set[str] = set()
        self.control_limits = ControlLimits()
        self.control_server: ControlServer | None = None

    # -- lifecycle -------------------------------------------------------------
    def setup(self) -> None:
        self.control = self.ctx.socket(zmq.ROUTER)
        harden(self.control)
        configure(self.control, self.control_limits)
        security.server(self.control, self.ctx)
        self.control.bind(self.control_bind)
        self.control_server = ControlServer(self.control, self._handle, self.control_limits,
                                            on_refuse=self._control_refused)
        self.add_socket(self.control, self._serve_control)
        self.waiting_since = time.monotonic()
        log.info(
            "source %s, %d channels at %g Hz; waiting for %s",
            self.source.spec,
            len(self.source.montage.channels),
            self.source.montage.sampling_rate_hz,
            ", ".join(sorted(self.wait_for)) or "nobody",
        )

    def teardown(self) -> None:
        if self.session_start is not None:
            self._end_session("shutdown")
        self.source.close()

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat) and msg.info.get("receiving"):
            self.ready_services.add(msg.service)

    def on_wire(self, msg: Message, frames: list) -> None:
        if msg.instance != self.pub.instance and msg.type in FOREIGN_TOPICS:
            key = f"{msg.instance}/{msg.type}"
            self.foreign.add(key, msg.seq, frames, time.monotonic())
            self.foreign_last[key] = msg.seq
            self.foreign_publisher[msg.instance] = msg.publisher
        if msg.type in SNAPSHOT_TOPICS:
            self._keep(msg, frames)
        self.on_message(msg)

    def _keep(self, msg: Message, frames: list) -> None:
        if self.snapshot is not None:
            self.snapshot.add(msg, frames)

    def _on_seq(self, ev: SeqEvent) -> None:
        super()._on_seq(ev)
        if ev.kind == "gap" and self.snapshot is not None:
            self.snapshot.note_gap(ev.publisher, ev.type, ev.expected, ev.got)

    def heartbeat_info(self) -> dict:
        return {
            "source": self.source.spec[:256],
            "samples": self.sent_samples,
            "stimuli": self.n_stimuli,
            "retransmit_bytes": self.buffer.nbytes,
            "state_messages": len(self.snapshot) if self.snapshot is not None else 0,
            # How many stage markers and factors it has sent: a subscriber that saw fewer lost one (sessionstate).
            "stage_sent": self.pub.next_seq("stage"),
            "factors_sent": self.pub.next_seq("factors"),
        }

    # -- session ---------------------------------------------------------------
    def _start_session(self) -> None:
        now = utc_now()
        sid = new_session_id()
        self.session_id = sid
        self.readers.reset()
        self.snapshot = SessionSnapshot(sid) if self.keep_state else None
        settings = dict(self.source.settings())
        settings.update({"speed": self.speed, "frame_ms": self.frame_ms})
        self.session_start = self.pub.publish(
            SessionStart,
            sid,
            started_at=now,
            source=self.source.spec[:256],
            scenario=self.source.scenario,
            replay_of=None,
            manual=self.source.manual,
            montage=self.source.montage,
            settings=dict(list(settings.items())[:64]),
            ground_truth=self.source.ground_truth,
            stream=getattr(self.source, "stream_facts", None),
        )
        self.t0 = time.monotonic()
        self.last_data = self.t0
        self.sent_samples = self.n_frames = self.n_stimuli = 0
        log.info("session %s started (%s, scenario %s)", sid, self.source.spec, self.source.scenario)
        # The reader, annotations it did not understand, what each channel was taken as and why.
        for line in [*getattr(self.source, "notes", []), *describe_channels(self.source.montage)]:
            log.info("%s", line)

    def _end_session(self, reason: str) -> None:
        assert self.session_start is not None
        self.pub.publish(
            SessionEnd,
            self.session_id,
            ended_at=utc_now(),
            reason=reason,
            n_frames=self.n_frames,
            n_stimuli=self.n_stimuli,
            n_samples=self.sent_samples,
        )
        log.info(
            "session %s ended (%s): %d samples, %d stimuli", self.session_id, reason, self.sent_samples, self.n_stimuli
        )
        self.session_start = None

    def _ready(self, now: float) -> bool:
        if now - self.waiting_since > self.wait_timeout_s:
            missing = self.wait_for - self.ready_services
            if missing:
                self.alarms.raise_(
                    "service_down",
                    "startup:" + ",".join(sorted(missing)),
                    "high",
                    f"starting the session without {', '.join(sorted(missing))}: "
                    f"no heartbeat within {self.wait_timeout_s:g} s",
                    pulse=True,
                )
            return True
        return self.wait_for <= self.ready_services and self.pub.wait_ready(0, ("emg_frame", "stimulus"))

    # -- the paced loop ---------------------------------------------------------
    def tick(self, now: float) -> None:
        self._tick_source(now)
        if now >= self.next_reader_check:
            self.next_reader_check = now + 1.0
            self._check_readers(now)
        if self.control_server is not None and self.control_server.clients:
            self._serve_control()  # requests left waiting by the last turn's budget, after the frames

    def _tick_source(self, now: float) -> None:
        if self.session_start is None:
            if not self._ready(now):
                return
            self._start_session()
        fs = self.source.montage.sampling_rate_hz
        frame_n = max(1, int(round(fs * self.frame_ms / 1000.0)))
        if self.source.paced:
            due = int((now - self.t0) * fs * self.speed)
            budget = 400  # frames per tick, so control requests are never starved
            while self.sent_samples + frame_n <= due and budget:
                if not self._publish_chunk(self.source.read(frame_n)):
                    return
                budget -= 1
        else:
            for _ in range(50):
                chunk = self.source.read(frame_n)
                if not self._publish_chunk(chunk) or chunk is None or chunk.n_samples == 0:
                    break
            self._watch_signal(now)

    def _watch_signal(self, now: float) -> None:
        if now - self.last_data > self.signal_lost_s:
            self.alarms.raise_(
                "signal_lost",
                "signal_lost",
                "high",
                f"no samples from {self.source.spec} for more than {self.signal_lost_s * 1000:.0f} ms",
            )
        elif "signal_lost" in self.alarms.active:
            self.alarms.clear("signal_lost", "samples are arriving again")
        self._source_health()

    def _source_health(self) -> None:
        """Alarms a live source reports (LSL: a gap or restart, a rate off nominal)."""
        health = getattr(self.source, "health", None)
        if health is None:
            return
        conditions = health()
        for key, (kind, priority, message, pulse) in conditions.items():
            self.alarms.raise_(kind, key, priority, message, pulse=pulse)
            if not pulse:
                self.source_alarms.add(key)
        for key in [k for k in self.source_alarms if k not in conditions]:
            self.alarms.clear(key, "condition ended")
            self.source_alarms.discard(key)

    def _publish_chunk(self, chunk: Chunk | None) -> bool:
        """Publish one chunk; False when the source is exhausted."""
        if chunk is None:
            self._end_session("scenario_end" if self.source.scenario else "source_exhausted")
            if self.loop:
                self.source.close()
                self.source = self.make_source()
                self.waiting_since = time.monotonic()
            else:
                self.request_stop()
            return False
        sid = self.session_id
        fs = self.source.montage.sampling_rate_hz
        for idx, stage in chunk.stages:
            self.pub.publish(StageMarker, sid, stage=stage, source="scenario" if self.source.scenario else "file",
                             sample_index=idx)
        for _idx, values in chunk.factors:
            self.pub.publish(Factors, sid, factors=FactorValues(**values), source="scenario")
        if chunk.n_samples:
            start = self.session_start.started_at
            first = chunk.first_sample_index
            self.pub.publish(
                EmgFrame,
                sid,
                first_sample_index=first,
                n_channels=chunk.samples.shape[0],
                n_samples=chunk.n_samples,
                sampling_rate_hz=fs,
                dtype="<f4",
                layout="channel_major",
                first_sample_device_s=chunk.device_time_s if chunk.device_time_s is not None else first / fs,
                first_sample_utc=start + dt.timedelta(seconds=first / fs),
                samples=chunk.samples,
            )
            self.sent_samples = first + chunk.n_samples
            self.n_frames += 1
            self.last_data = time.monotonic()
        for s in chunk.stimuli:
            self.pub.publish(
                Stimulus,
                sid,
                stimulus_index=self.n_stimuli,
                sample_index=s.sample_index,
                stim_time_s=s.sample_index / fs,
                direction=s.direction,
                intensity_ma=s.intensity_ma,
                width_ms=s.width_ms,
            )
            self.n_stimuli += 1
        for t in chunk.truths:
            self.pub.publish(SimTruth, sid, **t.fields())
        return True

    # -- control socket ----------------------------------------------------------
    def _serve_control(self) -> None:
        """A budgeted turn of the control socket (control_server.py); also called from `tick` so that
        requests left waiting by the budget are answered without new traffic."""
        if self.control_server is not None:
            self.control_server.pump()

    def _control_refused(self, limit: str, text: str) -> None:
        self.alarms.raise_("input_rejected", f"control_limit:{limit}", "low",
                           f"acquirer refused control requests over a limit: {text}", pulse=True)

    def _check_readers(self, now: float) -> None:
        """Presence log: a watching reader silent for --reader-lost-s is logged as cut off (readers.py)."""
        if self.session_start is None:
            return
        for reader, heard_utc in self.readers.newly_lost(now):
            self.pub.publish(ReaderNote, self.session_id, reader=reader, direction="to_room", kind="link_lost",
                             text=None, last_heard_utc=heard_utc)
            log.warning("remote reader %s not heard for %g s (last at %s): logged as cut off", reader,
                        self.readers.lost_after_s, heard_utc.isoformat())

    def _handle(self, raw: bytes) -> tuple[ControlReply, list[bytes]]:
        user = self.control_server.current_user if self.control_server is not None else None
        if user and self.session_start is not None and self.readers.heard(user, time.monotonic(), utc_now()):
            self.pub.publish(ReaderNote, self.session_id, reader=user[:64], direction="to_room",
                             kind="link_restored", text=None)
            log.info("remote reader %s heard again: its presence interval reopens", user)
        try:
            req = CONTROL_REQUEST.validate_json(raw)
        except ValidationError as err:
            text = describe_request(err)
            self._on_reject("control_invalid", text, [raw])
            return ControlReply(ok=False, error=f"request refused: {text}"), []
        if isinstance(req, SessionRequest):
            if self.session_start is None:
                return ControlReply(ok=False, error="no session is running yet"), []
            return ControlReply(ok=True, session_id=self.session_id, n_messages=1), encode(self.session_start)
        if isinstance(req, RetransmitRequest):
            return self._retransmit(req)
        if isinstance(req, StateRequest):
            return self._state(req)
        if isinstance(req, StreamsRequest):
            return self._streams()
        if self.session_start is None:
            return ControlReply(ok=False, error="no session is running yet; wait for the acquirer to start one"), []
        if isinstance(req, (AckRequest, NoteRequest)):
            return self._from_reader(req)
        if isinstance(req, MarkRequest):
            msg = self.pub.publish(
                StageMarker, self.session_id, stage=req.stage, source="operator", sample_index=self.sent_samples
            )
            log.info("operator marked stage %s at sample %d", req.stage, self.sent_samples)
            return ControlReply(ok=True, session_id=self.session_id, seq=msg.seq), []
        assert isinstance(req, FactorsRequest)
        if not req.factors.given():
            return ControlReply(ok=False, error="factors: give at least one of the seven factors"), []
        msg = self.pub.publish(Factors, self.session_id, factors=req.factors, source="operator")
        log.info("operator entered factors: %s", ", ".join(sorted(req.factors.given())))
        return ControlReply(ok=True, session_id=self.session_id, seq=msg.seq), []

    def _from_reader(self, req: AckRequest | NoteRequest) -> tuple[ControlReply, list[bytes]]:
        """An acknowledgement or note from a remote reader (the hub), attributed to the CURVE key it
        authenticated with (the peer's User-Id is its key's name, amrwatch/security.py)."""
        reader = self.control_server.current_user if self.control_server is not None else None
        if not reader or reader in ("unknown", "anonymous"):
            return ControlReply(ok=False, error=f"{req.op}: refused — a remote reader's {req.op} must come over "
                                "CURVE with an authorized key, whose name is the reader's identity"), []
        text = req.note if isinstance(req, AckRequest) else req.text
        problem = identifier_problem("note" if isinstance(req, AckRequest) else "text", text)
        if problem:
            self._on_reject("control_invalid", problem, [])
            return ControlReply(ok=False, error=f"request refused: {problem}"), []
        if isinstance(req, AckRequest):
            msg = self.pub.publish(AlarmAck, self.session_id, alarm_key=req.alarm_key, operator=reader[:64],
                                   note=req.note)
        else:
            if req.kind == "note" and not req.text:
                return ControlReply(ok=False, error="note: text is empty; give the note's text (1-256 "
                                    "characters)"), []
            msg = self.pub.publish(ReaderNote, self.session_id, reader=reader[:64], direction="to_room",
                                   kind=req.kind, text=req.text if req.kind == "note" else None)
            if req.kind == "watching":
                self.readers.watching(reader, time.monotonic(), msg.ts_utc)
            elif req.kind == "left":
                self.readers.left(reader)
        log.info("remote reader %s: %s", reader, req.op if isinstance(req, AckRequest) else req.kind)
        return ControlReply(ok=True, session_id=self.session_id, seq=msg.seq), []

    def _streams(self) -> tuple[ControlReply, list[bytes]]:
        """The seq streams this acquirer can retransmit from (own, and others' kept events)."""
        out = [{"publisher": self.name, "instance": self.pub.instance, "type": t, "last_seq": self.pub.next_seq(t) - 1,
                "oldest_seq": self.buffer.oldest_seq(t)} for t in sorted(self.pub._seq)]
        for key, last in sorted(self.foreign_last.items()):
            instance, type_ = key.split("/", 1)
            out.append({"publisher": self.foreign_publisher.get(instance, "?"), "instance": instance, "type": type_,
                        "last_seq": last, "oldest_seq": self.foreign.oldest_seq(key)})
        return ControlReply(ok=True, session_id=self.session_id, detail={"n_streams": len(out)}), \
            [json.dumps(out).encode()]

    def _retransmit_foreign(self, req: RetransmitRequest) -> tuple[ControlReply, list[bytes]]:
        """Another publisher's events, as the acquirer heard them on the bus (FOREIGN_TOPICS)."""
        key = f"{req.instance}/{req.type}"
        last = self.foreign_last.get(key)
        if last is None:
            return ControlReply(
                ok=False,
                error=f"instance {req.instance} is neither this acquirer's ({self.pub.instance}) nor a publisher "
                f"of {req.type} it has heard (it keeps others' {', '.join(FOREIGN_TOPICS)})",
                detail={"reason": "unknown_instance"},
            ), []
        if req.to_seq < req.from_seq:
            return ControlReply(ok=False, error=f"retransmit: to_seq {req.to_seq} is before from_seq {req.from_seq}; "
                                "give from_seq <= to_seq", detail={"reason": "reversed_range"}), []
        if req.from_seq > last:
            return ControlReply(ok=False, error=f"retransmit: {req.type} seq {req.from_seq} of {req.instance} has "
                                f"not been heard yet (the last heard is seq {last})",
                                detail={"reason": "not_yet_sent", "last_sent_seq": last}), []
        to_seq = min(req.to_seq, last)
        entries, missing = self.foreign.get(key, req.from_seq, to_seq, MAX_RETRANSMIT, MAX_REPLY_BYTES)
        frames: list[bytes] = []
        for e in entries:
            frames.extend(e.frames)
        detail: dict[str, Any] = {"last_sent_seq": last}
        if missing is not None:
            oldest = self.foreign.oldest_seq(key)
            detail["unavailable_from"] = missing
            detail["unavailable_to"] = min(to_seq, oldest - 1) if oldest is not None else to_seq
        if entries and entries[-1].seq < to_seq:
            detail["truncated_by"] = "max_messages" if len(entries) >= MAX_RETRANSMIT else "max_bytes"
            detail["resume_from_seq"] = entries[-1].seq + 1
        return ControlReply(ok=True, session_id=self.session_id, n_messages=len(entries), detail=detail), frames

    def _retransmit(self, req: RetransmitRequest) -> tuple[ControlReply, list[bytes]]:
        """The asked seqs the buffer holds, cut at MAX_RETRANSMIT messages or MAX_REPLY_BYTES (the reply says
        so and where to resume); `unavailable_*` names only seqs that were sent and have aged out."""
        if req.instance != self.pub.instance and f"{req.instance}/{req.type}" in self.foreign_last:
            return self._retransmit_foreign(req)
        if req.instance != self.pub.instance:
            return ControlReply(
                ok=False,
                error=f"instance {req.instance} is not this acquirer's ({self.pub.instance}); "
                "those messages are gone with the process that sent them",
            ), []
        if req.to_seq < req.from_seq:
            return ControlReply(ok=False, error=f"retransmit: to_seq {req.to_seq} is before from_seq {req.from_seq}; "
                                "give from_seq <= to_seq", detail={"reason": "reversed_range"}), []
        last_sent = self.pub.next_seq(req.type) - 1
        if req.from_seq > last_sent:
            sent = f"the last sent is seq {last_sent}" if last_sent >= 0 else "none has been sent"
            return ControlReply(ok=False, error=f"retransmit: {req.type} seq {req.from_seq} has not been sent yet "
                                f"({sent})", detail={"reason": "not_yet_sent", "last_sent_seq": last_sent}), []
        to_seq = min(req.to_seq, last_sent)
        entries, missing = self.buffer.get(req.type, req.from_seq, to_seq, MAX_RETRANSMIT, MAX_REPLY_BYTES)
        frames: list[bytes] = []
        for e in entries:
            frames.extend(e.frames)
        detail: dict[str, Any] = {"last_sent_seq": last_sent}
        if missing is not None:
            oldest = self.buffer.oldest_seq(req.type)
            detail["unavailable_from"] = missing
            detail["unavailable_to"] = min(to_seq, oldest - 1) if oldest is not None else to_seq
        if entries and entries[-1].seq < to_seq:
            detail["truncated_by"] = "max_messages" if len(entries) >= MAX_RETRANSMIT else "max_bytes"
            detail["resume_from_seq"] = entries[-1].seq + 1
        return ControlReply(ok=True, session_id=self.session_id, n_messages=len(entries), detail=detail), frames

    def _state(self, req: StateRequest) -> tuple[ControlReply, list[bytes]]:
        """The running session's state-bearing messages (snapshot.py), as first sent."""
        if self.session_start is None or self.snapshot is None:
            why = ("this acquirer keeps no session state (started with --no-state)" if not self.keep_state
                   else "no session is running yet")
            return ControlReply(ok=False, error=why), []
        if req.session_id is not None and req.session_id != self.session_id:
            return ControlReply(ok=False, session_id=self.session_id,
                                error=f"session {req.session_id} is not the running session ({self.session_id})"), []
        kept = self.snapshot.messages()[-MAX_STATE:]
        frames: list[bytes] = []
        for k in kept:
            frames.extend(k.frames)
        detail: dict[str, Any] = {}
        if self.snapshot.incomplete:
            detail["incomplete"] = "; ".join(self.snapshot.incomplete)[:256]
        return ControlReply(ok=True, session_id=self.session_id, n_messages=len(kept), detail=detail), frames
