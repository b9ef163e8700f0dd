"""The predictor without sockets: a session's messages in, prediction and decision bodies out.

The live service and `amrwatch verify` drive this one class, so an archived
session fed through it again gives the predictions and decisions it gave
live — given the messages in the order the bus delivered them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...proto.messages import AmrCourse, AmrMeasurement, AmrState, Baseline, Factors, Message, StageMarker
from .decision import DecisionEngine, DecisionSettings
from .features import FactorCollector, FactorError
from .model import LoadedModel

#: ("prediction", body) | ("decision", body) | ("refused", {"reason": ..., "text": ...})
Output = tuple[str, dict[str, Any]]

#: The message types the predictor reacts to (besides session_start, which starts a new core).
INPUT_TYPES = ("factors", "baseline", "stage", "amr_state", "amr_measurement", "amr_course")


class PredictorCore:
    """One session's factors, model and decision engine."""

    def __init__(self, model: LoadedModel, settings: DecisionSettings | None = None, *,
                 on_inference: Callable[[float], None] | None = None) -> None:
        self.model = model
        self.settings = settings or DecisionSettings()
        self.factors = FactorCollector()
        self.engine = DecisionEngine(self.settings, synthetic=model.synthetic, notice=model.notice)
        self.on_inference = on_inference

    def on_message(self, msg: Message) -> list[Output]:
        if isinstance(msg, Factors):
            return self._update_factors(msg.factors.given(), f"factors from the {msg.source}")
        if isinstance(msg, Baseline):
            return self._update_factors({"amr_amplitude_uv": msg.amr_amplitude_uv},
                                        "the analyzer's baseline amplitude")
        if isinstance(msg, StageMarker):
            return self._decisions(self.engine.on_stage(msg.stage))
        if isinstance(msg, AmrState):
            return self._decisions(self.engine.on_amr_state(msg.channel, msg.state, msg.pct_of_baseline))
        if isinstance(msg, AmrMeasurement):
            return self._decisions(self.engine.on_measurement(msg.stimulus_index, msg.channel, msg.rejected,
                                                              msg.present, msg.stage))
        if isinstance(msg, AmrCourse):
            return self._decisions(self.engine.on_course(msg.course))
        return []

    @staticmethod
    def _decisions(bodies: list[dict]) -> list[Output]:
        return [("decision", d) for d in bodies]

    def _update_factors(self, values: dict, what: str) -> list[Output]:
        try:
            changed = self.factors.update(values)
        except FactorError as err:
            return [("refused", {"reason": "factor_out_of_range", "text": f"{what} refused: {err}"})]
        if not changed:
            return []
        complete = self.factors.complete()
        if complete is None:
            return self._decisions(self.engine.on_prediction_unavailable(self.factors.missing()))
        t = time.perf_counter()
        body = self.model.prediction_body(complete)
        if self.on_inference is not None:
            self.on_inference(time.perf_counter() - t)
        out: list[Output] = [("prediction", body)]
        out += self._decisions(
            self.engine.on_prediction(body["probability"], body["band"], body["cutoff_low"], body["cutoff_high"]))
        return out
