"""The predictor service: factors + baseline in, predictions and decisions out.

The model is checked once at start (SHA-256, onnx checker, tensor names and
shapes, golden vectors); a model that fails any check stops the service with
a `model_invalid` alarm rather than predicting with something unverified.

Restarts do not rewrite history: a predictor that meets a session it did not
see start (it restarted, or started late) holds the session's messages, asks
the acquirer for the session's state (`state`) and rebuilds its core from it
(`PredictorCore.rebuild`) before going on — its decisions continue the
session's numbering and chains. Without that state it says so (an
`indeterminate` decision) instead of a verdict built on a blank state. A
stage, factors, baseline or amr_state message lost on the bus (seq gap) is
fetched the same way. An analyzer that restarted without the session's
baseline says so in a `state_unknown` alarm, which the predictor turns into
"AMR course unknown".
"""

from __future__ import annotations

import logging
import time
from collections import deque

from prometheus_client import Counter, Histogram, Info

from ... import config, control, provenance, sessionstate
from ...bus import SeqEvent
from ...control import ControlClient
from ...proto.messages import (
    Alarm,
    Decision,
    Heartbeat,
    Message,
    Prediction,
    PredictionBody,
    ServiceSettings,
    SessionStart,
)
from ...service import Service
from .core import Output, PredictorCore, Refused
from .decision import DecisionSettings
from .model import LoadedModel, ModelInvalid

log = logging.getLogger(__name__)

MODEL = Info("amrwatch_model", "The persistence model in use")
PREDICTIONS = Counter("amrwatch_predictions_total", "Predictions published")
DECISIONS = Counter("amrwatch_decisions_total", "Decisions published", ["kind"])
INFERENCE = Histogram("amrwatch_inference_seconds", "Time to run the model once",
                      buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2))

EXIT_MODEL_INVALID = 3

#: Messages of a session held while its state is fetched.
HOLD_MESSAGES = 20_000
#: Seconds to wait for the session's state before going on without it (saying so).
STATE_TIMEOUT_S = control.STATE_TIMEOUT_S
#: Inputs whose loss on the bus (a seq gap) makes the predictor fetch the session's state.
RECOVERED_TYPES = ("stage", "factors", "baseline", "amr_state", "amr_course")


class Predictor(Service):
    name = "predictor"
    topics = ("session_start", "factors", "baseline", "stage", "amr_state", "amr_measurement", "amr_course",
              "heartbeat", "alarm")

    def __init__(self, model: LoadedModel, settings: DecisionSettings | None = None, *, control: str | None = None,
                 **kw) -> None:
        super().__init__(**kw)
        self.model = model
        self.settings = settings or DecisionSettings()
        self.core = self._core()
        self.control_endpoint = control or config.get("control")
        self.control: ControlClient | None = None
        self._resuming: float | None = None
        """When the session's state was asked for, while its messages are held."""
        self._held: deque[Message] = deque(maxlen=HOLD_MESSAGES)
        self._seen: set[tuple] = set()
        self._asked_at = float("-inf")
        self._refetch = False
        """An input lost on the bus made it ask for the session's state (a reply otherwise is stale)."""
        self._sent = sessionstate.SentCounts(("stage", "factors"))
        self.state = "idle"
        """How it holds the session: idle, live (saw it start), waiting (for its state), rebuilt, unknown."""
        MODEL.info({"sha256": model.sha256, "synthetic": str(model.synthetic).lower(),
                    "notice": model.notice or ""})

    def heartbeat_info(self) -> dict:
        return {"model_sha256": self.model.sha256, "synthetic": self.model.synthetic, "state": self.state}

    def setup(self) -> None:
        self.control = ControlClient(self.ctx, self.control_endpoint)
        self.add_socket(self.control.socket, self._on_control_reply)

    def _core(self) -> PredictorCore:
        return PredictorCore(self.model, self.settings, on_inference=INFERENCE.observe)

    def _new_session(self, session_id: str, *, joined: bool = False) -> None:
        self.session_id = session_id
        self.core = self._core()
        self._seen = set()
        self._held.clear()
        self._resuming = None
        self._refetch = False
        self.state = "live"
        if joined:
            # A session this predictor did not see start (a restart): rebuild it before saying anything.
            log.info("session %s is running already; asking %s for its state", session_id, self.control_endpoint)
            self._resuming = time.monotonic()
            self.state = "waiting"
            self._ask_state(force=True)
        # What this session's decisions are made with goes into its archive, for `amrwatch verify`.
        self.pub.publish(ServiceSettings, session_id,
                         **ServiceSettings.body_for(self.name, self.settings.to_wire(), provenance.platform()))

    def on_message(self, msg: Message) -> None:
        # A heartbeat's session_id is whatever its sender last saw (the bus's can lag a session behind):
        # letting it switch sessions would wipe the running session's factors and decisions.
        if isinstance(msg, Heartbeat):
            if self._sent.behind(msg) and self.session_id is not None and self._resuming is None:
                log.warning("the acquirer has sent more stage markers or factors than reached this predictor; "
                            "asking for them")
                self._refetch = True
                self._ask_state()
            return
        self._sent.seen(msg)
        if msg.session_id is None:
            return
        if isinstance(msg, Alarm) and msg.session_id != self.session_id:
            return  # like heartbeats, alarms never switch sessions
        if isinstance(msg, SessionStart):
            self._new_session(msg.session_id)
            return
        if msg.session_id != self.session_id:
            self._new_session(msg.session_id, joined=True)
        if self._resuming is not None:
            self._held.append(msg)
            return
        self._feed(msg)

    def _feed(self, msg: Message) -> None:
        if msg.type in RECOVERED_TYPES:
            key = sessionstate.StateReply.key(msg)
            if key in self._seen:
                return  # heard live and also given in the session's state
            self._seen.add(key)
        if isinstance(msg, Alarm):
            if msg.kind == "state_unknown" and msg.state == "raised" and msg.source == "analyzer":
                self._publish(self.core.on_amr_unknown(msg.message))
            return
        self._publish(self.core.on_message(msg))

    # -- the session's state (restart, lost inputs) ---------------------------------------------
    def _ask_state(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.control is None or self.session_id is None or (not force and now - self._asked_at < 0.5):
            return
        self._asked_at = now
        self.control.ask_state(self.session_id)

    def _on_seq(self, ev: SeqEvent) -> None:
        super()._on_seq(ev)
        if ev.kind == "gap" and ev.type in RECOVERED_TYPES and self._resuming is None:
            log.warning("%s lost on the bus: asking for the session's state", ev.describe())
            self._refetch = True
            self._ask_state()

    def tick(self, now: float) -> None:
        if self._resuming is not None and now - self._resuming > STATE_TIMEOUT_S:
            self._on_state(sessionstate.StateReply(
                self.session_id, unknown=f"the acquirer did not answer 'state' within {STATE_TIMEOUT_S:g} s"))

    def _on_control_reply(self) -> None:
        assert self.control is not None
        for parts in self.control.replies():
            if sessionstate.is_state_reply(parts):
                self._on_state(sessionstate.parse(parts))

    def _on_state(self, reply: sessionstate.StateReply) -> None:
        sid = self.session_id
        if sid is None or (reply.session_id is not None and reply.session_id != sid):
            return
        mine = [m for m in reply.messages if m.session_id == sid]
        if self._resuming is None:
            if not self._refetch:
                return  # a reply that came after it had gone on without the state
            self._refetch = False
            # A live session that lost an input on the bus: feed the ones it has not seen, in order.
            for m in mine:
                if m.type in RECOVERED_TYPES and sessionstate.StateReply.key(m) not in self._seen:
                    log.warning("%s seq %d from %s was lost on the bus; taken from the session's state",
                                m.type, m.seq, m.publisher)
                    self._feed(m)
            return
        self._resuming = None
        self.state = "unknown" if reply.unknown is not None else "rebuilt"
        if reply.unknown is not None:
            log.warning("session %s taken up without its state: %s", sid, reply.unknown)
            # Numbered from the Unix time in seconds: above any id the lost instance can have used.
            self._publish(self.core.state_unknown(reply.unknown, first_id=int(time.time())))
        else:
            n = self.core.rebuild(mine)
            for m in mine:
                self._sent.seen(m)
            self._seen.update(sessionstate.StateReply.key(m) for m in mine if m.type in RECOVERED_TYPES)
            active = {c: (d.decision_id, d.kind) for c, d in self.core.engine.active_by_chain().items()}
            log.info("rebuilt session %s from %d message(s) of its state: %d decision(s) adopted, in force %s", sid,
                     len(mine), n, active)
        held = list(self._held)
        self._held.clear()
        for m in held:
            self._feed(m)

    def _publish(self, outputs: list[Output]) -> None:
        for body in outputs:
            if isinstance(body, Refused):
                self._on_reject(body.reason, body.text, [])
            elif isinstance(body, PredictionBody):
                self.pub.publish(Prediction, self.session_id, **body.fields())
                PREDICTIONS.inc()
                log.info("prediction p=%.3f (%s)%s", body.probability, body.band,
                         f" — {body.notice}" if body.notice else "")
            else:
                self.pub.publish(Decision, self.session_id, **body.fields())
                DECISIONS.labels(body.kind).inc()
                log.info("decision %s [%s]: %s", body.kind, body.priority, body.rationale)


def load_or_explain(model_dir: str | None) -> LoadedModel:
    from pathlib import Path

    from .model import DEFAULT_CARD, DEFAULT_MODEL

    if model_dir:
        d = Path(model_dir)
        return LoadedModel.load(d / "model.onnx", d / "model_card.json")
    return LoadedModel.load(DEFAULT_MODEL, DEFAULT_CARD)


__all__ = ["Predictor", "ModelInvalid", "load_or_explain", "EXIT_MODEL_INVALID"]
