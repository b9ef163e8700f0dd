"""The analyzer on the bus: frames, stimuli and stage markers in; measurements,
course states, baselines, the session's course and alarms out.

All the analysis is `AnalyzerEngine` (through the same `MessageDispatcher` the
offline tools use); this class only receives, publishes and counts. A late
joiner (started after the session) asks the acquirer's control socket for the
running session's `session_start` and analyses from the frames it holds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import zmq
from prometheus_client import Counter

from ... import config, metrics, provenance, security
from ...bus import harden
from ...proto.codec import DecodeError, decode
from ...proto.control import ControlReply
from ...proto.messages import BY_TYPE, Heartbeat, Message, ServiceSettings, SessionStart
from ...service import Service
from .engine import CONDITION_KINDS, Output
from .offline import MessageDispatcher
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


class Analyzer(Service):
    name = "analyzer"
    topics = ("session_start", "emg_frame", "stimulus", "stage", "session_end", "heartbeat")

    def __init__(self, *, settings: AnalyzerSettings | None = None, control: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings or AnalyzerSettings()
        self.dispatcher = MessageDispatcher(self.settings, source=self.name)
        self.control_endpoint = control or config.get("control")
        self.dealer: zmq.Socket | None = None
        self._held: deque[Message] = deque(maxlen=HOLD_MESSAGES)
        self._asked_at = float("-inf")
        self._counted: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------
    def setup(self) -> None:
        self.dealer = self.ctx.socket(zmq.DEALER)
        harden(self.dealer)
        security.client(self.dealer)
        self.dealer.connect(self.control_endpoint)
        self.add_socket(self.dealer, self._on_control_reply)
        log.info("analyzer ready (settings: %s)", self.settings.model_dump_json())

    def teardown(self) -> None:
        if self.dispatcher.engine is not None:
            self._publish(self.dispatcher.close())

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
            return
        if isinstance(msg, SessionStart):
            self._start(msg)
            return
        if msg.session_id != self.dispatcher.session_id:
            self._held.append(msg)
            self._ask_session()
            return
        self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        t0 = time.perf_counter()
        outputs = self.dispatcher.dispatch(msg)
        metrics.LOOP_SECONDS.labels(f"analyzer_{msg.type}").observe(time.perf_counter() - t0)
        self._publish(outputs, msg.session_id)
        if msg.type == "session_end":
            log.info("session %s ended", msg.session_id)
            self.session_id = None
            self._counted = {}

    def _start(self, msg: SessionStart) -> None:
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
        log.info("session %s: %d channels at %g Hz", msg.session_id, len(msg.montage.channels),
                 msg.montage.sampling_rate_hz)
        held = [m for m in self._held if m.session_id == msg.session_id]
        self._held.clear()
        for m in held:
            self._dispatch(m)

    # -- late join ----------------------------------------------------------------------
    def _ask_session(self) -> None:
        now = time.monotonic()
        if self.dealer is None or now - self._asked_at < ASK_EVERY_S:
            return
        self._asked_at = now
        log.info("signal from a session this analyzer has not seen start; asking %s", self.control_endpoint)
        self.dealer.send_multipart([b"", b'{"op":"session"}'])

    def _on_control_reply(self) -> None:
        assert self.dealer is not None
        while True:
            try:
                parts = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) < 2 or parts[0] != b"":
                continue
            try:
                reply = ControlReply.model_validate_json(parts[1])
            except ValueError:
                log.warning("control reply is not a ControlReply; ignored")
                continue
            if not reply.ok or len(parts) < 5:
                log.info("acquirer has no session to give (%s)", reply.error)
                continue
            try:
                msg = decode(parts[2:5])
            except DecodeError as err:
                log.warning("control reply carries an invalid session_start: %s", err)
                continue
            if isinstance(msg, SessionStart):
                self._start(msg)

    # -- output ------------------------------------------------------------------------------
    def _publish(self, outputs: list[Output], session_id: str | None = None) -> None:
        sid = session_id or self.session_id
        for kind, fields in outputs:
            if kind == "alarm":
                # Conditions (stimulation failure, recording quality, direct response) are raised and cleared
                # by the engine; bad-input alarms are pulses that expire after a quiet spell.
                if fields["state"] == "cleared":
                    self.alarms.clear(fields["alarm_key"], fields["message"])
                else:
                    self.alarms.raise_(fields["kind"], fields["alarm_key"], fields["priority"], fields["message"],
                                       pulse=fields["kind"] not in CONDITION_KINDS)
                continue
            self.pub.publish(BY_TYPE[kind], sid, **fields)
            if kind == "amr_measurement":
                MEASUREMENTS.inc()
                if fields["rejected"]:
                    REJECTED_SWEEPS.labels(fields["reject_reason"]).inc()
        e = self.dispatcher.engine
        if e is not None:
            for key, n in e.counters.items():
                if key.startswith("rejected_") or key == "gap_samples":
                    continue
                seen = self._counted.get(key, 0)
                if n > seen:
                    BAD_INPUT.labels(key).inc(n - seen)
                    self._counted[key] = n
