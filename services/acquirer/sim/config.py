"""Every number the simulator uses, with docs/domain.md defaults and allowed ranges.

A bad value fails at construction with a message naming the field, its
allowed range and the value given, so a typo in `--sim-*` flags or a test
never produces a silently different signal.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator

from ....proto.messages import PERIOD_STAGES, Direction

#: Stages whose duration a scenario scripts: proto's stages that last a while (`decompression_complete` is
#: placed inside decompression, `end` has a fixed tail instead).
TIMED_STAGES: tuple[str, ...] = PERIOD_STAGES


def _fmt(x: float) -> str:
    return f"{x:g}"


def _within(lo: float, hi: float, unit: str = ""):
    """A validator: the field must lie in [lo, hi]; the error names field, range and value."""
    suffix = f" {unit}" if unit else ""

    def check(value, info: ValidationInfo):
        if not (lo <= value <= hi):
            raise ValueError(
                f"{info.field_name} must be between {_fmt(lo)} and {_fmt(hi)}{suffix}; got {value!r}"
            )
        return value

    return AfterValidator(check)


def _pair_within(lo: float, hi: float, unit: str = ""):
    """A validator for a (low, high) range setting: both ends in [lo, hi] and low <= high."""
    suffix = f" {unit}" if unit else ""

    def check(value, info: ValidationInfo):
        a, b = value
        if not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise ValueError(
                f"{info.field_name} must be a (low, high) pair with "
                f"{_fmt(lo)} <= low <= high <= {_fmt(hi)}{suffix}; got {tuple(value)!r}"
            )
        return value

    return AfterValidator(check)


def _unique_directions(value, info: ValidationInfo):
    if not value or len(set(value)) != len(value):
        raise ValueError(
            f"{info.field_name} must list 'ZYG' and/or 'MAR' once each (1 to 2 entries); got {value!r}"
        )
    return value


def _known_scenario(value, info: ValidationInfo):
    from .scenario import scenario_names

    names = scenario_names()
    if value not in names:
        raise ValueError(f"{info.field_name} must be one of {names}; got {value!r}")
    return value


def _stage_durations(value, info: ValidationInfo):
    for stage, seconds in value.items():
        if stage not in TIMED_STAGES:
            raise ValueError(
                f"{info.field_name} keys must be among {list(TIMED_STAGES)}; got {stage!r}"
            )
        if not (0.0 <= seconds <= 7200.0):
            raise ValueError(
                f"{info.field_name}[{stage!r}] must be between 0 and 7200 s; got {seconds!r}"
            )
    return value


class SimConfig(BaseModel):
    """Settings of the physiological AMR simulator (defaults from docs/domain.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    # --- the story -----------------------------------------------------------
    scenario: Annotated[str, AfterValidator(_known_scenario)] = "disappears-after-decompression"
    time_scale: Annotated[float, _within(0.01, 100.0)] = 1.0
    """Multiplies every scripted stage duration (tests use e.g. 0.1); the calibration
    scenario's length is set by calibration_stimuli instead."""
    stage_durations_s: Annotated[dict[str, float], AfterValidator(_stage_durations)] = {}
    """Overrides of the scenario's stage durations (before time_scale; not for calibration)."""
    end_tail_s: Annotated[float, _within(1.0, 60.0, "s")] = 2.0
    """Signal after the `end` marker, so the last sweep is complete."""

    # --- acquisition -----------------------------------------------------------
    sampling_rate_hz: Annotated[float, _within(1000.0, 50000.0, "Hz")] = 20000.0
    sample_index_channel: bool = False
    """Adds a channel SAMPLE_INDEX = absolute sample index mod 2**24 (exact in float32)."""
    extra_channels: Annotated[int, _within(0, 240, "channels")] = 0
    """Adds EMG channels EXTRA01.. on no AMR pathway (background only), e.g. to load the chain
    with a 16-channel montage; the three default channels are unchanged by them."""
    amplifier_limit_uv: Annotated[float, _within(100.0, 1_000_000.0, "µV")] = 5000.0
    """The amplifier saturates here (diathermy clips to ± this)."""

    # --- stimulation -----------------------------------------------------------
    stim_rate_hz: Annotated[float, _within(0.5, 2.0, "Hz")] = 1.0
    """Total rate; the directions alternate ZYG, MAR, ZYG, ..."""
    directions: Annotated[list[Direction], AfterValidator(_unique_directions)] = [
        "ZYG",
        "MAR",
    ]
    intensity_ma: Annotated[float, _within(5.0, 25.0, "mA")] = 15.0
    width_ms: Annotated[float, _within(0.05, 1.0, "ms")] = 0.2
    first_stimulus_s: Annotated[float, _within(0.05, 10.0, "s")] = 0.5

    # --- stimulus artifact and direct response ---------------------------------
    artifact_uv_per_ma: Annotated[float, _within(0.0, 1000.0, "µV/mA")] = 60.0
    artifact_decay_ms: Annotated[float, _within(0.05, 2.0, "ms")] = 0.5
    artifact_end_ms: Annotated[float, _within(0.5, 5.5, "ms")] = 4.0
    """The artifact is tapered to exactly zero here (well before the 6 ms window)."""
    direct_response_uv: Annotated[float, _within(0.0, 2000.0, "µV")] = 40.0
    """Peak-to-peak of the stimulated branch's own muscle response on the other direction's channels."""
    direct_onset_ms: Annotated[tuple[float, float], _pair_within(1.0, 5.0, "ms")] = (2.0, 3.0)
    direct_duration_ms: Annotated[float, _within(0.3, 4.0, "ms")] = 2.0

    # --- the AMR ---------------------------------------------------------------
    amr_amplitude_scale: Annotated[float, _within(0.0, 10.0)] = 1.0
    amr_onset_ms: Annotated[tuple[float, float], _pair_within(6.0, 20.0, "ms")] = (9.0, 12.0)
    """Range of each channel's mean onset latency."""
    amr_latency_jitter_ms: Annotated[float, _within(0.0, 2.0, "ms")] = 0.3
    """Stimulus-to-stimulus onset jitter (uniform, ± this) around the channel's mean."""
    amr_duration_ms: Annotated[tuple[float, float], _pair_within(1.0, 30.0, "ms")] = (5.0, 15.0)
    amr_duration_jitter: Annotated[float, _within(0.0, 0.3)] = 0.05
    """Stimulus-to-stimulus relative jitter of the duration (uniform, ± this)."""
    amr_end_limit_ms: Annotated[float, _within(10.0, 50.0, "ms")] = 25.0
    """Latest end of an AMR: the analysis window's end, so the true p2p is measurable in it."""
    amr_phases: Annotated[tuple[int, int], _pair_within(1, 8, "phases")] = (1, 4)
    amr_rise_ms: Annotated[tuple[float, float], _pair_within(0.05, 3.0, "ms")] = (0.3, 0.7)
    """Onset-to-first-peak time: the steep rise that makes the onset well defined."""
    amr_variability: Annotated[float, _within(0.0, 0.5)] = 0.1
    """SD of the stimulus-to-stimulus log amplitude."""
    amr_variability_limit: Annotated[float, _within(0.0, 0.9)] = 0.25
    """The stimulus-to-stimulus factor is clipped to 1 ± this."""
    channel_gain: Annotated[tuple[float, float], _pair_within(0.1, 10.0)] = (0.8, 1.25)
    """Range of each channel's amplitude relative to the scenario's baseline amplitude."""

    # --- background ------------------------------------------------------------
    noise_uv: Annotated[float, _within(0.0, 200.0, "µV RMS")] = 3.0
    mains_hz: Annotated[float, _within(40.0, 70.0, "Hz")] = 50.0
    mains_uv: Annotated[float, _within(0.0, 1000.0, "µV")] = 4.0
    """Amplitude of the mains fundamental."""
    mains_harmonic: Annotated[int, _within(2, 9)] = 3
    mains_harmonic_ratio: Annotated[float, _within(0.0, 1.0)] = 0.3
    wander_uv: Annotated[float, _within(0.0, 2000.0, "µV")] = 15.0
    """Amplitude bound of the slow baseline wander (a sum of slow sinusoids)."""
    wander_max_hz: Annotated[float, _within(0.01, 2.0, "Hz")] = 1.0

    # --- diathermy -------------------------------------------------------------
    diathermy: bool = True
    """Bursts of electrocautery during the surgical stages (incision .. closure)."""
    diathermy_bursts_per_stage: Annotated[tuple[int, int], _pair_within(0, 20, "bursts")] = (1, 3)
    diathermy_duration_s: Annotated[tuple[float, float], _pair_within(0.1, 60.0, "s")] = (1.0, 4.0)
    diathermy_rms_uv: Annotated[tuple[float, float], _pair_within(0.0, 100_000.0, "µV")] = (
        1500.0,
        8000.0,
    )
    truth_window_ms: Annotated[tuple[float, float], _pair_within(-1000.0, 1000.0, "ms")] = (
        -10.0,
        50.0,
    )
    """A stimulus's truth is flagged `diathermy` when a burst overlaps this window."""

    # --- the calibration scenario --------------------------------------------------
    calibration_stimuli: Annotated[int, _within(1, 1_000_000, "stimuli")] = 2000
    calibration_stim_rate_hz: Annotated[float, _within(0.5, 15.0, "Hz")] = 10.0
    """Faster than clinical stimulation so thousands of sweeps render in seconds."""
    calibration_absent_fraction: Annotated[float, _within(0.0, 1.0)] = 0.3
    calibration_amplitude_uv: Annotated[tuple[float, float], _pair_within(0.1, 5000.0, "µV")] = (
        5.0,
        1000.0,
    )
    calibration_diathermy: bool = False
    """Add diathermy bursts to the calibration scenario (for rejection tests)."""

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        nyquist = self.sampling_rate_hz / 2.0
        top = self.mains_hz * self.mains_harmonic
        if self.mains_uv > 0 and self.mains_harmonic_ratio > 0 and top >= nyquist:
            raise ValueError(
                f"mains_harmonic: {self.mains_harmonic} x mains_hz {self.mains_hz:g} Hz = {top:g} Hz "
                f"must be below the Nyquist frequency {nyquist:g} Hz of sampling_rate_hz"
            )
        direct_end = self.direct_onset_ms[1] + self.direct_duration_ms
        if direct_end > 5.5:
            raise ValueError(
                "direct_onset_ms high end + direct_duration_ms must be at most 5.5 ms so the direct "
                f"response stays before the 6 ms analysis window; got {direct_end:g} ms"
            )
        if self.artifact_end_ms <= self.width_ms:
            raise ValueError(
                f"artifact_end_ms must exceed width_ms ({self.width_ms:g} ms); got {self.artifact_end_ms:g}"
            )
        earliest = self.amr_onset_ms[0] - self.amr_latency_jitter_ms
        if earliest < 6.0:
            raise ValueError(
                "amr_onset_ms low end - amr_latency_jitter_ms must be at least 6 ms (the analysis "
                f"window's start); got {earliest:g} ms"
            )
        room = self.amr_end_limit_ms - (self.amr_onset_ms[1] + self.amr_latency_jitter_ms)
        shortest = self.amr_duration_ms[0] * (1.0 + self.amr_duration_jitter)
        if room < shortest:
            raise ValueError(
                f"amr_end_limit_ms must leave room for the shortest AMR ({shortest:g} ms) after the "
                f"latest onset; got {self.amr_end_limit_ms:g} ms"
            )
        if self.amr_rise_ms[1] >= self.amr_duration_ms[0] / self.amr_phases[1]:
            raise ValueError(
                "amr_rise_ms high end must be shorter than the shortest phase "
                f"(amr_duration_ms low / amr_phases high = "
                f"{self.amr_duration_ms[0] / self.amr_phases[1]:g} ms); got {self.amr_rise_ms[1]:g}"
            )
        return self

    # --- derived quantities, in samples -----------------------------------------

    def ms_to_samples(self, ms: float) -> float:
        return ms * self.sampling_rate_hz / 1000.0

    def effective_stim_rate_hz(self) -> float:
        """The calibration scenario stimulates at its own, faster rate."""
        return self.calibration_stim_rate_hz if self.scenario == "calibration" else self.stim_rate_hz
