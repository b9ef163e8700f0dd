"""The scripted operations the simulator plays, as data.

Every scenario is a whole MVD: the stage timeline (``STAGE_DURATIONS_S``,
times ``time_scale``), a patient whose factors the scenario "enters" at the
right moments, and the AMR course: the amplitude, as a fraction of the
channel's baseline amplitude, that each stage moves towards. A transition
starts ``delay`` stimuli after the stage begins and takes ``ramp`` stimuli
(a cosine blend), so the course is smooth and counted in stimuli, not
seconds (it keeps its shape when ``time_scale`` shortens the stages).
A fraction of exactly 0.0 means "disappeared": the true amplitude is 0.0.

The stories (stage: fraction of baseline):

- ``disappears-after-decompression`` (low-risk patient, ~180 µV baseline):
  present through the approach with a mild fall during retraction and
  dissection (0.9, 0.85); gone 2 + 6 = 8 stimuli after decompression
  starts (orbicularis oris 2 stimuli later, still within 10), stays gone.
- ``early-disappearance`` (low-risk, ~150 µV): halves at dural opening and is
  gone during CSF release (within 8 stimuli of its start); never returns.
- ``persists-expected`` (high-risk patient, ~600 µV): diminishes to 0.75 of
  baseline with decompression and persists to the end.
- ``persists-unexpected`` (low-risk, ~150 µV): diminishes to 0.8 of baseline
  with decompression and persists to the end: the case where the surgeon
  should look for a missed vessel.
- ``never-detected`` (low-risk): no AMR at any time.
- ``calibration`` (not a clinical story): one long baseline stage of
  ``calibration_stimuli`` stimuli at ``calibration_stim_rate_hz``; the AMR of
  each stimulus and channel has a random morphology and latency and an
  amplitude that is 0.0 in ``calibration_absent_fraction`` of them and
  log-uniform in ``calibration_amplitude_uv`` otherwise. No patient factors;
  diathermy only with ``calibration_diathermy``.

Every scenario's surgeon marks ``decompression_complete`` two thirds into the
decompression stage's time (``DECOMPRESSION_COMPLETE_AT``): the predictor's
verdict is given over a window of sweeps from that mark, never while the
decompression is still going on.

Patients (chosen so the predictor puts them in its low / high bands):
the preoperative four factors are entered at sample 0, ``retraction_mm``
when retraction starts and ``displacement`` when decompression starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .config import SimConfig


@dataclass(frozen=True)
class Patient:
    duration_years: float
    cohen_grade: int
    carbamazepine: bool
    vessels: int
    retraction_mm: float
    displacement: int

    def preoperative(self) -> dict:
        return {
            "duration_years": self.duration_years,
            "cohen_grade": self.cohen_grade,
            "carbamazepine": self.carbamazepine,
            "vessels": self.vessels,
        }


LOW_RISK = Patient(
    duration_years=1.5, cohen_grade=2, carbamazepine=False, vessels=1, retraction_mm=6.0, displacement=3
)
HIGH_RISK = Patient(
    duration_years=12.0, cohen_grade=4, carbamazepine=True, vessels=3, retraction_mm=14.0, displacement=1
)


@dataclass(frozen=True)
class Step:
    """From `stage` on, the AMR moves to `fraction` of its baseline amplitude."""

    stage: str
    fraction: float
    delay: int = 0
    """Stimuli after the stage starts before the change begins."""
    ramp: int = 4
    """Stimuli the change takes."""


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    patient: Patient | None
    baseline_uv: float
    """Nominal AMR peak-to-peak at baseline (each channel scales it by its own gain)."""
    course: tuple[Step, ...]
    """Must start with the baseline stage."""
    channel_course: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    """Per-channel overrides of `course`."""
    calibration: bool = False

    def course_for(self, channel: str) -> tuple[Step, ...]:
        return self.channel_course.get(channel, self.course)


#: Default stage durations (s) of a scripted operation: 8.75 minutes with time_scale 1.
STAGE_DURATIONS_S: dict[str, float] = {
    "baseline": 90.0,
    "incision": 45.0,
    "dural_opening": 45.0,
    "csf_release": 45.0,
    "retraction": 45.0,
    "arachnoid_dissection": 45.0,
    "decompression": 150.0,
    "closure": 60.0,
}

#: Where the `decompression_complete` mark falls, as a fraction of the decompression stage's time:
#: the surgeon works for two thirds of it, then says the decompression is done.
DECOMPRESSION_COMPLETE_AT = 2.0 / 3.0

#: The stages during which the surgeon may use diathermy.
SURGICAL_STAGES: tuple[str, ...] = (
    "incision",
    "dural_opening",
    "csf_release",
    "retraction",
    "arachnoid_dissection",
    "decompression",
    "decompression_complete",
    "closure",
)

_APPROACH = (
    Step("baseline", 1.0),
    Step("incision", 1.0),
    Step("dural_opening", 1.0),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="disappears-after-decompression",
            story="AMR present until decompression, gone within ~10 stimuli after it starts.",
            patient=LOW_RISK,
            baseline_uv=180.0,
            course=_APPROACH
            + (
                Step("csf_release", 1.0),
                Step("retraction", 0.9, delay=2, ramp=6),
                Step("arachnoid_dissection", 0.85, delay=2, ramp=6),
                Step("decompression", 0.0, delay=2, ramp=6),
            ),
            channel_course={
                "OORIS": _APPROACH
                + (
                    Step("csf_release", 1.0),
                    Step("retraction", 0.9, delay=2, ramp=6),
                    Step("arachnoid_dissection", 0.85, delay=2, ramp=6),
                    Step("decompression", 0.0, delay=4, ramp=6),
                ),
            },
        ),
        Scenario(
            name="early-disappearance",
            story="AMR fades at dural opening and is gone during CSF release, before any decompression.",
            patient=LOW_RISK,
            baseline_uv=150.0,
            course=(
                Step("baseline", 1.0),
                Step("incision", 1.0),
                Step("dural_opening", 0.5, delay=3, ramp=6),
                Step("csf_release", 0.0, delay=2, ramp=6),
            ),
        ),
        Scenario(
            name="persists-expected",
            story="High-risk patient: AMR diminishes but persists through decompression to the end.",
            patient=HIGH_RISK,
            baseline_uv=600.0,
            course=_APPROACH
            + (
                Step("csf_release", 1.0),
                Step("retraction", 0.95, delay=2, ramp=6),
                Step("arachnoid_dissection", 0.9, delay=2, ramp=6),
                Step("decompression", 0.75, delay=2, ramp=8),
            ),
        ),
        Scenario(
            name="persists-unexpected",
            story="Low-risk patient: AMR persists after decompression (a vessel may have been missed).",
            patient=LOW_RISK,
            baseline_uv=150.0,
            course=_APPROACH
            + (
                Step("csf_release", 1.0),
                Step("retraction", 0.95, delay=2, ramp=6),
                Step("arachnoid_dissection", 0.9, delay=2, ramp=6),
                Step("decompression", 0.8, delay=2, ramp=8),
            ),
        ),
        Scenario(
            name="never-detected",
            story="No AMR at any time, although stimulation and recording work.",
            patient=LOW_RISK,
            baseline_uv=150.0,
            course=(Step("baseline", 0.0),),
        ),
        Scenario(
            name="calibration",
            story="One long baseline of random AMRs (absent, or 5-1000 µV) for scoring the analyzer.",
            patient=None,
            baseline_uv=0.0,
            course=(Step("baseline", 1.0),),
            calibration=True,
        ),
    )
}


def scenario_names() -> list[str]:
    return list(SCENARIOS)


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"scenario must be one of {scenario_names()}; got {name!r}") from None


# --------------------------------------------------------------------------- #
# The timeline of one run


@dataclass(frozen=True)
class Timeline:
    """Where everything happens, in samples since the session start."""

    stages: tuple[tuple[int, str], ...]
    """(sample, stage) markers, ending with `end`."""
    factors: tuple[tuple[int, dict], ...]
    stimulus_samples: np.ndarray
    """int64, increasing; the last one is before the `end` marker."""
    end_sample: int
    total_samples: int

    def stage_start(self, stage: str) -> int | None:
        for sample, name in self.stages:
            if name == stage:
                return sample
        return None

    def stage_at(self, sample: int) -> str:
        current = self.stages[0][1]
        for start, name in self.stages:
            if start <= sample:
                current = name
        return current

    def first_stimulus_at_or_after(self, sample: int) -> int:
        return int(np.searchsorted(self.stimulus_samples, sample, side="left"))


def build_timeline(config: SimConfig) -> Timeline:
    scenario = get_scenario(config.scenario)
    fs = config.sampling_rate_hz
    rate = config.effective_stim_rate_hz()
    first = int(round(config.first_stimulus_s * fs))
    period = fs / rate

    stages: list[tuple[int, str]] = []
    if scenario.calibration:
        stages.append((0, "baseline"))
        end = first + int(round(config.calibration_stimuli * period))
    else:
        t = 0.0
        for stage, seconds in STAGE_DURATIONS_S.items():
            stages.append((int(round(t * fs)), stage))
            duration = config.stage_durations_s.get(stage, seconds) * config.time_scale
            if stage == "decompression":
                # The surgeon's "decompression complete" mark, part-way into the decompression stage's
                # scripted time (the AMR's course is scripted from the decompression start).
                stages.append((int(round((t + DECOMPRESSION_COMPLETE_AT * duration) * fs)), "decompression_complete"))
            t += duration
        end = int(round(t * fs))
    stages.append((end, "end"))

    n_stim = max(0, int(np.ceil((end - first) / period))) if end > first else 0
    samples = first + np.floor(np.arange(n_stim, dtype=np.float64) * period + 0.5).astype(np.int64)
    samples = samples[samples < end]

    factors: list[tuple[int, dict]] = []
    if scenario.patient is not None:
        p = scenario.patient
        factors.append((0, p.preoperative()))
        retraction = next(s for s, name in stages if name == "retraction")
        factors.append((retraction, {"retraction_mm": p.retraction_mm}))
        decompression = next(s for s, name in stages if name == "decompression")
        factors.append((decompression, {"displacement": p.displacement}))

    total = end + int(round(config.end_tail_s * fs))
    return Timeline(
        stages=tuple(stages),
        factors=tuple(factors),
        stimulus_samples=samples,
        end_sample=end,
        total_samples=total,
    )


def course_fraction(steps: tuple[Step, ...], stage_first_stimulus: dict[str, int], k: int) -> float:
    """The scripted fraction of baseline amplitude at stimulus `k`.

    Transitions are applied in order; a finished one sets the value exactly,
    so a fraction scripted as 0.0 yields exactly 0.0 once its ramp is over.
    """
    value = steps[0].fraction
    for step in steps[1:]:
        start = stage_first_stimulus[step.stage] + step.delay
        if k < start:
            continue
        if k >= start + step.ramp:
            value = step.fraction
        else:
            p = (k - start) / step.ramp
            value = value + (step.fraction - value) * (0.5 - 0.5 * np.cos(np.pi * p))
    return float(max(value, 0.0))
