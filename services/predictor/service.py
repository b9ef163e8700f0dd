"""The predictor service: factors + baseline in, predictions and decisions out.

The model is checked once at start (SHA-256, onnx checker, tensor names and
shapes, golden vectors); a model that fails any check stops the service with
a `model_invalid` alarm rather than predicting with something unverified.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, Info

from ... import provenance
from ...proto.messages import Decision, Heartbeat, Message, Prediction, ServiceSettings, SessionStart
from ...service import Service
from .core import PredictorCore
from .decision import DecisionSettings
from .model import LoadedModel, ModelInvalid

log = logging.getLogger(__name__)

MODEL = Info("amrwatch_model", "The persistence model in use")
PREDICTIONS = Counter("amrwatch_predictions_total", "Predictions published")
DECISIONS = Counter("amrwatch_decisions_total", "Decisions published", ["kind"])
INFERENCE = Histogram("amrwatch_inference_seconds", "Time to run the model once",
                      buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2))

EXIT_MODEL_INVALID = 3


class Predictor(Service):
    name = "predictor"
    topics = ("session_start", "factors", "baseline", "stage", "amr_state", "amr_measurement", "amr_course",
              "heartbeat")

    def __init__(self, model: LoadedModel, settings: DecisionSettings | None = None, **kw) -> None:
        super().__init__(**kw)
        self.model = model
        self.settings = settings or DecisionSettings()
        self.core = self._core()
        MODEL.info({"sha256": model.sha256, "synthetic": str(model.synthetic).lower(),
                    "notice": model.notice or ""})

    def heartbeat_info(self) -> dict:
        return {"model_sha256": self.model.sha256, "synthetic": self.model.synthetic}

    def _core(self) -> PredictorCore:
        return PredictorCore(self.model, self.settings, on_inference=INFERENCE.observe)

    def _new_session(self, session_id: str) -> None:
        self.session_id = session_id
        self.core = self._core()
        # What this session's decisions are made with goes into its archive, for `amrwatch verify`.
        self.pub.publish(ServiceSettings, session_id,
                         **ServiceSettings.body_for(self.name, self.settings.to_wire(), provenance.platform()))

    def on_message(self, msg: Message) -> None:
        # A heartbeat's session_id is whatever its sender last saw (the bus's can lag a session behind):
        # letting it switch sessions would wipe the running session's factors and decisions.
        if msg.session_id is None or isinstance(msg, Heartbeat):
            return
        if isinstance(msg, SessionStart) or msg.session_id != self.session_id:
            self._new_session(msg.session_id)
        for kind, body in self.core.on_message(msg):
            if kind == "refused":
                self._on_reject(body["reason"], body["text"], [])
            elif kind == "prediction":
                self.pub.publish(Prediction, self.session_id, **body)
                PREDICTIONS.inc()
                log.info("prediction p=%.3f (%s)%s", body["probability"], body["band"],
                         f" — {body['notice']}" if body["notice"] else "")
            else:
                self.pub.publish(Decision, self.session_id, **body)
                DECISIONS.labels(body["kind"]).inc()
                log.info("decision %s [%s]: %s", body["kind"], body["priority"], body["rationale"])


def load_or_explain(model_dir: str | None) -> LoadedModel:
    from pathlib import Path

    from .model import DEFAULT_CARD, DEFAULT_MODEL

    if model_dir:
        d = Path(model_dir)
        return LoadedModel.load(d / "model.onnx", d / "model_card.json")
    return LoadedModel.load(DEFAULT_MODEL, DEFAULT_CARD)


__all__ = ["Predictor", "ModelInvalid", "load_or_explain", "EXIT_MODEL_INVALID"]
