"""The predictor without sockets: a session's messages in, typed prediction and decision bodies out.

The live service and `amrwatch verify` drive this one class, so an archived
session fed through it again gives the predictions and decisions it gave
live — given the messages in the order the bus delivered them.

A predictor restarted mid-session (or started late) rebuilds its core from the
acquirer's snapshot of the session (`rebuild`): the inputs are fed again
quietly and the decisions the session already published are adopted, so that
it numbers on after the highest id and supersedes the decision in force in
each chain instead of starting new chains or saying the same thing again.
What the snapshot cannot hold — the measurements — starts from zero: an
evaluation window that had not completed before the restart is counted again
in full (the verdict can come later, never sooner).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ...proto.factors import BY_NAME as FACTOR_BY_NAME
from ...proto.messages import (
    AmrCourse,
    AmrMeasurement,
    AmrState,
    Baseline,
    Decision,
    DecisionBody,
    Factors,
    Message,
    PredictionBody,
    StageMarker,
    unchecked,
)
from .decision import DecisionEngine, DecisionSettings
from .features import FactorCollector, FactorError
from .model import LoadedModel


@dataclass(frozen=True)
class Refused:
    """An input the core would not take (the service reports it as a rejected input; nothing is published)."""

    reason: Literal["baseline_not_an_amplitude", "factor_out_of_range"]
    text: str


#: What the core returns: proto bodies to publish (the service stamps the envelope), or a refusal.
Output: TypeAlias = PredictionBody | DecisionBody | Refused

_prediction = unchecked(PredictionBody)
_decision = unchecked(DecisionBody)

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
    def _decisions(bodies: list[DecisionBody]) -> list[Output]:
        return list(bodies)

    def _update_factors(self, values: dict, what: str) -> list[Output]:
        out: list[Output] = []
        amp = values.get("amr_amplitude_uv")
        if isinstance(amp, (int, float)) and not isinstance(amp, bool) and amp == 0:
            values = {k: v for k, v in values.items() if k != "amr_amplitude_uv"}
            if "amr_amplitude_uv" in self.factors.values:
                # e.g. a restarted analyzer whose new baseline has no AMR: keep the measured one, say so
                kept = self.factors.values["amr_amplitude_uv"]
                top = FACTOR_BY_NAME["amr_amplitude_uv"]
                out.append(Refused(
                    "baseline_not_an_amplitude",
                    f"{what} refused: field amr_amplitude_uv must be in (0, {top.max:g}] {top.unit} (a measured AMR); "
                    f"got 0 — keeping the earlier {kept:g} µV",
                ))
            elif self._no_amplitude is None:
                self._no_amplitude = NOT_AN_AMPLITUDE
                out += self._decisions(self.engine.on_prediction_unavailable(self.factors.missing(),
                                                                             NOT_AN_AMPLITUDE))
            if not values:
                return out
        try:
            changed = self.factors.update(values)
        except FactorError as err:
            return out + [Refused("factor_out_of_range", f"{what} refused: {err}")]
        if "amr_amplitude_uv" in values:
            self._no_amplitude = None
        if not changed:
            return out
        complete = self.factors.complete()
        if complete is None:
            return out + self._decisions(self.engine.on_prediction_unavailable(self.factors.missing(),
                                                                               self._no_amplitude))
        t = time.perf_counter()
        body = _prediction(**self.model.prediction_body(complete))
        if self.on_inference is not None:
            self.on_inference(time.perf_counter() - t)
        out.append(body)
        out += self._decisions(self.engine.on_prediction(
            body.probability, body.band, body.cutoff_low, body.cutoff_high,
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

    # ------------------------------------------------------------------ restart

    def rebuild(self, messages: list[Message]) -> int:
        """Take up the session from its snapshot (the acquirer's `state`, in the order it was published):
        inputs fed again with their outputs discarded, published decisions adopted into their chains.
        Returns the number of decisions adopted. Call on a fresh core, before any live message."""
        adopted: dict[int, DecisionBody] = {}
        chains: dict[int, str] = {}
        last: dict[str, DecisionBody] = {}
        detected = False
        body_fields = Decision.body_fields()
        for m in messages:
            if isinstance(m, Decision):
                body = _decision(**{k: v for k, v in m.model_dump(mode="json").items() if k in body_fields})
                chain = chains.get(m.supersedes) if m.supersedes is not None else None
                chain = chain or chain_of(m.kind, m.evidence)
                chains[m.decision_id] = chain
                adopted[m.decision_id] = last[chain] = body
                self.engine.adopt(chain, body)
            elif m.type in INPUT_TYPES:
                detected = detected or isinstance(m, AmrState)
                self.on_message(m)  # quietly: this session has already heard what it says
        # Whatever the replay said that the session never published is dropped (it lacked the measurements).
        for chain, d in self.engine.active_by_chain().items():
            if d is not last.get(chain):
                if chain in last:
                    self.engine.adopt(chain, last[chain])
                else:
                    self.engine.forget(chain)
        self.engine.resume_numbering(max(adopted, default=0) + 1, detected=detected)
        return len(adopted)

    def on_amr_unknown(self, reason: str) -> list[Output]:
        """The analyzer says it restarted without the session's baseline: the AMR course is unknown."""
        return self._decisions(self.engine.on_amr_unknown(reason))

    def state_unknown(self, reason: str, first_id: int) -> list[Output]:
        """This predictor took the session up without its state: say so rather than give a verdict.
        Decisions are numbered from `first_id`, which the lost instance cannot have used."""
        # `detected`: what it missed may well have shown the AMR; "never detected" is not its to say now.
        self.engine.resume_numbering(first_id, detected=True)
        return self._decisions(self.engine.on_amr_unknown(
            f"the predictor restarted without the session's state: {reason}"))


_GRADES = {1: "slight", 2: "moderate", 3: "marked"}


def chain_of(kind: str, evidence: dict[str, Any]) -> str:
    """The chain a published decision that supersedes none belongs to: the monitoring chain always begins
    with `amr_not_monitorable`, the prognosis chain with `prognosis`; every other one is about the course."""
    if kind == "prognosis":
        return DecisionEngine.PROGNOSIS
    if kind == "amr_not_monitorable" or evidence.get("reason") in (
            "never_detected", "rejected_sweeps", "monitoring_recovered", "detected_late"):
        return DecisionEngine.MONITORING
    return DecisionEngine.COURSE
