"""The predictor service: factors + baseline in, predictions and decisions out.

The model is checked once at start (SHA-256, onnx checker, tensor names and
shapes, golden vectors); a model that fails any check stops the service with
a `model_invalid` alarm rather than predicting with something unverified.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram, Info

from ...proto.messages import (
    AmrCourse,
    AmrMeasurement,
    AmrState,
    Baseline,
    Decision,
    Factors,
    Message,
    Prediction,
    SessionStart,
    StageMarker,
)
from ...service import Service
from .decision import DecisionEngine, DecisionSettings
from .features import FactorCollector, FactorError
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
        self.factors = FactorCollector()
        self.engine = DecisionEngine(self.settings)
        MODEL.info({"sha256": model.sha256, "synthetic": str(model.synthetic).lower(),
                    "notice": model.notice or ""})

    def heartbeat_info(self) -> dict:
        return {"model_sha256": self.model.sha256, "synthetic": self.model.synthetic}

    def _new_session(self, session_id: str) -> None:
        self.session_id = session_id
        self.factors = FactorCollector()
        self.engine = DecisionEngine(self.settings)

    def on_message(self, msg: Message) -> None:
        if msg.session_id is None:
            return
        if isinstance(msg, SessionStart) or msg.session_id != self.session_id:
            self._new_session(msg.session_id)
        decisions: list[dict] = []
        if isinstance(msg, Factors):
            decisions += self._update_factors(msg.factors.given(), f"factors from the {msg.source}")
        elif isinstance(msg, Baseline):
            decisions += self._update_factors({"amr_amplitude_uv": msg.amr_amplitude_uv},
                                               "the analyzer's baseline amplitude")
        elif isinstance(msg, StageMarker):
            decisions += self.engine.on_stage(msg.stage)
        elif isinstance(msg, AmrState):
            decisions += self.engine.on_amr_state(msg.channel, msg.state, msg.pct_of_baseline)
        elif isinstance(msg, AmrMeasurement):
            decisions += self.engine.on_measurement(msg.stimulus_index, msg.channel, msg.rejected, msg.present)
        elif isinstance(msg, AmrCourse):
            decisions += self.engine.on_course(msg.course)
        for d in decisions:
            self.pub.publish(Decision, self.session_id, **d)
            DECISIONS.labels(d["kind"]).inc()
            log.info("decision %s [%s]: %s", d["kind"], d["priority"], d["rationale"])

    def _update_factors(self, values: dict, what: str) -> list[dict]:
        try:
            changed = self.factors.update(values)
        except FactorError as err:
            self._on_reject("factor_out_of_range", f"{what} refused: {err}", [])
            return []
        if not changed:
            return []
        complete = self.factors.complete()
        if complete is None:
            return self.engine.on_prediction_unavailable(self.factors.missing())
        t = time.perf_counter()
        body = self.model.prediction_body(complete)
        INFERENCE.observe(time.perf_counter() - t)
        self.pub.publish(Prediction, self.session_id, **body)
        PREDICTIONS.inc()
        log.info("prediction p=%.3f (%s)%s", body["probability"], body["band"],
                 f" — {body['notice']}" if body["notice"] else "")
        return self.engine.on_prediction(body["probability"], body["band"], body["cutoff_low"], body["cutoff_high"])


def load_or_explain(model_dir: str | None) -> LoadedModel:
    from pathlib import Path

    from .model import DEFAULT_CARD, DEFAULT_MODEL

    if model_dir:
        d = Path(model_dir)
        return LoadedModel.load(d / "model.onnx", d / "model_card.json")
    return LoadedModel.load(DEFAULT_MODEL, DEFAULT_CARD)


__all__ = ["Predictor", "ModelInvalid", "load_or_explain", "EXIT_MODEL_INVALID"]
