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

The hazards a neurophysiologist checks before believing a disappearance
(issue 13), each a `Hazard` from some point of the operation on:

- ``noise-rise`` (low-risk, ~80 µV): the AMR is unchanged, but 2 stimuli
  after decompression starts the noise RMS rises ``NOISE_RISE_FACTOR`` times
  (an electrode losing contact): an AMR of baseline size can no longer be seen.
- ``stimulator-failure`` (low-risk, ~180 µV): 10 stimuli after decompression
  starts the stimulator stops delivering — no artifact, no direct response,
  no AMR — while the stimulus markers keep coming.
- ``current-spread`` (high-risk, ~180 µV): 10 stimuli after decompression
  starts the current spreads: a large direct response on the AMR channels
  from ~3.5 ms running into the 6-25 ms window; the AMR itself is gone
  underneath 4 stimuli later.
- ``reappearance`` (high-risk, ~180 µV): gone 2 + 6 stimuli after
  decompression starts, back at full size ``REAPPEAR_BEFORE_CLOSURE`` stimuli
  before closure (the prosthesis slipped) — with the default stage times,
  after the verdict on the disappearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ....proto.messages import PERIOD_STAGES

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
class Hazard:
    """From stimulus `delay` after `stage` starts on, the recording or the stimulation goes wrong.

    A later hazard replaces an earlier one entirely (list a return to normal as a `Hazard` with the
    defaults). The defaults are "nothing wrong"."""

    stage: str
    delay: int = 0
    """Stimuli after the stage starts (may be negative: before it)."""
    noise_factor: float = 1.0
    """The background noise RMS is multiplied by this (from half a stimulus period before that stimulus)."""
    delivered: bool = True
    """False: the stimulator delivers nothing (no artifact, direct response or AMR); markers go on."""
    spread_uv: float = 0.0
    """Current spread: peak-to-peak of a direct response on the AMR channels (0 = none)."""
    spread_onset_ms: float = 3.5
    spread_duration_ms: float = 16.0


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
    hazards: tuple[Hazard, ...] = ()
    """What goes wrong with the recording or the stimulation, in order (see `Hazard`)."""

    def course_for(self, channel: str) -> tuple[Step, ...]:
        return self.channel_course.get(channel, self.course)


#: Default stage durations (s) of a scripted operation: 8.75 minutes with time_scale 1. Keys: proto's
#: PERIOD_STAGES, in order.
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

if tuple(STAGE_DURATIONS_S) != PERIOD_STAGES:  # one duration per stage that lasts, in proto's order
    raise RuntimeError(f"STAGE_DURATIONS_S names {tuple(STAGE_DURATIONS_S)}; proto's PERIOD_STAGES are {PERIOD_STAGES}")

#: noise-rise: how many times the noise RMS rises (3 → 30 µV broadband; the analyzer's pre-stimulus
#: estimate in its 10-2000 Hz band goes from ~1.1 to ~11 µV, so its detection limit passes the ~80 µV AMR).
NOISE_RISE_FACTOR = 10.0
#: current-spread: peak-to-peak of the direct response on the AMR channels (µV).
SPREAD_UV = 600.0
#: reappearance: stimuli before closure at which the AMR comes back.
REAPPEAR_BEFORE_CLOSURE = 18

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
        Scenario(
            name="noise-rise",
            story="Unchanged ~80 µV AMR; from decompression on the noise rises (an electrode losing contact).",
            patient=LOW_RISK,
            baseline_uv=80.0,
            course=_APPROACH,
            hazards=(Hazard("decompression", delay=2, noise_factor=NOISE_RISE_FACTOR),),
        ),
        Scenario(
            name="stimulator-failure",
            story="The stimulator stops delivering during decompression; the stimulus markers keep coming.",
            patient=LOW_RISK,
            baseline_uv=180.0,
            course=_APPROACH,
            hazards=(Hazard("decompression", delay=10, delivered=False),),
        ),
        Scenario(
            name="current-spread",
            story="Current spread during decompression: a large direct response runs into the AMR window; "
                  "the AMR underneath is gone.",
            patient=HIGH_RISK,
            baseline_uv=180.0,
            course=_APPROACH + (Step("decompression", 0.0, delay=14, ramp=1),),
            hazards=(Hazard("decompression", delay=10, spread_uv=SPREAD_UV),),
        ),
        Scenario(
            name="reappearance",
            story="Gone after decompression, then back before closure (the prosthesis slipped).",
            patient=HIGH_RISK,
            baseline_uv=180.0,
            course=_APPROACH
            + (
                Step("decompression", 0.0, delay=2, ramp=6),
                Step("closure", 1.0, delay=-REAPPEAR_BEFORE_CLOSURE, ramp=4),
            ),
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


def hazard_start(hazard: Hazard, stage_first_stimulus: dict[str, int]) -> int:
    """The first stimulus a hazard applies to."""
    return stage_first_stimulus[hazard.stage] + hazard.delay


def hazard_at(hazards: tuple[Hazard, ...], stage_first_stimulus: dict[str, int], k: int) -> Hazard | None:
    """The hazard in force at stimulus `k` (the last one started), or None."""
    current = None
    for h in hazards:
        if k >= hazard_start(h, stage_first_stimulus):
            current = h
    return current
