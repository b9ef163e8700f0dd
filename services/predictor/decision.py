"""What the AMR and the prediction mean for the surgeon, as a pure state machine.

The rules are the study's proposal (docs/domain.md), with the safeguards of issue 13:

- while the surgeon decompresses, only provisional status (``evaluating``, info) on stage and AMR
  state changes; the verdict is given over an evaluation window of ``evaluation_sweeps`` assessable
  sweeps recorded from the ``decompression_complete`` mark (from ``closure`` if it never comes;
  closure or end cut it short, and the rationale names the window really used):

  - AMR gone (or, with ``reduction_criterion_pct``, reduced enough) → ``decompression_confirmed``
  - AMR persists, predicted low                 → ``explore_further`` (a missed vessel?)
  - AMR persists, predicted high                → ``termination_acceptable``, but only if the prediction
    stays high with the intraoperative factors of an adequate decompression (else
    ``check_decompression``) and the AMR never came back after disappearing in this session
  - intermediate, unknown, or resting on factors outside the training range → ``indeterminate``

- a reappearance after a post-decompression disappearance → ``amr_reappeared`` (high);
- ``early_disappearance`` (gone before decompression: it can no longer confirm it),
  ``amr_not_monitorable`` (never detected, or too many rejected sweeps) and a ``prognosis`` at ``end``.

Decisions form chains, one per question (what the AMR says about the
decompression; whether it can be monitored; the prognosis). When an input
changes the answer — the AMR reappears, a factor is entered, the surgeon
decompresses again — the new decision names the one it replaces in
``supersedes``; nothing is withdrawn silently. The engine has no clock and no
sockets: it is fed events and returns ``DecisionBody`` objects (proto's body of a
``decision`` message, typed), so live service, replay, verify and tests run the same code.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from statistics import median
from dataclasses import dataclass, field, fields
from typing import Any

from amrwatch.proto.messages import AMR_STATES as STATES
from amrwatch.proto.messages import ASSESSMENTS, BANDS, COUNTED_ASSESSMENTS, COURSES, STAGE_ORDER, DecisionBody, unchecked

from .features import FEATURE_NAMES

__all__ = ["ASSESSMENTS", "BANDS", "COURSES", "STATES", "DecisionEngine", "DecisionSettings", "Literature"]

_decision = unchecked(DecisionBody)
_DECOMPRESSION = STAGE_ORDER.index("decompression")
_CLOSURE = STAGE_ORDER.index("closure")


@dataclass(frozen=True)
class Literature:
    """Published figures quoted in the rationales (docs/domain.md, literature)."""

    relief_months: int = 3
    reoperation_after_months: tuple[int, int] = (6, 12)
    #: Meta-analysis: probability of persistent spasm, AMR persisted vs resolved (%).
    persistent_spasm_pct: tuple[tuple[str, int, int], ...] = (
        ("at discharge", 48, 7),
        ("at 3 months", 41, 4),
        ("at 1 year", 24, 4),
    )
    follow_up: str = "1 week, 3 months, 6 months and 1 year"


@dataclass(frozen=True)
class DecisionSettings:
    evaluation_sweeps: int = 20
    """Assessable sweeps (assessment present/absent) recorded at or after the `decompression_complete`
    mark (or `closure`) before the AMR is judged (default 20)."""
    rejection_window: int = 20
    """Stimuli over which the share of unusable sweeps is judged."""
    rejection_fraction: float = 0.5
    """At or above this share of unusable sweeps the AMR is not monitorable."""
    recovery_fraction: float = 0.25
    """Monitoring counts as recovered once the share falls to this (hysteresis)."""
    min_baseline_sweeps: int = 10
    """Good sweeps needed before 'never detected' can be said."""
    min_present_sweeps: int = 3
    """Present measurements that count as 'detected' even before an amr_state says so."""
    reduction_criterion_pct: float | None = None
    """None (default): only a complete disappearance confirms the decompression. A number: a reduction
    from baseline of at least this many percent over the evaluation window (median final/baseline
    ratio of the channel that kept most) also confirms it (Pan et al. 2025: 86.5 % for mentalis).
    Allowed 80–100: a smaller reduction would call a persisting AMR resolved."""
    counterfactual_displacement: int = 3
    """Before `termination_acceptable`, the prediction is recomputed with vessel displacement raised to
    at least this grade (3 marked = an adequate decompression); unless that prediction is still in the
    high band the advice is `check_decompression`. Allowed 2–3."""
    counterfactual_retraction_mm: float = 9.0
    """…and with the cerebellar retraction depth lowered to at most this (mm; the training cohort's
    median), since deeper retraction also raises the predicted persistence. Allowed 3–9 mm."""
    literature: Literature = field(default_factory=Literature)

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("evaluation_sweeps", 1, 10_000),
            ("rejection_window", 2, 10_000),
            ("min_baseline_sweeps", 1, 10_000),
            ("min_present_sweeps", 1, 10_000),
        ):
            v = getattr(self, name)
            if not (isinstance(v, int) and lo <= v <= hi):
                raise ValueError(f"{name} must be a whole number in [{lo}, {hi}] sweeps; got {v!r}")
        for name in ("rejection_fraction", "recovery_fraction"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {v!r}")
        if self.recovery_fraction >= self.rejection_fraction:
            raise ValueError(
                f"recovery_fraction must be below rejection_fraction ({self.rejection_fraction}); got {self.recovery_fraction}"
            )
        r = self.reduction_criterion_pct
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 80.0 <= r <= 100.0):
            raise ValueError(
                "reduction_criterion_pct must be null (complete disappearance only) or a reduction in "
                f"[80, 100] % of baseline (lower would call a persisting AMR resolved); got {r!r}"
            )
        d = self.counterfactual_displacement
        if isinstance(d, bool) or not isinstance(d, int) or not 2 <= d <= 3:
            raise ValueError(
                "counterfactual_displacement must be a whole grade in [2, 3] (2 moderate, 3 marked; a slight "
                f"displacement would let a small decompression argue for stopping); got {d!r}"
            )
        m = self.counterfactual_retraction_mm
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 3.0 <= m <= 9.0:
            raise ValueError(
                "counterfactual_retraction_mm must be in [3, 9] mm (deeper would let a deep retraction argue "
                f"for stopping); got {m!r}"
            )

    def to_wire(self) -> dict[str, Any]:
        """The settings as JSON values for `service_settings` (the literature figures are code, not settings)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "literature"}

    @classmethod
    def from_wire(cls, values: dict[str, Any]) -> DecisionSettings:
        known = {f.name for f in fields(cls)} - {"literature"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown decision setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _p(x: float) -> str:
    return "< 0.01" if x < 0.01 else ("> 0.99" if x > 0.99 else f"{x:.2f}")


def _names(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _check(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


class DecisionEngine:
    """Feed it the session's events in order; each method returns the new decisions (often none)."""

    COURSE, MONITORING, PROGNOSIS = "course", "monitoring", "prognosis"

    def __init__(self, settings: DecisionSettings | None = None, *, synthetic: bool = True,
                 notice: str | None = "synthetic — not for clinical use") -> None:
        self.settings = settings or DecisionSettings()
        #: Every decision carries whether the model behind it is synthetic (stated even before a prediction).
        self.synthetic = synthetic
        self.notice = notice
        self.stage: str | None = None
        self._channels: dict[str, tuple[str, float | None]] = {}
        self._present_sweeps = 0
        self._ever_present = False
        self._gone_before_decompression = False
        #: The AMR's current disappearance happened at or after the decompression mark.
        self._gone_after_decompression = False
        #: The AMR came back after a disappearance after decompression: for the rest of the session
        #: `termination_acceptable` is never given.
        self._reappeared = False
        #: `amr_reappeared` is in force and no new evaluation window has opened since.
        self._reappeared_standing = False
        #: The current window opened after a reappearance (a confirmation then says so).
        self._after_reappearance = False
        self._prediction: dict[str, Any] | None = None
        self._extrapolated: dict[str, str] = {}
        self._adequate: dict[str, Any] | None = None
        self._missing: list[str] = list(FEATURE_NAMES)
        self._unavailable_reason: str | None = None
        self._decompressing = False
        self._window_mark: str | None = None
        self._window_open = False
        self._window_end: str | None = None
        self._evaluated = False
        self._window_n = 0
        self._window_pcts: dict[str, list[float]] = {}
        self._pending: dict[str, Any] | None = None
        #: Measurements carry the stage their sweep was recorded in (so a marker can wait for them).
        self._dated = False
        #: `closure` has been marked; the window closes at the first sweep recorded in closure.
        self._cut_pending = False
        self._total_good = 0
        self._recent: OrderedDict[int, bool] = OrderedDict()
        self._rejecting = False
        self._never_detected_said = False
        self._ended = False
        self._course: str | None = None
        self._next_id = 1
        self._active: dict[str, DecisionBody] = {}
        self._signature: dict[str, tuple] = {}

    # ------------------------------------------------------------------ inputs

    def on_stage(self, stage: str) -> list[DecisionBody]:
        """A stage marker. `decompression` (re)starts the decompression and closes any window;
        `decompression_complete` opens the evaluation window; `closure` opens it if it never opened,
        or cuts an open one short; `end` cuts it short and gives the prognosis."""
        _check("stage", stage, STAGE_ORDER)
        if self._ended:
            return []
        self.stage = stage
        out: list[DecisionBody] = []
        if stage == "decompression":
            self._decompressing = True
            self._window_open, self._evaluated, self._window_mark, self._pending = False, False, None, None
            self._cut_pending = False
        elif stage == "decompression_complete":
            self._decompressing = True
            self._open_window(stage)
        elif stage == "closure" and self._window_open and not self._evaluated and self._dated:
            # Sweeps recorded before closure are still on their way (the analyzer lags the markers): the
            # window is cut short by the first sweep recorded in closure, not by the marker's arrival.
            self._cut_pending = True
        elif stage in ("closure", "end"):
            if self._window_open and not self._evaluated:
                out += self._count_pending()
                if not self._evaluated:
                    out += self._close_window("closure" if self._cut_pending else stage)
            elif stage == "closure" and not self._evaluated:
                self._decompressing = True
                self._open_window(stage)  # decompression_complete never came: the window starts here
            elif stage == "end" and self._decompressing and not self._evaluated:
                self._window_mark, self._window_n = None, 0
                out += self._close_window(stage)
        if not self._dated:
            # Undated measurements: arrival order is all there is. Dated ones are judged by the first sweep
            # recorded after baseline (on_measurement), not by the marker, which can overtake the analyzer.
            out += self._check_never_detected(stage)
        if stage == "end":
            self._ended = True
            out += self._prognosis()
        elif not self._cut_pending:
            out += self._status("stage_changed")
        return out

    def on_amr_state(self, channel: str, state: str, pct_of_baseline: float | None = None) -> list[DecisionBody]:
        _check("state", state, STATES)
        if pct_of_baseline is not None and not pct_of_baseline >= 0:
            raise ValueError(f"pct_of_baseline must be >= 0 (%); got {pct_of_baseline!r}")
        if self._ended:
            return []
        was_gone, was_known = self._gone(), self._amr_state() is not None
        self._channels[channel] = (state, pct_of_baseline)
        out: list[DecisionBody] = []
        if state != "disappeared" and not self._ever_present:
            self._ever_present = True
            out += self._detected_after_all()
        gone = self._gone()
        if gone and not was_gone and self._before_decompression():
            self._gone_before_decompression = True
            out.append(self._emit(
                self.COURSE, "early_disappearance", "medium",
                f"The AMR disappeared during {self._stage_text()}, before decompression, so it can no longer "
                "confirm the decompression — judge it by direct inspection of the nerve.",
                trigger="amr_disappeared",
            ))
        elif gone and not was_gone:
            self._gone_after_decompression = True
            if self._evaluated:
                # After a verdict on a persisting AMR: this disappearance was not in the window judged, so it
                # is confirmed only over a new one (a new decompression_complete mark, or closure).
                self._window_open, self._evaluated, self._pending = False, False, None
            out += self._status("amr_disappeared")
        elif not gone and was_gone and was_known:
            early, self._gone_before_decompression = self._gone_before_decompression, False
            after, self._gone_after_decompression = self._gone_after_decompression, False
            if after:
                out += self._say_reappeared()
            elif early and not self._evaluated:
                if self._before_decompression():
                    text = ("The AMR has reappeared before decompression, so it can again confirm the "
                            "decompression; waiting for decompression.")
                else:
                    text = (f"The AMR has reappeared during {self._stage_text()}; it will be judged over "
                            f"{self.settings.evaluation_sweeps} assessable sweeps after decompression_complete.")
                out.append(self._emit(self.COURSE, "indeterminate", "low", text, trigger="amr_reappeared"))
            else:
                out += self._reevaluate("amr_reappeared")
        elif self._evaluated:
            out += self._reevaluate("amr_state_changed")
        else:
            out += self._status("amr_state_changed")
        return out

    def on_measurement(self, stimulus_index: int, channel: str, rejected: bool, present: bool | None = None,
                       stage: str | None = None, assessment: str | None = None,
                       pct_of_baseline: float | None = None) -> list[DecisionBody]:
        """One measurement. `stage` is the one its sweep was recorded in (the analyzer dates sweeps by
        sample index), so a sweep from before the window's mark that arrives after it never counts.
        Without it, arrival order decides. `assessment` (present | absent | not_assessable | rejected;
        derived from `rejected`/`present` when not given): a stimulus counts towards the evaluation
        window when some channel is present or absent and no channel with an AMR is not_assessable or
        rejected in it; it is counted once the next stimulus begins (or the window is cut short)."""
        if not isinstance(stimulus_index, int) or stimulus_index < 0:
            raise ValueError(f"stimulus_index must be a whole number >= 0; got {stimulus_index!r}")
        if stage is not None:
            _check("stage", stage, STAGE_ORDER)
        if assessment is None:
            assessment = "rejected" if rejected else ("present" if present else "absent")
        _check("assessment", assessment, ASSESSMENTS)
        if pct_of_baseline is not None and not pct_of_baseline >= 0:
            raise ValueError(f"pct_of_baseline must be >= 0 (%); got {pct_of_baseline!r}")
        if self._ended:
            return []
        out: list[DecisionBody] = []
        new_stimulus = stimulus_index not in self._recent
        if new_stimulus:
            out += self._check_rejection()  # the previous stimuli are complete now
            self._recent[stimulus_index] = False
            while len(self._recent) > max(self.settings.rejection_window + 1, 64):
                self._recent.popitem(last=False)
        if not rejected and not self._recent[stimulus_index]:
            self._recent[stimulus_index] = True
            self._total_good += 1
        if stage is not None:
            self._dated = True
        if (self._cut_pending and stage is not None and STAGE_ORDER.index(stage) >= _CLOSURE
                and self._window_open and not self._evaluated):
            out += self._count_pending()
            if not self._evaluated:
                out += self._close_window("closure")
        if self._pending is None or self._pending["index"] != stimulus_index:
            out += self._count_pending()
            self._pending = {"index": stimulus_index, "assessable": False, "blocked": False, "pcts": {},
                             "seen": set(), "done": False}
        if self._window_open and not self._evaluated and self._in_window(stage) and not self._pending["done"]:
            pend = self._pending
            pend["seen"].add(channel)
            if assessment in COUNTED_ASSESSMENTS:
                pend["assessable"] = True
                if pct_of_baseline is not None:
                    pend["pcts"][channel] = float(pct_of_baseline)
            elif channel in self._channels:
                pend["blocked"] = True  # a channel with an AMR could not be read in this sweep
            if self._channels and pend["seen"] >= set(self._channels):
                out += self._count_pending()  # every channel with an AMR has spoken: no need to wait
        if present and not rejected and not self._ever_present:
            self._present_sweeps += 1
            if self._present_sweeps >= self.settings.min_present_sweeps:
                self._ever_present = True
                out += self._detected_after_all()
        if stage is not None and stage != "baseline":
            out += self._check_never_detected(stage)
        return out

    def on_prediction(self, probability: float, band: str, cutoff_low: float, cutoff_high: float, *,
                      extrapolated: Mapping[str, str] | Sequence[str] = (),
                      adequate: Mapping[str, Any] | None = None) -> list[DecisionBody]:
        """A prediction. `extrapolated`: the factors outside the model's training range (name → how,
        e.g. "retraction_mm 35 (trained on 3–16)"). `adequate`: the same prediction recomputed with the
        intraoperative factors of an adequate decompression ({"probability", "band", "inputs"}, where
        "inputs" says what was changed), or None when they already were."""
        for name, v in (("probability", probability), ("cutoff_low", cutoff_low), ("cutoff_high", cutoff_high)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {v!r}")
        _check("band", band, BANDS)
        if adequate is not None:
            if not 0.0 <= adequate.get("probability", -1.0) <= 1.0:
                raise ValueError(f"adequate.probability must be in [0, 1]; got {adequate.get('probability')!r}")
            _check("adequate.band", adequate.get("band"), BANDS)
        if self._ended:
            return []
        self._prediction = {"probability": float(probability), "band": band,
                            "cutoff_low": float(cutoff_low), "cutoff_high": float(cutoff_high)}
        self._extrapolated = (dict(extrapolated) if isinstance(extrapolated, Mapping)
                              else {n: n for n in extrapolated})
        self._adequate = dict(adequate) if adequate is not None else None
        self._missing, self._unavailable_reason = [], None
        return self._reevaluate("prediction_changed")

    def on_prediction_unavailable(self, missing: Sequence[str], reason: str | None = None) -> list[DecisionBody]:
        """The predictor cannot predict: `missing` names the inputs it still needs, `reason` (optional)
        says why when it is not simply that they were not entered (e.g. a baseline without an AMR)."""
        if not missing:
            raise ValueError("missing must name at least one input")
        if self._ended:
            return []
        self._prediction, self._missing, self._unavailable_reason = None, list(missing), reason
        self._extrapolated, self._adequate = {}, None
        return self._reevaluate("inputs_changed")

    def on_course(self, course: str) -> list[DecisionBody]:
        """The analyzer's classification of the session's AMR course (usually at end)."""
        _check("course", course, COURSES)
        self._course = course
        out: list[DecisionBody] = []
        if course == "never_detected" and not self._never_detected_said:
            out += self._say_never_detected()
        if self._ended:
            out += self._prognosis()
        return out

    # ------------------------------------------------------------------ state

    def active(self) -> list[DecisionBody]:
        """The decisions currently in force, one per chain."""
        return list(self._active.values())

    def _before_decompression(self) -> bool:
        return self.stage is None or STAGE_ORDER.index(self.stage) < _DECOMPRESSION

    def _gone(self) -> bool:
        return self._amr_state() == "disappeared"

    def _amr_state(self) -> str | None:
        states = [s for s, _ in self._channels.values()]
        if not states:
            return None
        if all(s == "disappeared" for s in states):
            return "disappeared"
        return next(s for s in ("reappeared", "present", "diminished") if s in states)

    def _pct(self) -> float | None:
        live = [p for s, p in self._channels.values() if p is not None and s != "disappeared"]
        every = [p for _, p in self._channels.values() if p is not None]
        chosen = live or every
        return round(max(chosen), 1) if chosen else None

    def _stage_text(self) -> str:
        return self.stage.replace("_", " ") if self.stage else "the approach (no stage marked)"

    def _in_window(self, stage: str | None) -> bool:
        if stage is None or self._window_mark is None:
            return True  # an older publisher: arrival order decides
        return STAGE_ORDER.index(stage) >= STAGE_ORDER.index(self._window_mark)

    def _open_window(self, mark: str) -> None:
        self._window_open, self._evaluated, self._window_end, self._cut_pending = True, False, None, False
        self._window_mark, self._window_n, self._window_pcts, self._pending = mark, 0, {}, None
        self._after_reappearance = self._reappeared
        self._reappeared_standing = False

    def _count_pending(self) -> list[DecisionBody]:
        """Count the last stimulus towards the window if it qualifies; judge when the window is full."""
        pend = self._pending
        if pend is None or pend.get("done") or not (self._window_open and not self._evaluated):
            return []
        pend["done"] = True
        if not pend["assessable"] or pend["blocked"]:
            return []
        self._window_n += 1
        for ch, pct in pend["pcts"].items():
            self._window_pcts.setdefault(ch, []).append(pct)
        if self._window_n >= self.settings.evaluation_sweeps:
            return self._close_window("window_complete")
        return []

    def _close_window(self, why: str) -> list[DecisionBody]:
        self._window_end, self._cut_pending = why, False
        return self._evaluate(why)

    def _window_ratio(self) -> float | None:
        """Median final/baseline % over the window of the channel with an AMR that kept most."""
        meds = [float(median(v)) for ch, v in self._window_pcts.items() if v and ch in self._channels]
        return round(max(meds), 1) if meds else None

    def _window_text(self) -> str:
        n, big_n, mark, end = self._window_n, self.settings.evaluation_sweeps, self._window_mark, self._window_end
        if mark is None:
            return ("with no evaluation window (the session ended before decompression_complete or closure "
                    "was marked)")
        sweeps = f"{n} assessable sweep{'' if n == 1 else 's'}"
        since = f"from the {mark} mark" + (" (decompression_complete was never marked)" if mark == "closure" else "")
        if end in ("closure", "end"):
            return f"over {sweeps} {since} to {end}, which cut the {big_n}-sweep window short"
        return f"over an evaluation window of {sweeps} {since}"

    def _criterion_text(self) -> str:
        r = self.settings.reduction_criterion_pct
        if r is None:
            return "criterion: complete disappearance"
        return f"criterion: disappearance or a reduction of at least {r:g}% from baseline (reduction_criterion_pct)"

    def _evidence(self, **extra: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "stage": self.stage,
            "amr_state": self._amr_state(),
            "pct_of_baseline": self._pct(),
            "channels_disappeared": sum(1 for s, _ in self._channels.values() if s == "disappeared"),
            "channels": len(self._channels),
            "good_sweeps": self._window_n,
            "assessable_sweeps": self._window_n,
            "window_sweeps": self.settings.evaluation_sweeps,
            "window_from": self._window_mark,
            "window_to": self._window_end,
            "criterion": "complete_disappearance" if self.settings.reduction_criterion_pct is None else "reduction",
            "reduction_criterion_pct": self.settings.reduction_criterion_pct,
            "window_pct_of_baseline": self._window_ratio(),
            "reappeared_in_session": self._reappeared,
            "probability": None,
            "band": None,
            "cutoff_low": None,
            "cutoff_high": None,
            "extrapolated": ",".join(self._extrapolated) or None,
            "adequate_probability": None,
            "adequate_band": None,
            "adequate_inputs": None,
            "missing_inputs": ",".join(self._missing) or None,
            "prediction_unavailable_reason": self._unavailable_reason,
        }
        if self._prediction:
            ev.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in self._prediction.items()})
        if self._adequate:
            ev.update({"adequate_probability": round(float(self._adequate["probability"]), 6),
                       "adequate_band": self._adequate["band"],
                       "adequate_inputs": str(self._adequate.get("inputs") or "")[:256] or None})
        ev.update(extra)
        return ev

    def _emit(self, chain: str, kind: Any, priority: Any, rationale: str, *, provisional: bool = False,
              **extra: Any) -> DecisionBody:
        prev = self._active.get(chain)
        self._signature.pop(chain, None)  # the caller records the new answer's signature, if it has one
        d = _decision(
            decision_id=self._next_id,
            kind=kind,
            priority=priority,
            rationale=rationale,
            evidence=self._evidence(**extra),
            supersedes=prev.decision_id if prev else None,
            provisional=provisional,
            synthetic=self.synthetic,
            notice=self.notice,
        )
        self._next_id += 1
        self._active[chain] = d
        return d

    # ------------------------------------------------------------------ rules

    def _status(self, trigger: str) -> list[DecisionBody]:
        """`evaluating` (provisional, info): what the AMR does while the verdict is not yet due."""
        if self._ended or not self._decompressing or self._evaluated or self._amr_state() is None:
            return []
        if self._gone() and self._gone_before_decompression:
            return []  # early_disappearance stands: nothing to evaluate
        if self._reappeared_standing and trigger not in ("stage_changed", "amr_disappeared"):
            return []  # the high-priority reappearance stays in force until something new happens
        n, big_n = self._window_n, self.settings.evaluation_sweeps
        if self._window_open:
            phase = (f"{'closure began without a decompression_complete mark' if self._window_mark == 'closure' else 'decompression marked complete'}, "
                     f"evaluation window {n} of {big_n} assessable sweeps")
        elif self.stage == "decompression":
            phase = "decompression under way" + (" again after the AMR's reappearance" if self._reappeared else "")
        else:
            phase = (f"{self._stage_text()}, waiting for a new decompression_complete mark (or closure) to open "
                     "an evaluation window")
        live = [(ch, s, p) for ch, (s, p) in self._channels.items() if s != "disappeared"]
        m = len(self._channels)
        if not live:
            amr = f"AMR absent on {'the' if m == 1 else 'all ' + str(m)} channel{'' if m == 1 else 's'}"
        else:
            with_pct = [(p, ch) for ch, _, p in live if p is not None]
            if with_pct:
                p, ch = max(with_pct)
                amr = f"AMR at {p:.0f}% of baseline ({ch}), {len(live)} of {m} channels present"
            else:
                amr = f"AMR present on {len(live)} of {m} channel{'' if m == 1 else 's'}"
        parts = [phase, amr]
        if not self._window_open:
            parts.append(f"the verdict follows {big_n} assessable sweeps after decompression_complete is marked")
        if self._reappeared:
            parts.append("termination will not be advised, because the AMR came back after disappearing")
        sig = ("status", phase, amr)
        if self._signature.get(self.COURSE) == sig:
            return []
        d = self._emit(self.COURSE, "evaluating", "info", "Evaluating: " + "; ".join(parts) + ".",
                       provisional=True, trigger=trigger)
        self._signature[self.COURSE] = sig
        return [d]

    def _say_reappeared(self) -> list[DecisionBody]:
        """The AMR came back after disappearing after decompression (or after a confirmation)."""
        self._reappeared = self._reappeared_standing = True
        self._window_open, self._evaluated, self._pending, self._cut_pending = False, False, None, False
        d = self._emit(
            self.COURSE, "amr_reappeared", "high",
            f"The AMR has come back during {self._stage_text()} after it had disappeared: the prosthesis may have "
            "slipped or the vessel returned — re-inspect the decompression (a new decompression_complete mark "
            "opens a new evaluation window; termination will not be advised in this session).",
            trigger="amr_reappeared",
        )
        self._signature[self.COURSE] = ("reappeared",)
        return [d]

    def _verdict(self) -> tuple[str, str, str, tuple] | None:
        """(kind, priority, rationale, signature) for the AMR as it is now, over the window used."""
        if self._amr_state() is None:
            return None  # nothing detected: the monitoring chain speaks
        if self._gone() and self._gone_before_decompression:
            return None  # early_disappearance stands: the AMR cannot judge this decompression
        w, crit = self._window_text(), self._criterion_text()
        if self._window_n == 0:
            return ("indeterminate", "medium",
                    f"No assessable sweep was recorded after the decompression was marked complete ({w}), so the "
                    "AMR cannot judge this decompression — judge it by sight.", ("no_window", self._window_mark))
        again = ", after it had reappeared earlier in this session" if self._after_reappearance else ""
        if self._gone():
            return ("decompression_confirmed", "low",
                    f"The AMR disappeared after decompression and stayed absent {w} ({crit}){again}, which "
                    "supports an adequate decompression.", ("confirmed",))
        r, ratio = self.settings.reduction_criterion_pct, self._window_ratio()
        if r is not None and ratio is not None and ratio <= 100.0 - r:
            return ("decompression_confirmed", "low",
                    f"The AMR fell to {ratio:.1f}% of baseline {w} ({crit}){again}, which supports an adequate "
                    "decompression although a small response remains.", ("reduced", ratio))
        pred = self._prediction
        if pred is None:
            if self._unavailable_reason:
                why = self._unavailable_reason
            else:
                missing = self._missing or list(FEATURE_NAMES)
                verb = "has" if len(missing) == 1 else "have"
                why = (f"{_names(missing)} {verb} not been entered; enter {'it' if len(missing) == 1 else 'them'} "
                       "to get advice")
            return ("indeterminate", "medium",
                    f"The AMR persists after decompression {w} but no prediction is available because {why}.",
                    ("missing", tuple(self._missing), self._unavailable_reason))
        p, band, low, high = pred["probability"], pred["band"], pred["cutoff_low"], pred["cutoff_high"]
        sig = ("predicted", band, round(p, 3))
        if self._extrapolated and band != "intermediate":
            outside = _names(list(self._extrapolated.values()))
            return ("indeterminate", "medium",
                    f"The AMR persists after decompression {w}; the model puts p at {_p(p)} ({band} band) but "
                    f"{outside} {'is' if len(self._extrapolated) == 1 else 'are'} outside its training range — the "
                    "model was not trained on such values, so judge the decompression by sight.",
                    ("extrapolated", tuple(self._extrapolated), band))
        if band == "low":
            return ("explore_further", "high",
                    f"The AMR persists after decompression {w} although persistence was unlikely for this patient "
                    f"(p {_p(p)}, below the {low:.2f} cut-off): the decompression may be inadequate or a vessel "
                    "missed — consider exploring further or transposing the vessel.", sig)
        if band == "intermediate":
            return ("indeterminate", "medium",
                    f"The AMR persists after decompression {w} and its predicted probability (p {_p(p)}) lies "
                    f"between the cut-offs ({low:.2f}–{high:.2f}), so the model cannot say whether this is "
                    "expected — judge the decompression by sight.", sig)
        if self._reappeared:
            return ("check_decompression", "high",
                    f"The AMR persists {w}, but it had disappeared and come back earlier in this session, so its "
                    f"persistence is not the expected kind although p {_p(p)} is high: re-inspect the decompression "
                    "(the prosthesis may have slipped or the vessel returned) — termination is not advised after "
                    "a reappearance.", ("check", "reappeared", round(p, 3)))
        ad = self._adequate
        if ad is not None and ad["band"] != "high":
            return ("check_decompression", "medium",
                    f"The AMR persists {w}; the high persistence estimate (p {_p(p)}) rests on the intraoperative "
                    f"factors entered — with {ad.get('inputs') or 'those of an adequate decompression'} p would be "
                    f"{_p(ad['probability'])} ({ad['band']} band): confirm the decompression is adequate before "
                    "ending.", ("check", "counterfactual", round(p, 3), round(float(ad["probability"]), 3)))
        still = (f", and still p {_p(ad['probability'])} with {ad.get('inputs')}" if ad is not None else "")
        return ("termination_acceptable", "medium",
                f"The AMR persists {w}, as expected for this patient (p {_p(p)}, at or above the {high:.2f} "
                f"cut-off{still}): once decompression is seen to be adequate the operation can be ended, as "
                "further manipulation only adds risk.", sig)

    def _evaluate(self, trigger: str) -> list[DecisionBody]:
        """Give the verdict now (the window is complete or cut short)."""
        if self._ended:
            return []
        self._evaluated = True
        verdict = self._verdict()
        if verdict is None:
            return []
        kind, priority, rationale, sig = verdict
        d = self._emit(self.COURSE, kind, priority, rationale, trigger=trigger)
        self._signature[self.COURSE] = sig
        return [d]

    def _reevaluate(self, trigger: str) -> list[DecisionBody]:
        """After the verdict: judge again when an input changed, and speak only if the answer changed."""
        if self._ended or not self._evaluated:
            return []
        verdict = self._verdict()
        if verdict is None:
            return []
        kind, priority, rationale, sig = verdict
        if self._signature.get(self.COURSE) == sig:
            return []
        d = self._emit(self.COURSE, kind, priority, rationale, trigger=trigger)
        self._signature[self.COURSE] = sig
        return [d]

    def _check_rejection(self) -> list[DecisionBody]:
        w = self.settings.rejection_window
        if len(self._recent) < w:
            return []
        last = list(self._recent.values())[-w:]
        bad = sum(1 for good in last if not good)
        frac = bad / w
        if not self._rejecting and frac >= self.settings.rejection_fraction:
            self._rejecting = True
            return [self._emit(
                self.MONITORING, "amr_not_monitorable", "medium",
                f"The AMR cannot be monitored: {bad} of the last {w} stimuli gave no usable sweep — check the "
                "electrodes, pause diathermy and make sure no neuromuscular block is running.",
                reason="rejected_sweeps", rejected_fraction=round(frac, 3),
            )]
        if self._rejecting and frac <= self.settings.recovery_fraction:
            self._rejecting = False
            if self._never_detected_said and not self._ever_present:
                # The sweeps are usable again, but there is still no AMR in them: say so again.
                return self._say_never_detected()
            return [self._emit(
                self.MONITORING, "indeterminate", "low",
                f"Monitoring has recovered ({bad} of the last {w} stimuli unusable); the AMR can be followed again.",
                reason="monitoring_recovered", rejected_fraction=round(frac, 3),
            )]
        return []

    def _check_never_detected(self, stage: str | None) -> list[DecisionBody]:
        """Baseline is over (`stage` is past it) with enough good sweeps and none with an AMR."""
        if (self._ever_present or self._never_detected_said or stage in (None, "baseline")
                or self._total_good < self.settings.min_baseline_sweeps):
            return []
        return self._say_never_detected()

    def _say_never_detected(self) -> list[DecisionBody]:
        self._never_detected_said = True
        return [self._emit(
            self.MONITORING, "amr_not_monitorable", "medium",
            "No AMR was detected at baseline, so it cannot guide this decompression — rule out neuromuscular block "
            "and check the stimulating and recording electrodes, otherwise rely on sight.",
            reason="never_detected", good_sweeps_total=self._total_good,
        )]

    def _detected_after_all(self) -> list[DecisionBody]:
        prev = self._active.get(self.MONITORING)
        if not (self._never_detected_said and prev and prev.evidence.get("reason") == "never_detected"):
            return []
        return [self._emit(
            self.MONITORING, "indeterminate", "low",
            f"The AMR is now detected (during {self._stage_text()}), so it can be followed from here.",
            reason="detected_late",
        )]

    def _derived_course(self) -> str:
        if getattr(self, "_amr_unknown", None) and self._amr_state() is None:
            return "unknown"  # the analyzer lost the session's state and has not seen the AMR since
        if not self._ever_present and self._amr_state() is None:
            return "never_detected"
        if self._gone():
            return "disappeared_before_decompression" if self._gone_before_decompression else "disappeared_after_decompression"
        return "persisted"

    def _prognosis(self) -> list[DecisionBody]:
        course = self._course or self._derived_course()
        if self._signature.get(self.PROGNOSIS) == (course,):
            return []
        lit = self.settings.literature
        if course == "persisted":
            figs = " and ".join(f"{pp}% vs {pr}% {when}" for when, pp, pr in lit.persistent_spasm_pct[1:])
            text = (
                f"The AMR persisted to the end: relief may take about {lit.relief_months} months, and a second "
                f"operation is considered only if there is no improvement after {lit.reoperation_after_months[0]}–"
                f"{lit.reoperation_after_months[1]} months (literature: persistent spasm {figs} when the AMR persisted "
                "vs resolved)."
            )
        elif course == "disappeared_after_decompression":
            figs = ", ".join(f"{pr}% {when}" for when, _, pr in lit.persistent_spasm_pct)
            text = (
                "The AMR disappeared after decompression, which goes with a good outcome (literature: persistent "
                f"spasm in {figs} when the AMR resolved); follow up at {lit.follow_up}."
            )
        elif course == "disappeared_before_decompression":
            text = (
                "The AMR disappeared before decompression, so it gives no prognosis for this decompression; "
                f"follow up at {lit.follow_up}."
            )
        elif course == "unknown":
            text = ("The AMR course is unknown (the analyzer restarted without the session's baseline), so it gives "
                    f"no prognosis; follow up at {lit.follow_up}.")
        else:
            text = f"No AMR was recorded, so it gives no prognosis; follow up at {lit.follow_up}."
        d = self._emit(self.PROGNOSIS, "prognosis", "info", text, course=course)
        self._signature[self.PROGNOSIS] = (course,)
        return [d]

    # ------------------------------------------------------------------ restart

    def adopt(self, chain: str, decision: DecisionBody) -> None:
        """A decision this session already published, met while a restarted predictor rebuilds its state
        from the acquirer's snapshot (fed in the order it was published, between the inputs): it becomes the
        active one of `chain` — later decisions supersede it and are numbered after it — and what the engine
        remembers having said follows it, so that the same answer is not given again."""
        _check("chain", chain, (self.COURSE, self.MONITORING, self.PROGNOSIS))
        self._active[chain] = decision
        self._next_id = max(self._next_id, int(decision.decision_id) + 1)
        ev = decision.evidence or {}
        if chain == self.COURSE:
            if ev.get("trigger") in ("window_complete", "window_cut_short"):
                self._evaluated = True
            # A reappearance stays on the record through a restart: termination is never advised after it.
            if decision.kind == "amr_reappeared" or ev.get("reappeared_in_session"):
                self._reappeared = True
                self._reappeared_standing = decision.kind == "amr_reappeared"
            verdict = self._verdict()
            if verdict is not None and verdict[0] == decision.kind:
                self._signature[chain] = verdict[3]
            else:
                self._signature.pop(chain, None)
        elif chain == self.MONITORING:
            reason = ev.get("reason")
            if reason == "never_detected":
                self._never_detected_said = True
            elif reason == "rejected_sweeps":
                self._rejecting = True
            elif reason == "monitoring_recovered":
                self._rejecting = False
        else:
            self._signature[chain] = (ev.get("course"),)

    def active_by_chain(self) -> dict[str, DecisionBody]:
        """The decision in force in each chain."""
        return dict(self._active)

    def forget(self, chain: str) -> None:
        """No decision of `chain` was published (one a rebuild made up is dropped)."""
        self._active.pop(chain, None)
        self._signature.pop(chain, None)

    def resume_numbering(self, next_id: int, *, detected: bool) -> None:
        """After a rebuild: number from `next_id` (one past the highest id the session published); `detected`:
        the session published a course state, so the AMR was confirmed present at some point (the sweeps that
        showed it are gone with the old process; 'never detected' must not be said for want of them)."""
        if not (isinstance(next_id, int) and next_id >= 1):
            raise ValueError(f"next_id must be a whole number >= 1; got {next_id!r}")
        self._next_id = next_id
        if detected:
            self._ever_present = True

    def on_amr_unknown(self, reason: str) -> list[DecisionBody]:
        """The AMR's course is unknown (the analyzer restarted without the session's baseline, or this predictor
        without the session's state): what was said about it no longer stands. The course chain says so; the
        channels' states are forgotten until the analyzer publishes new ones."""
        if self._ended:
            return []
        self._amr_unknown = reason
        self._channels.clear()
        self._gone_before_decompression = False
        d = self._emit(
            self.COURSE, "indeterminate", "medium",
            f"The AMR course is unknown ({reason[:300]}): the AMR can neither confirm nor question this decompression "
            "until it is seen again — judge the decompression by direct inspection.",
            trigger="state_unknown",
        )
        return [d]
