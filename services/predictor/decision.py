"""What the AMR and the prediction mean for the surgeon, as a pure state machine.

The rules are the study's proposal (DOMAIN.md): after decompression the
engine waits for an evaluation window of good sweeps, then

- AMR gone                              → ``decompression_confirmed``
- AMR persists, predicted low           → ``explore_further`` (a missed vessel?)
- AMR persists, predicted high          → ``termination_acceptable``
- AMR persists, intermediate or unknown → ``indeterminate`` (says which input is missing)

plus ``early_disappearance`` (gone before decompression: it can no longer
confirm it), ``amr_not_monitorable`` (never detected, or too many rejected
sweeps) and a ``prognosis`` at ``end``.

Decisions form chains, one per question (what the AMR says about the
decompression; whether it can be monitored; the prognosis). When an input
changes the answer — the AMR reappears, a factor is entered, the surgeon
decompresses again — the new decision names the one it replaces in
``supersedes``; nothing is withdrawn silently. The engine has no clock and no
sockets: it is fed events and returns decision dicts (the body of a
``decision`` message), so live service, replay and tests run the same code.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from amrwatch.proto.messages import STAGE_ORDER

from .features import FEATURE_NAMES

STATES = ("present", "diminished", "disappeared", "reappeared")
COURSES = ("never_detected", "disappeared_before_decompression", "disappeared_after_decompression", "persisted")
BANDS = ("low", "intermediate", "high")
_DECOMPRESSION = STAGE_ORDER.index("decompression")


@dataclass(frozen=True)
class Literature:
    """Published figures quoted in the rationales (DOMAIN.md, literature)."""

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
    """Good sweeps after the decompression mark before the AMR is judged (default 20)."""
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
        self._prediction: dict[str, Any] | None = None
        self._missing: list[str] = list(FEATURE_NAMES)
        self._window_open = False
        self._evaluated = False
        self._window_good = 0
        self._total_good = 0
        self._recent: OrderedDict[int, bool] = OrderedDict()
        self._rejecting = False
        self._never_detected_said = False
        self._ended = False
        self._course: str | None = None
        self._next_id = 1
        self._active: dict[str, dict[str, Any]] = {}
        self._signature: dict[str, tuple] = {}

    # ------------------------------------------------------------------ inputs

    def on_stage(self, stage: str) -> list[dict]:
        _check("stage", stage, STAGE_ORDER)
        if self._ended:
            return []
        self.stage = stage
        out: list[dict] = []
        if stage == "decompression":
            self._window_open, self._evaluated, self._window_good = True, False, 0
        out += self._check_never_detected()
        if stage in ("closure", "end") and self._window_open and not self._evaluated:
            out += self._evaluate("window_cut_short", force=True)
        if stage == "end":
            self._ended = True
            out += self._prognosis()
        return out

    def on_amr_state(self, channel: str, state: str, pct_of_baseline: float | None = None) -> list[dict]:
        _check("state", state, STATES)
        if pct_of_baseline is not None and not pct_of_baseline >= 0:
            raise ValueError(f"pct_of_baseline must be >= 0 (%); got {pct_of_baseline!r}")
        if self._ended:
            return []
        was_gone, was_known = self._gone(), self._amr_state() is not None
        self._channels[channel] = (state, pct_of_baseline)
        out: list[dict] = []
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
        elif not gone and was_gone and was_known:
            early, self._gone_before_decompression = self._gone_before_decompression, False
            if early and not self._evaluated:
                if self._before_decompression():
                    text = ("The AMR has reappeared before decompression, so it can again confirm the "
                            "decompression; waiting for decompression.")
                else:
                    text = (f"The AMR has reappeared during {self._stage_text()}; it will be judged after the "
                            f"evaluation window of {self.settings.evaluation_sweeps} good sweeps.")
                out.append(self._emit(self.COURSE, "indeterminate", "low", text, trigger="amr_reappeared"))
            else:
                out += self._evaluate("amr_reappeared")
        elif gone and not was_gone:
            out += self._evaluate("amr_disappeared")
        return out

    def on_measurement(self, stimulus_index: int, channel: str, rejected: bool, present: bool | None = None,
                       stage: str | None = None) -> list[dict]:
        """One measurement; `stage` is the one its sweep was recorded in (the analyzer dates sweeps by
        sample index), so a sweep from before the decompression mark that arrives after it never counts
        towards the evaluation window. Without it, arrival order decides."""
        if not isinstance(stimulus_index, int) or stimulus_index < 0:
            raise ValueError(f"stimulus_index must be a whole number >= 0; got {stimulus_index!r}")
        if stage is not None:
            _check("stage", stage, STAGE_ORDER)
        if self._ended:
            return []
        out: list[dict] = []
        new_stimulus = stimulus_index not in self._recent
        if new_stimulus:
            out += self._check_rejection()  # the previous stimuli are complete now
            self._recent[stimulus_index] = False
            while len(self._recent) > max(self.settings.rejection_window + 1, 64):
                self._recent.popitem(last=False)
        if not rejected and not self._recent[stimulus_index]:
            self._recent[stimulus_index] = True
            self._total_good += 1
            if self._window_open and not self._evaluated and (stage is None or
                                                              STAGE_ORDER.index(stage) >= _DECOMPRESSION):
                self._window_good += 1
        if present and not rejected and not self._ever_present:
            self._present_sweeps += 1
            if self._present_sweeps >= self.settings.min_present_sweeps:
                self._ever_present = True
                out += self._detected_after_all()
        if self._window_open and not self._evaluated and self._window_good >= self.settings.evaluation_sweeps:
            out += self._evaluate("window_complete", force=True)
        return out

    def on_prediction(self, probability: float, band: str, cutoff_low: float, cutoff_high: float) -> list[dict]:
        for name, v in (("probability", probability), ("cutoff_low", cutoff_low), ("cutoff_high", cutoff_high)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {v!r}")
        _check("band", band, BANDS)
        if self._ended:
            return []
        self._prediction = {"probability": float(probability), "band": band,
                            "cutoff_low": float(cutoff_low), "cutoff_high": float(cutoff_high)}
        self._missing = []
        return self._evaluate("prediction_changed")

    def on_prediction_unavailable(self, missing: Sequence[str]) -> list[dict]:
        """The predictor cannot predict: `missing` names the inputs it still needs."""
        if not missing:
            raise ValueError("missing must name at least one input")
        if self._ended:
            return []
        self._prediction, self._missing = None, list(missing)
        return self._evaluate("inputs_changed")

    def on_course(self, course: str) -> list[dict]:
        """The analyzer's classification of the session's AMR course (usually at end)."""
        _check("course", course, COURSES)
        self._course = course
        out: list[dict] = []
        if course == "never_detected" and not self._never_detected_said:
            out += self._say_never_detected()
        if self._ended:
            out += self._prognosis()
        return out

    # ------------------------------------------------------------------ state

    def active(self) -> list[dict]:
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

    def _evidence(self, **extra: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "stage": self.stage,
            "amr_state": self._amr_state(),
            "pct_of_baseline": self._pct(),
            "channels_disappeared": sum(1 for s, _ in self._channels.values() if s == "disappeared"),
            "channels": len(self._channels),
            "good_sweeps": self._window_good,
            "window_sweeps": self.settings.evaluation_sweeps,
            "probability": None,
            "band": None,
            "cutoff_low": None,
            "cutoff_high": None,
            "missing_inputs": ",".join(self._missing) or None,
        }
        if self._prediction:
            ev.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in self._prediction.items()})
        ev.update(extra)
        return ev

    def _emit(self, chain: str, kind: str, priority: str, rationale: str, **extra: Any) -> dict:
        prev = self._active.get(chain)
        self._signature.pop(chain, None)  # the caller records the new answer's signature, if it has one
        d = {
            "decision_id": self._next_id,
            "kind": kind,
            "priority": priority,
            "rationale": rationale,
            "evidence": self._evidence(**extra),
            "supersedes": prev["decision_id"] if prev else None,
            "provisional": False,
            "synthetic": self.synthetic,
            "notice": self.notice,
        }
        self._next_id += 1
        self._active[chain] = d
        return d

    # ------------------------------------------------------------------ rules

    def _verdict(self) -> tuple[str, str, str, tuple] | None:
        """(kind, priority, rationale, signature) for the AMR as it is now, after decompression."""
        n = self.settings.evaluation_sweeps
        if self._amr_state() is None:
            return None  # nothing detected: the monitoring chain speaks
        if self._gone():
            if self._gone_before_decompression:
                return None  # early_disappearance stands: the AMR cannot judge this decompression
            return ("decompression_confirmed", "low",
                    f"The AMR disappeared after decompression and stayed absent (evaluation window {n} good sweeps), "
                    "which supports an adequate decompression.", ("confirmed",))
        pred = self._prediction
        if pred is None:
            missing = self._missing or list(FEATURE_NAMES)
            verb = "has" if len(missing) == 1 else "have"
            return ("indeterminate", "medium",
                    f"The AMR persists after decompression but no prediction is available because {_names(missing)} "
                    f"{verb} not been entered; enter {'it' if len(missing) == 1 else 'them'} to get advice.",
                    ("missing", tuple(missing)))
        p, band, low, high = pred["probability"], pred["band"], pred["cutoff_low"], pred["cutoff_high"]
        sig = ("predicted", band, round(p, 3))
        if band == "low":
            return ("explore_further", "high",
                    f"The AMR persists after decompression although persistence was unlikely for this patient "
                    f"(p {_p(p)}, below the {low:.2f} cut-off): the decompression may be inadequate or a vessel "
                    "missed — consider exploring further or transposing the vessel.", sig)
        if band == "high":
            return ("termination_acceptable", "medium",
                    f"The AMR persists, as expected for this patient (p {_p(p)}, at or above the {high:.2f} cut-off): "
                    "once decompression is seen to be adequate the operation can be ended, as further manipulation "
                    "only adds risk.", sig)
        return ("indeterminate", "medium",
                f"The AMR persists after decompression and its predicted probability (p {_p(p)}) lies between the "
                f"cut-offs ({low:.2f}–{high:.2f}), so the model cannot say whether this is expected — judge the "
                "decompression by sight.", sig)

    def _evaluate(self, trigger: str, *, force: bool = False) -> list[dict]:
        """Judge now if the window is complete (or `force`); emit only when the answer changed."""
        if self._ended:
            return []
        if force:
            self._evaluated = True
        elif not self._evaluated:
            return []
        verdict = self._verdict()
        if verdict is None:
            return []
        kind, priority, rationale, sig = verdict
        if not force and self._signature.get(self.COURSE) == sig:
            return []
        d = self._emit(self.COURSE, kind, priority, rationale, trigger=trigger)
        self._signature[self.COURSE] = sig
        return [d]

    def _check_rejection(self) -> list[dict]:
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

    def _check_never_detected(self) -> list[dict]:
        if (self._ever_present or self._never_detected_said or self.stage in (None, "baseline")
                or self._total_good < self.settings.min_baseline_sweeps):
            return []
        return self._say_never_detected()

    def _say_never_detected(self) -> list[dict]:
        self._never_detected_said = True
        return [self._emit(
            self.MONITORING, "amr_not_monitorable", "medium",
            "No AMR was detected at baseline, so it cannot guide this decompression — rule out neuromuscular block "
            "and check the stimulating and recording electrodes, otherwise rely on sight.",
            reason="never_detected", good_sweeps_total=self._total_good,
        )]

    def _detected_after_all(self) -> list[dict]:
        prev = self._active.get(self.MONITORING)
        if not (self._never_detected_said and prev and prev["evidence"].get("reason") == "never_detected"):
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

    def _prognosis(self) -> list[dict]:
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

    def adopt(self, chain: str, decision: dict[str, Any]) -> None:
        """A decision this session already published, met while a restarted predictor rebuilds its state
        from the acquirer's snapshot (fed in the order it was published, between the inputs): it becomes the
        active one of `chain` — later decisions supersede it and are numbered after it — and what the engine
        remembers having said follows it, so that the same answer is not given again."""
        _check("chain", chain, (self.COURSE, self.MONITORING, self.PROGNOSIS))
        self._active[chain] = decision
        self._next_id = max(self._next_id, int(decision["decision_id"]) + 1)
        ev = decision.get("evidence") or {}
        if chain == self.COURSE:
            if ev.get("trigger") in ("window_complete", "window_cut_short"):
                self._evaluated = True
            verdict = self._verdict()
            if verdict is not None and verdict[0] == decision["kind"]:
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

    def active_by_chain(self) -> dict[str, dict]:
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

    def on_amr_unknown(self, reason: str) -> list[dict]:
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
