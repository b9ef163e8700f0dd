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


#: Why a baseline without a detectable AMR is no input for the model.
NOT_AN_AMPLITUDE = ("the baseline showed no detectable AMR (0 µV), which is not an amplitude — the model was "
                    "fitted on patients whose preoperative AMR was measured")


class PredictorCore:
    """One session's factors, model and decision engine.

    Inputs the model must not see: a preoperative amplitude of 0 µV (no AMR is not an amplitude; the
    analyzer's course `never_detected` says the same) — the predictor then does not predict and says
    why. Before `termination_acceptable` can be advised the engine needs the prediction recomputed
    with the intraoperative factors of an adequate decompression (`counterfactual_displacement`,
    `counterfactual_retraction_mm`): computed here, beside the prediction, so the engine stays pure.
    """

    def __init__(self, model: LoadedModel, settings: DecisionSettings | None = None, *,
                 on_inference: Callable[[float], None] | None = None) -> None:
        self.model = model
        self.settings = settings or DecisionSettings()
        self.factors = FactorCollector()
        self.engine = DecisionEngine(self.settings, synthetic=model.synthetic, notice=model.notice)
        self.on_inference = on_inference
        #: Set while the amplitude is known not to be one (0 µV baseline, course never_detected).
        self._no_amplitude: str | None = None

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
            return self._decisions(self.engine.on_measurement(
                msg.stimulus_index, msg.channel, msg.rejected, msg.present, msg.stage,
                assessment=msg.assessment, pct_of_baseline=msg.pct_of_baseline))
        if isinstance(msg, AmrCourse):
            out: list[Output] = []
            if msg.course == "never_detected" and "amr_amplitude_uv" in self.factors.values:
                self.factors.discard("amr_amplitude_uv")
                self._no_amplitude = ("the analyzer reports that no AMR was ever detected, so there is no "
                                      "preoperative amplitude")
                out += self._decisions(self.engine.on_prediction_unavailable(self.factors.missing(),
                                                                             self._no_amplitude))
            return out + self._decisions(self.engine.on_course(msg.course))
        return []

    @staticmethod
    def _decisions(bodies: list[dict]) -> list[Output]:
        return [("decision", d) for d in bodies]

    def _update_factors(self, values: dict, what: str) -> list[Output]:
        out: list[Output] = []
        amp = values.get("amr_amplitude_uv")
        if isinstance(amp, (int, float)) and not isinstance(amp, bool) and amp == 0:
            values = {k: v for k, v in values.items() if k != "amr_amplitude_uv"}
            if "amr_amplitude_uv" in self.factors.values:
                # e.g. a restarted analyzer whose new baseline has no AMR: keep the measured one, say so
                kept = self.factors.values["amr_amplitude_uv"]
                out.append(("refused", {
                    "reason": "baseline_not_an_amplitude",
                    "text": f"{what} refused: field amr_amplitude_uv must be in (0, 5000] µV (a measured AMR); "
                            f"got 0 — keeping the earlier {kept:g} µV",
                }))
            elif self._no_amplitude is None:
                self._no_amplitude = NOT_AN_AMPLITUDE
                out += self._decisions(self.engine.on_prediction_unavailable(self.factors.missing(),
                                                                             NOT_AN_AMPLITUDE))
            if not values:
                return out
        try:
            changed = self.factors.update(values)
        except FactorError as err:
            return out + [("refused", {"reason": "factor_out_of_range", "text": f"{what} refused: {err}"})]
        if "amr_amplitude_uv" in values:
            self._no_amplitude = None
        if not changed:
            return out
        complete = self.factors.complete()
        if complete is None:
            return out + self._decisions(self.engine.on_prediction_unavailable(self.factors.missing(),
                                                                               self._no_amplitude))
        t = time.perf_counter()
        body = self.model.prediction_body(complete)
        if self.on_inference is not None:
            self.on_inference(time.perf_counter() - t)
        out.append(("prediction", body))
        out += self._decisions(self.engine.on_prediction(
            body["probability"], body["band"], body["cutoff_low"], body["cutoff_high"],
            extrapolated=self.model.extrapolated(complete), adequate=self._adequate(complete)))
        return out

    def _adequate(self, factors: dict) -> dict[str, Any] | None:
        """The prediction with the intraoperative factors of an adequate decompression: displacement
        raised to `counterfactual_displacement`, retraction lowered to `counterfactual_retraction_mm`
        (never the other way: the counterfactual only removes support for stopping). None when the
        entered values already are those."""
        s = self.settings
        cf = dict(factors)
        changes = []
        if factors["displacement"] < s.counterfactual_displacement:
            cf["displacement"] = s.counterfactual_displacement
            changes.append(f"displacement {_GRADES[cf['displacement']]} ({cf['displacement']}) instead of "
                           f"{_GRADES[factors['displacement']]} ({factors['displacement']})")
        if factors["retraction_mm"] > s.counterfactual_retraction_mm:
            cf["retraction_mm"] = float(s.counterfactual_retraction_mm)
            changes.append(f"retraction {cf['retraction_mm']:g} mm instead of {factors['retraction_mm']:g} mm")
        if not changes:
            return None
        p, band = self.model.predict(cf)
        return {"probability": p, "band": band, "inputs": " and ".join(changes)}


_GRADES = {1: "slight", 2: "moderate", 3: "marked"}
