"""The analyzer on the bus: frames, stimuli and stage markers in; measurements,
course states, baselines, the session's course and alarms out.

All the analysis is `AnalyzerEngine` (through the same `MessageDispatcher` the
offline tools use); this class only receives, publishes and counts. A late
joiner (started after the session) asks the acquirer's control socket for the
running session's `session_start` and analyses from the frames it holds.

A restarted analyzer is such a late joiner: before analysing it asks the
acquirer for the session's state (`state`, amrwatch/sessionstate.py) and
takes the session up where it was — stage markers, each channel's published
baseline and last course state (`AnalyzerEngine.resume`). Without that state
it never takes mid-operation sweeps for the preoperative baseline: it raises
a `state_unknown` alarm, publishes no baseline and no course for the session,
and the predictor turns that into "AMR course unknown". A stage marker lost
on the bus (seq gap) is fetched the same way and placed by its sample index.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from prometheus_client import Counter

from ... import config, control, metrics, provenance, sessionstate
from ...bus import SeqEvent
from ...proto.codec import DecodeError, decode
from ...proto.messages import (
    BY_TYPE,
    AlarmBody,
    AmrCourseBody,
    AmrMeasurementBody,
    Heartbeat,
    Message,
    ServiceSettings,
    SessionStart,
)
from ...control import ControlClient, ControlError
from ...service import Service
from .engine import CONDITION_KINDS, Output
from .dispatcher import MessageDispatcher
from .settings import AnalyzerSettings

log = logging.getLogger(__name__)

BAD_INPUT = Counter(
    "amrwatch_analyzer_bad_input_total",
    "Input the analyzer refused or repaired (wrong channel count, rate change, NaN, gap, repeats...)",
    ["kind"],
)
REJECTED_SWEEPS = Counter(
    "amrwatch_analyzer_rejected_sweeps_total", "Sweeps published as rejected, by reason", ["reason"]
)
MEASUREMENTS = Counter("amrwatch_analyzer_measurements_total", "amr_measurement messages published")

#: Messages of an unknown session held while the acquirer is asked about it.
HOLD_MESSAGES = 4000
#: Seconds between two `session` requests to the acquirer.
ASK_EVERY_S = 2.0
#: Seconds a restarted analyzer waits for the session's state before it analyses without it (as unknown).
STATE_TIMEOUT_S = control.STATE_TIMEOUT_S
#: Seconds a live analyzer that lost a stage marker waits for it before analysing on (see _await_refetch).
REFETCH_WAIT_S = 1.0
#: The alarm a restart without the session's state raises (a condition, cleared by the next session).
STATE_ALARM = "analyzer:state_unknown"


class Analyzer(Service):
    name = "analyzer"
    topics = ("session_start", "emg_frame", "stimulus", "stage", "session_end", "heartbeat")

    def __init__(self, *, settings: AnalyzerSettings | None = None, control: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings or AnalyzerSettings()
        self.dispatcher = MessageDispatcher(self.settings, source=self.name)
        self.control_endpoint = control or config.get("control")
        self.control: ControlClient | None = None
        self._held: deque[Message] = deque(maxlen=HOLD_MESSAGES)
        self._asked_at = float("-inf")
        self._counted: dict[str, int] = {}
        self._resuming: tuple[str, float] | None = None
        """(session, asked at) while a late joiner waits for the session's state; its messages are held."""
        self._stage_keys: set[tuple] = set()
        self._state_asked_at = float("-inf")
        self._refetch = False
        """A lost stage marker made it ask for the session's state (a reply otherwise is stale)."""
        self._sent = sessionstate.SentCounts(("stage",))

    # -- lifecycle ---------------------------------------------------------------
    def setup(self) -> None:
        self.control = ControlClient(self.ctx, self.control_endpoint)
        self.add_socket(self.control.socket, self._on_control_reply)
        log.info("analyzer ready (settings: %s)", self.settings.model_dump_json())

    def teardown(self) -> None:
        e = self.dispatcher.engine
        if e is not None:
            unknown = e.course_unknown
            self._publish(self.dispatcher.close(), course_unknown=unknown)

    def heartbeat_info(self) -> dict:
        e = self.dispatcher.engine
        return {
            "analysing": e is not None,
            "measurements": e.n_measurements if e is not None else 0,
            "pending_sweeps": len(e.epocher.pending) if e is not None else 0,
        }

    # -- messages ------------------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            if self._sent.behind(msg) and self.dispatcher.engine is not None and self._resuming is None:
                log.warning("the acquirer has sent more stage markers than reached this analyzer; asking for them")
                self._refetch = True
                if self._ask_state():
                    self._await_refetch()
            return
        self._sent.seen(msg)
        if isinstance(msg, SessionStart):
            self._start(msg)
            return
        if self._resuming is not None and msg.session_id == self._resuming[0]:
            self._held.append(msg)
            return
        if msg.session_id != self.dispatcher.session_id:
            self._held.append(msg)
            self._ask_session()
            return
        self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        if msg.type == "stage":
            key = sessionstate.StateReply.key(msg)
            if key in self._stage_keys:
                return  # heard live and also given in the session's state
            self._stage_keys.add(key)
        e = self.dispatcher.engine
        unknown = e is not None and e.course_unknown
        t0 = time.perf_counter()
        outputs = self.dispatcher.dispatch(msg)
        metrics.LOOP_SECONDS.labels(f"analyzer_{msg.type}").observe(time.perf_counter() - t0)
        self._publish(outputs, msg.session_id, course_unknown=unknown)
        if msg.type == "session_end":
            log.info("session %s ended", msg.session_id)
            self.alarms.clear(STATE_ALARM, "the session ended")
            self.session_id = None
            self._counted = {}

    def _start(self, msg: SessionStart, *, late: bool = False) -> None:
        if msg.session_id == self.dispatcher.session_id:
            return
        try:
            outputs = self.dispatcher.start(msg)
        except ValueError as err:  # settings the session's montage cannot honour
            self.alarms.raise_("input_rejected", f"{self.name}:session", "high",
                               f"{self.name} cannot analyse session {msg.session_id}: {err}")
            return
        # What this session is analysed with goes into its archive, for `amrwatch verify`.
        self.pub.publish(ServiceSettings, msg.session_id,
                         **ServiceSettings.body_for(self.name, self.settings.model_dump(mode="json"),
                                                   provenance.platform()))
        self._publish(outputs, self.session_id)
        self.session_id = msg.session_id
        self._counted = {}
        self._stage_keys = set()
        self.alarms.clear(STATE_ALARM, "a new session started")
        log.info("session %s: %d channels at %g Hz", msg.session_id, len(msg.montage.channels),
                 msg.montage.sampling_rate_hz)
        if late:
            # Joined mid-session (a restart): take the session up where it was before analysing anything.
            self._resuming = (msg.session_id, time.monotonic())
            self._ask_state()
            return
        self._resuming = None
        self._release_held(msg.session_id)

    def _release_held(self, session_id: str) -> None:
        held = [m for m in self._held if m.session_id == session_id]
        self._held.clear()
        for m in held:
            self._dispatch(m)

    # -- late join ----------------------------------------------------------------------
    def _ask_session(self) -> None:
        now = time.monotonic()
        if self.control is None or now - self._asked_at < ASK_EVERY_S:
            return
        self._asked_at = now
        log.info("signal from a session this analyzer has not seen start; asking %s", self.control_endpoint)
        self.control.send({"op": "session"})

    def _on_control_reply(self) -> None:
        assert self.control is not None
        for parts in self.control.replies():
            if sessionstate.is_state_reply(parts):
                self._on_state(sessionstate.parse(parts))
                continue
            try:
                reply = self.control.parse(parts)
            except ControlError as err:
                log.warning("%s", err)
                continue
            if reply is None:
                continue
            if not reply.ok or len(reply.frames) < 3:
                log.info("acquirer has no session to give (%s)", reply.reply.error)
                continue
            try:
                msg = decode(reply.frames[:3])
            except DecodeError as err:
                log.warning("control reply carries an invalid session_start: %s", err)
                continue
            if isinstance(msg, SessionStart):
                self._start(msg, late=True)

    # -- the session's state (restart, lost stage markers) -------------------------------------
    def _ask_state(self) -> bool:
        """Ask the acquirer for the session's state; False if no request went out (none possible, or one
        was sent less than 0.2 s ago)."""
        now = time.monotonic()
        if self.control is None or self.session_id is None or now - self._state_asked_at < 0.2:
            return False
        self._state_asked_at = now
        log.info("asking %s for the state of session %s", self.control_endpoint, self.session_id)
        self.control.ask_state(self.session_id)
        return True

    def _await_refetch(self) -> None:
        """Wait for the lost stage marker before analysing on, at most REFETCH_WAIT_S.

        Why wait: every sweep finished meanwhile is labelled with the stage before the lost one, and the
        course names the stage the AMR disappeared in — a behind analyzer (a loaded cart) would otherwise work
        through seconds of queued frames and could say "disappeared at arachnoid dissection" for a loss in
        decompression. The frames wait in ZeroMQ's queue, not lost; the acquirer on the same cart answers in
        milliseconds. Bounded well under the heartbeat's silence limit: an acquirer that does not answer
        leaves the analyzer going on as before, the marker taken up whenever the reply comes."""
        assert self.control is not None
        deadline = time.monotonic() + REFETCH_WAIT_S
        while self._refetch:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("the session's state did not come within %.1f s: analysing on; the lost stage marker "
                            "is taken up when it comes", REFETCH_WAIT_S)
                return
            if self.control.socket.poll(max(1, int(left * 1000))):
                self._on_control_reply()

    def tick(self, now: float) -> None:
        if self._resuming is not None and now - self._resuming[1] > STATE_TIMEOUT_S:
            self._on_state(sessionstate.StateReply(
                self._resuming[0], unknown=f"the acquirer did not answer 'state' within {STATE_TIMEOUT_S:g} s"))

    def _on_seq(self, ev: SeqEvent) -> None:
        super()._on_seq(ev)
        if ev.kind == "gap" and ev.type == "stage" and self.dispatcher.engine is not None:
            self._refetch = True
            self._ask_state()  # the markers it missed are in the session's state

    def _on_state(self, reply: sessionstate.StateReply) -> None:
        sid = self.dispatcher.session_id
        e = self.dispatcher.engine
        if e is None or sid is None or (reply.session_id is not None and reply.session_id != sid):
            return
        stages = [m for m in reply.of("stage") if m.session_id == sid]
        if self._resuming is None or self._resuming[0] != sid:
            if not self._refetch:
                return  # a reply that came after the restart had gone on without it
            self._refetch = False
            # A live session that lost a stage marker on the bus: add the ones it has not seen.
            for m in stages:
                if sessionstate.StateReply.key(m) not in self._stage_keys:
                    log.warning("stage %s (sample %s) was lost on the bus; taken from the session's state",
                                m.stage, m.sample_index)
                    self._dispatch(m)
            return
        self._resuming = None
        mine = [m for m in reply.messages if m.session_id == sid and m.publisher == self.name]
        baselines = {m.channel: (m.baseline_uv, m.n_sweeps) for m in mine if m.type == "baseline"}
        states = {m.channel: (m.state, m.stimulus_index, m.stage, m.since_stimulus_index, m.since_sample_index,
                              m.since_stage) for m in mine if m.type == "amr_state"}
        known = reply.unknown is None
        mine_settings = ServiceSettings.digest(self.settings.model_dump(mode="json"))
        for m in mine:
            if m.type == "service_settings" and m.instance != self.pub.instance and m.settings_sha256 != mine_settings:
                log.warning("this session was analysed with other settings (%s) before the restart; its baselines "
                            "and course states are taken up as they were (verify names the change)",
                            m.settings_sha256[:12])
        unknown = e.resume([(m.sample_index, m.stage) for m in stages], baselines, states, known=known)
        self._stage_keys.update(sessionstate.StateReply.key(m) for m in stages)
        for m in stages:
            self._sent.seen(m)
        log.info("resumed session %s: %d stage marker(s), baselines %s, states %s%s", sid, len(stages),
                 {ch: uv for ch, (uv, _) in baselines.items()}, {ch: st[0] for ch, st in states.items()},
                 f"; unknown: {', '.join(unknown)}" if unknown else "")
        if unknown:
            why = reply.unknown or (f"the baseline stage is over but the session's state holds no baseline of "
                                    f"{', '.join(unknown)}")
            self.alarms.raise_(
                "state_unknown", STATE_ALARM, "high",
                f"analyzer restarted without the session's baseline: AMR course unknown ({why}); no baseline or "
                f"course is published for this session (channels {', '.join(unknown)})")
        self._release_held(sid)

    # -- output ------------------------------------------------------------------------------
    def _publish(self, outputs: list[Output], session_id: str | None = None, *, course_unknown: bool = False) -> None:
        sid = session_id or self.session_id
        e = self.dispatcher.engine
        course_unknown = course_unknown or (e is not None and e.course_unknown)
        for body in outputs:
            if isinstance(body, AmrCourseBody) and course_unknown:
                log.warning("session course not published: a restart lost a baseline, the course is unknown "
                            "(would have read %s)", body.course)
                continue
            if isinstance(body, AlarmBody):
                # Conditions (stimulation failure, recording quality, direct response) are raised and cleared
                # by the engine; bad-input alarms are pulses that expire after a quiet spell.
                if body.state == "cleared":
                    self.alarms.clear(body.alarm_key, body.message)
                else:
                    self.alarms.raise_(body.kind, body.alarm_key, body.priority, body.message,
                                       pulse=body.kind not in CONDITION_KINDS)
                continue
            self.pub.publish(BY_TYPE[body.TOPIC], sid, **body.fields())
            if isinstance(body, AmrMeasurementBody):
                MEASUREMENTS.inc()
                if body.rejected:
                    REJECTED_SWEEPS.labels(body.reject_reason).inc()
        e = self.dispatcher.engine
        if e is not None:
            for key, n in e.counters.items():
                if key.startswith("rejected_") or key == "gap_samples":
                    continue
                seen = self._counted.get(key, 0)
                if n > seen:
                    BAD_INPUT.labels(key).inc(n - seen)
                    self._counted[key] = n
