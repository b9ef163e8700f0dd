"""Every number the analyzer uses, with the docs/domain.md defaults.

A bad value fails at construction with a message that names the field, the
allowed range and the value given. Settings are frozen: the numbers an
analysis used are the numbers it reports, and replaying an archive with the
same settings must give the same measurements.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator


def _fmt(x: float) -> str:
    return f"{x:g}"


def _within(lo: float, hi: float, unit: str = ""):
    suffix = f" {unit}" if unit else ""

    def check(value, info: ValidationInfo):
        if not (lo <= value <= hi):
            raise ValueError(f"{info.field_name} must be between {_fmt(lo)} and {_fmt(hi)}{suffix}; got {value!r}")
        return value

    return AfterValidator(check)


def _window(lo: float, hi: float, unit: str = "ms"):
    """A (start, end) pair with lo <= start < end <= hi."""

    def check(value, info: ValidationInfo):
        a, b = value
        if not (lo <= a < b <= hi):
            raise ValueError(
                f"{info.field_name} must be a (start, end) pair with {_fmt(lo)} <= start < end <= "
                f"{_fmt(hi)} {unit}; got {tuple(value)!r}"
            )
        return value

    return AfterValidator(check)


Window = tuple[float, float]


class AnalyzerSettings(BaseModel):
    """How sweeps are cut, conditioned, measured and followed (docs/domain.md, "Recording protocol")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # --- epoching --------------------------------------------------------------
    sweep_ms: Annotated[Window, _window(-1000.0, 1000.0)] = (-20.0, 50.0)
    """The sweep cut around each stimulus: pre-stimulus noise, artifact, response."""
    buffer_s: Annotated[float, _within(1.0, 600.0, "s")] = 10.0
    """Signal kept in the ring buffer; a stimulus whose sweep is older is refused as stale."""

    # --- conditioning ------------------------------------------------------------
    blank_ms: Annotated[Window, _window(-5.0, 10.0)] = (0.0, 3.0)
    """Stimulus artifact, replaced by a straight line between its edges."""
    bandpass_hz: Annotated[Window, _window(0.1, 20_000.0, "Hz")] = (10.0, 2000.0)
    """Zero-phase Butterworth band-pass (DOMAIN: ~10-30 Hz to 1.5-3 kHz). The low edge sits at
    10 Hz because the trend fit already removes drift, and a 30 Hz edge distorts long monophasic
    AMRs; the high edge at 2 kHz keeps the AMR's steepest rise and halves the noise's bandwidth."""
    filter_order: Annotated[int, _within(1, 8)] = 1
    """Butterworth order of each band edge before forward-backward filtering (which doubles it)."""
    filter_method: Literal["fft", "sosfiltfilt"] = "fft"
    """How the zero-phase response |H(f)|² is applied: 'fft' multiplies the sweep's spectrum by
    it (4x faster on 16 channels); 'sosfiltfilt' runs the sections forward and backward. They
    differ only in edge handling (see condition.py)."""
    mains_mode: Literal["fit", "notch", "off"] = "fit"
    """fit: least-squares removal of mains harmonics with the baseline trend, on the sweep
    outside the blank and analysis windows; notch: zero-phase IIR notches; off: trend only."""
    mains_hz: Annotated[float, _within(40.0, 70.0, "Hz")] = 50.0
    mains_harmonics: Annotated[int, _within(1, 20)] = 3
    """Harmonics removed (1 = the fundamental only)."""
    notch_q: Annotated[float, _within(1.0, 200.0)] = 30.0
    """Quality factor of each notch (mains_mode 'notch')."""

    # --- measures ----------------------------------------------------------------
    analysis_ms: Annotated[Window, _window(0.0, 1000.0)] = (6.0, 25.0)
    """Where the AMR is measured (after the direct response of the stimulated branch)."""
    noise_ms: Annotated[Window, _window(-1000.0, 0.0)] = (-20.0, -1.0)
    """Pre-stimulus window whose RMS is the sweep's noise estimate."""
    present_noise_factor: Annotated[float, _within(1.0, 100.0)] = 10.0
    """`present` needs p2p >= this x the noise RMS (with the default windows and band, pure
    noise exceeds 8x in fewer than 1% of sweeps) ..."""
    present_floor_uv: Annotated[float, _within(0.0, 10_000.0, "µV")] = 20.0
    """... and p2p >= this absolute floor."""
    onset_levels: Annotated[Window, _window(0.01, 0.99, "(fractions of the largest excursion)")] = (0.15, 0.35)
    """The AMR's first phase is the first excursion reaching the high level (a fraction of the
    largest one); its onset is the line through its rise at the low and high levels,
    extrapolated back to zero."""
    phase_fraction: Annotated[float, _within(0.01, 0.95)] = 0.25
    """A phase counts when it reaches this fraction of the largest excursion ..."""
    phase_noise_factor: Annotated[float, _within(0.0, 100.0)] = 3.0
    """... and this multiple of the noise RMS."""

    # --- rejection -----------------------------------------------------------------
    saturation_uv: Annotated[float, _within(10.0, 1e7, "µV")] = 5000.0
    """A raw sample at or beyond ± this (the amplifier's range) marks the sweep saturated."""
    diathermy_diff_rms_uv: Annotated[float, _within(1.0, 1e7, "µV")] = 400.0
    """RMS of the sample-to-sample difference in any block above which the sweep is diathermy:
    electrocautery is broadband, the AMR and ordinary noise are not."""
    diathermy_block_ms: Annotated[float, _within(0.5, 100.0, "ms")] = 5.0

    # --- baseline and course ---------------------------------------------------------
    baseline_min_sweeps: Annotated[int, _within(1, 10_000)] = 3
    """Good sweeps needed in the `baseline` stage before a baseline is taken from it."""
    baseline_first_n: Annotated[int, _within(1, 10_000)] = 10
    """Without a baseline stage: the baseline is the median of the first N good sweeps."""
    baseline_min_present_fraction: Annotated[float, _within(0.0, 1.0)] = 0.5
    """Below this share of present sweeps the channel has no AMR at baseline (baseline 0)."""
    diminished_pct: Annotated[float, _within(0.0, 100.0, "%")] = 50.0
    """A present AMR below this percent of baseline counts towards `diminished`."""
    disappear_k: Annotated[int, _within(1, 1000)] = 5
    """Consecutive good absent sweeps for `disappeared` (DOMAIN: K = 5)."""
    confirm_k: Annotated[int, _within(1, 1000)] = 3
    """Consecutive good sweeps that confirm `present`, `diminished` or `reappeared`."""
    final_sweeps: Annotated[int, _within(1, 1000)] = 5
    """The final amplitude is the median of the last N good sweeps of each channel."""

    # --- can this sweep tell? (what a neurophysiologist checks before believing a loss) ----------
    detectability_fraction: Annotated[float, _within(0.1, 1.0)] = 0.5
    """An absent sweep counts as `absent` only if its detection limit (max(present_noise_factor x
    noise, present_floor_uv): the smallest p2p that would have counted as present) is at most this
    fraction of the channel's reference amplitude (its baseline; before one, the median p2p of its
    present sweeps so far); otherwise it is `not_assessable` (noise_too_high). The noise-floor check
    a neurophysiologist makes before believing a disappearance: could an AMR of half the baseline
    size still have been seen? Above 1.0 a sweep too noisy to show even a baseline-size AMR would
    count as its absence, so larger values are refused."""
    quality_alarm_sweeps: Annotated[int, _within(1, 100)] = 5
    """Consecutive good sweeps of a channel whose detection limit is above the detectability bound
    raise a `recording_quality` alarm; as many within it clear it. 5 = disappear_k: the team hears
    that a channel cannot show a disappearance no later than one could have been declared."""

    # --- was the stimulus delivered? -------------------------------------------------------------
    stimulus_check: Literal["artifact_or_direct", "direct"] = "artifact_or_direct"
    """How each stimulus is confirmed from the recording (besides an AMR being seen):
    'artifact_or_direct': the stimulus artifact on any EMG channel, or the direct response of a
    muscle the stimulated branch supplies; 'direct': only the direct response, for amplifiers
    that blank the artifact (a blanking step is triggered by the stimulator's trigger, so it is
    there whether or not current flowed and proves nothing). There is no 'off': an unconfirmed
    stimulus cannot show that an AMR is gone."""
    artifact_window_ms: Annotated[Window, _window(-1.0, 5.0)] = (0.0, 2.0)
    """Where the stimulus artifact is looked for: the pulse (0.1-0.3 ms) and the amplifier's
    recovery from it, before any direct response."""
    artifact_factor: Annotated[float, _within(5.0, 1000.0)] = 10.0
    """The artifact counts when the raw, offset-removed peak in artifact_window_ms reaches this x
    the RMS of the raw pre-stimulus window (noise_ms, mains and wander included) ... (below 5x a
    noise peak among the window's samples could pass for an artifact, so lower values are refused)"""
    artifact_floor_uv: Annotated[float, _within(10.0, 100_000.0, "µV")] = 50.0
    """... and this absolute floor: an artifact at the face is hundreds of µV to mV; a few tens of
    µV is EMG or movement."""
    direct_window_ms: Annotated[Window, _window(0.0, 10.0)] = (2.0, 6.0)
    """Where the direct (M-wave) response of a muscle the stimulated branch supplies is looked for
    (orbicularis oculi for ZYG, mentalis / orbicularis oris for MAR; latency ~2-5 ms). Measured
    on the conditioned sweep after the artifact blank, and counted with the `present` rule
    (present_noise_factor, present_floor_uv)."""
    stimulation_failure_stimuli: Annotated[int, _within(1, 20)] = 3
    """Consecutive unconfirmed stimuli of one direction that raise the high-priority
    `stimulation_failure` alarm (cleared by the next confirmed one). 3: fewer than disappear_k, so
    the team hears of the stimulator before a disappearance could have been declared; more than 1,
    so one marginal sweep does not alarm. At 1 Hz alternating ZYG/MAR that is ~6 s."""

    # --- is it an AMR at all? (latency gate) -----------------------------------------------------
    amr_onset_min_ms: Annotated[float, _within(5.0, 10.0, "ms")] = 7.0
    """A response whose measured onset is earlier than this, with activity before it above the
    onset level and half the detection limit, is a direct response from current spread, not an
    AMR (the AMR starts ~8-12 ms after the stimulus, the direct response 2-5 ms). Below 5 ms a
    direct response would pass as an AMR; above 10 ms real AMRs would be refused."""
    underway_fraction: Annotated[float, _within(0.3, 0.9)] = 0.5
    """A response already under way when the analysis window opens — |conditioned signal| in its
    first underway_ms at least this fraction of the window's largest excursion and half the
    detection limit — started before the window: a direct response, not an AMR. Not below 0.3:
    the band-pass's 10 Hz edge lays a slow offset of up to ~0.3 of a long monophasic AMR's size
    under the whole window, which is not a response under way."""
    underway_ms: Annotated[float, _within(0.05, 3.0, "ms")] = 0.5
    """The start of the analysis window looked at for a response already under way."""
    direct_alarm_sweeps: Annotated[int, _within(1, 100)] = 3
    """Consecutive direct-response sweeps on a channel that raise the advisory `direct_response`
    alarm (lower the intensity, check the stimulating electrode); a good sweep without one clears it."""

    @model_validator(mode="after")
    def _consistent(self) -> AnalyzerSettings:
        s0, s1 = self.sweep_ms
        for name in ("blank_ms", "analysis_ms", "noise_ms"):
            a, b = getattr(self, name)
            if a < s0 or b > s1:
                raise ValueError(f"{name} {(a, b)!r} must lie inside sweep_ms {(s0, s1)!r}")
        if self.noise_ms[1] > self.blank_ms[0]:
            raise ValueError(
                f"noise_ms must end before the artifact blank starts ({self.blank_ms[0]:g} ms); "
                f"got {self.noise_ms!r}"
            )
        if self.analysis_ms[0] < self.blank_ms[1]:
            raise ValueError(
                f"analysis_ms must start after the artifact blank ends ({self.blank_ms[1]:g} ms); "
                f"got {self.analysis_ms!r}"
            )
        if self.direct_window_ms[1] <= self.blank_ms[1]:
            raise ValueError(
                f"direct_window_ms must end after the artifact blank ends ({self.blank_ms[1]:g} ms), or no "
                f"direct response can be seen; got {self.direct_window_ms!r}"
            )
        a0, a1 = self.analysis_ms
        if self.underway_ms >= a1 - a0:
            raise ValueError(f"underway_ms must be shorter than analysis_ms; got {self.underway_ms:g}")
        return self

    def check_rate(self, sampling_rate_hz: float) -> None:
        """Refuse settings a sampling rate cannot honour (Nyquist, mains harmonics)."""
        nyquist = sampling_rate_hz / 2.0
        if self.bandpass_hz[1] >= nyquist:
            raise ValueError(
                f"bandpass_hz high edge must be below the Nyquist frequency {nyquist:g} Hz of "
                f"{sampling_rate_hz:g} Hz sampling; got {self.bandpass_hz[1]:g} Hz"
            )
        if self.mains_mode != "off" and self.mains_hz * self.mains_harmonics >= nyquist:
            raise ValueError(
                f"mains_harmonics {self.mains_harmonics} x mains_hz {self.mains_hz:g} Hz must be below "
                f"the Nyquist frequency {nyquist:g} Hz; got {self.mains_hz * self.mains_harmonics:g} Hz"
            )
        if self.sweep_ms[1] - self.sweep_ms[0] < 10 * 1000.0 / sampling_rate_hz:
            raise ValueError(
                f"sweep_ms must span at least 10 samples at {sampling_rate_hz:g} Hz; got {self.sweep_ms!r}"
            )


def parse_overrides(items: list[str], base: AnalyzerSettings | None = None) -> AnalyzerSettings:
    """`KEY=VALUE` strings (command line) → settings, over `base` (the defaults if None); pairs are
    written `LOW,HIGH`."""
    import json

    values: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in AnalyzerSettings.model_fields:
            raise ValueError(
                f"--set expects KEY=VALUE with KEY one of {sorted(AnalyzerSettings.model_fields)}; got {item!r}"
            )
        text = raw.strip()
        if "," in text:
            values[key] = tuple(json.loads(p) for p in text.split(","))
        else:
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError:
                values[key] = text
    return AnalyzerSettings(**{**(base.model_dump() if base is not None else {}), **values})
