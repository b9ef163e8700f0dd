"""The simulator: a scripted MVD rendered as a stream of EMG samples with its
stimuli, stage markers, patient factors and the ground truth of every AMR.

Pure logic: `read(n)` returns the next n samples and whatever happened in
them; pacing and publishing belong to the caller. Randomness is drawn per
block, per stimulus and per channel from generators seeded with
(seed, what, index), so the output is identical however the reads are split.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ....proto.messages import SimTruthBody
from .background import BLOCK_SAMPLES, Background
from .config import SimConfig
from .diathermy import Burst, add_bursts, schedule_bursts
from .montage import SAMPLE_INDEX_MODULUS, SimChannel, sim_channels
from .scenario import Hazard, Timeline, build_timeline, course_fraction, get_scenario, hazard_at, hazard_start
from .waveform import (
    PhaseShape,
    biphasic_shape,
    draw_amr_shape,
    render_response,
    stimulus_artifact,
)

_TAG_STIMULUS = 2
_TAG_CHANNEL = 3
_TAG_EXTRA = 7

#: Stimulus events kept rendered (an event can straddle two blocks).
_EVENT_CACHE = 64

#: Current spread's direct response: a large, polyphasic compound muscle action potential.
_SPREAD_SHAPE = PhaseShape(widths=(0.2, 0.3, 0.3, 0.2), heights=(1.0, 0.8, 0.5, 0.3), first_sign=-1, rise_ms=1.0)


@dataclass(frozen=True)
class SimStimulus:
    stimulus_index: int
    sample_index: int
    direction: str
    intensity_ma: float
    width_ms: float


@dataclass(frozen=True)
class SimChunk:
    first_sample_index: int
    samples: np.ndarray
    """float32, (n_channels, n_samples), µV, C-contiguous."""
    stimuli: list[SimStimulus]
    truths: list[SimTruthBody]
    stages: list[tuple[int, str]]
    factors: list[tuple[int, dict]]


@dataclass(frozen=True)
class ChannelProfile:
    """What stays fixed for one channel during a session."""

    gain: float
    """AMR amplitude relative to the scenario's baseline amplitude."""
    onset_ms: float
    """Mean AMR onset latency."""
    duration_ms: float
    shape: PhaseShape
    artifact_gain: float
    """Signed: electrode distance and orientation relative to the stimulator."""
    direct_onset_ms: float
    direct_gain: float
    direct_sign: int


@dataclass(frozen=True)
class _Event:
    values: np.ndarray
    """(n_emg, event_samples) float64: artifact + direct response + AMR."""
    truths: tuple[SimTruthBody, ...]


class Simulator:
    """A scripted operation (config.scenario) as a deterministic sample stream."""

    def __init__(self, config: SimConfig, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer between 0 and 2**63-1; got {seed!r}")
        self.config = config
        self.seed = int(seed)
        self.channels: list[SimChannel] = sim_channels(config.sample_index_channel, config.extra_channels)
        self._emg = [c for c in self.channels if c.direction is not None]
        self._n_extra = config.extra_channels
        self._scenario = get_scenario(config.scenario)
        self.timeline: Timeline = build_timeline(config)
        self.total_samples: int | None = self.timeline.total_samples
        self._fs = config.sampling_rate_hz
        self._stage_first_stimulus = {
            stage: self.timeline.first_stimulus_at_or_after(sample) for sample, stage in self.timeline.stages
        }
        self.profiles: dict[str, ChannelProfile] = {
            c.name: self._draw_profile(i) for i, c in enumerate(self._emg)
        }
        self._background = Background(config, self.seed, len(self._emg))
        self._noise_changes = self._noise_schedule()
        self.bursts: list[Burst] = schedule_bursts(
            config, self.seed, self.timeline, self._scenario.calibration
        )
        self._event_samples = int(np.ceil(config.ms_to_samples(max(config.amr_end_limit_ms, 6.0)))) + 2
        self._t_ms = np.arange(self._event_samples, dtype=np.float64) * (1000.0 / self._fs)
        self._events: OrderedDict[int, _Event] = OrderedDict()
        self._block_index = -1
        self._block: np.ndarray | None = None
        self._pos = 0

    # --- public state -----------------------------------------------------------

    @property
    def position(self) -> int:
        """Index of the next sample `read` returns."""
        return self._pos

    @property
    def finished(self) -> bool:
        """The `end` marker and its tail have been read."""
        return self._pos >= self.timeline.total_samples

    @property
    def n_stimuli(self) -> int:
        return len(self.timeline.stimulus_samples)

    def stimulus(self, k: int) -> SimStimulus:
        directions = self.config.directions
        return SimStimulus(
            stimulus_index=k,
            sample_index=int(self.timeline.stimulus_samples[k]),
            direction=directions[k % len(directions)],
            intensity_ma=self.config.intensity_ma,
            width_ms=self.config.width_ms,
        )

    def truths(self, k: int) -> list[SimTruthBody]:
        """Ground truth of stimulus `k` on each recording channel of its direction."""
        return list(self._event(k).truths)

    # --- reading ----------------------------------------------------------------

    def read(self, n_samples: int) -> SimChunk:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
            raise ValueError(f"n_samples must be a non-negative integer; got {n_samples!r}")
        n = int(n_samples)
        lo, hi = self._pos, self._pos + n
        out = np.empty((len(self.channels), n), dtype=np.float32)
        filled = 0
        while filled < n:
            b, off = divmod(lo + filled, BLOCK_SAMPLES)
            take = min(BLOCK_SAMPLES - off, n - filled)
            out[:, filled : filled + take] = self._render_block(b)[:, off : off + take]
            filled += take

        samples = self.timeline.stimulus_samples
        ks = range(int(np.searchsorted(samples, lo)), int(np.searchsorted(samples, hi)))
        stimuli = [self.stimulus(k) for k in ks]
        truths = [t for k in ks for t in self._event(k).truths]
        stages = [(s, name) for s, name in self.timeline.stages if lo <= s < hi]
        factors = [(s, dict(f)) for s, f in self.timeline.factors if lo <= s < hi]
        self._pos = hi
        return SimChunk(lo, out, stimuli, truths, stages, factors)

    # --- rendering --------------------------------------------------------------

    def _render_block(self, b: int) -> np.ndarray:
        if b == self._block_index and self._block is not None:
            return self._block
        start = b * BLOCK_SAMPLES
        emg = self._background.render(b, noise_gain=self._noise_gain(start))
        add_bursts(emg, start, self.bursts, self.seed, b, self._fs)
        samples = self.timeline.stimulus_samples
        L = self._event_samples
        first = int(np.searchsorted(samples, start - L + 1))
        last = int(np.searchsorted(samples, start + BLOCK_SAMPLES))
        for k in range(first, last):
            s = int(samples[k])
            ev = self._event(k).values
            a, z = max(s, start), min(s + L, start + BLOCK_SAMPLES)
            emg[:, a - start : z - start] += ev[:, a - s : z - s]
        limit = self.config.amplifier_limit_uv
        np.clip(emg, -limit, limit, out=emg)
        block = np.empty((len(self.channels), BLOCK_SAMPLES), dtype=np.float32)
        block[: len(self._emg)] = emg
        if self._n_extra:
            # Their own generator: the default channels' signal does not depend on how many extras there are.
            rng = np.random.default_rng([self.seed, _TAG_EXTRA, b])
            extra = rng.standard_normal((self._n_extra, BLOCK_SAMPLES), dtype=np.float32)
            extra *= np.float32(self.config.noise_uv)
            block[len(self._emg):len(self._emg) + self._n_extra] = extra
        if self.config.sample_index_channel:
            idx = np.arange(start, start + BLOCK_SAMPLES, dtype=np.int64) % SAMPLE_INDEX_MODULUS
            block[-1] = idx.astype(np.float32)
        self._block_index, self._block = b, block
        return block

    def _noise_schedule(self) -> list[tuple[int, float]]:
        """(sample, noise factor from there on) for the scenario's hazards; empty when none changes it.
        A change takes effect half a stimulus period before its stimulus, so that stimulus's whole
        sweep (pre-stimulus noise window included) is recorded at the new noise."""
        hazards = self._scenario.hazards
        if not any(h.noise_factor != 1.0 for h in hazards):
            return []
        samples = self.timeline.stimulus_samples
        half = int(round(0.5 * self._fs / self.config.effective_stim_rate_hz()))
        out = []
        for h in hazards:
            k = hazard_start(h, self._stage_first_stimulus)
            at = int(samples[k]) if 0 <= k < len(samples) else self.timeline.total_samples
            out.append((max(0, at - half), h.noise_factor))
        return out

    def _noise_gain(self, start: int) -> np.ndarray | None:
        """Per-sample noise factor over the block starting at `start`, or None (all 1)."""
        if not self._noise_changes:
            return None
        n = np.arange(start, start + BLOCK_SAMPLES)
        gain = np.ones(BLOCK_SAMPLES)
        for at, factor in self._noise_changes:
            gain[n >= at] = factor
        return gain

    def _hazard(self, k: int) -> Hazard | None:
        return hazard_at(self._scenario.hazards, self._stage_first_stimulus, k)

    def _draw_profile(self, i: int) -> ChannelProfile:
        cfg = self.config
        rng = np.random.default_rng([self.seed, _TAG_CHANNEL, i])
        onset = float(rng.uniform(*cfg.amr_onset_ms))
        room = cfg.amr_end_limit_ms - onset - cfg.amr_latency_jitter_ms
        duration = min(float(rng.uniform(*cfg.amr_duration_ms)), room / (1.0 + cfg.amr_duration_jitter))
        shape = draw_amr_shape(rng, cfg.amr_phases, cfg.amr_rise_ms)
        return ChannelProfile(
            gain=float(np.exp(rng.uniform(np.log(cfg.channel_gain[0]), np.log(cfg.channel_gain[1])))),
            onset_ms=onset,
            duration_ms=duration,
            shape=shape,
            artifact_gain=float(rng.uniform(0.5, 1.5) * (1 if rng.random() < 0.5 else -1)),
            direct_onset_ms=float(rng.uniform(*cfg.direct_onset_ms)),
            direct_gain=float(rng.uniform(0.5, 1.5)),
            direct_sign=1 if rng.random() < 0.5 else -1,
        )

    def _event(self, k: int) -> _Event:
        cached = self._events.get(k)
        if cached is not None:
            self._events.move_to_end(k)
            return cached
        ev = self._render_event(k)
        self._events[k] = ev
        if len(self._events) > _EVENT_CACHE:
            self._events.popitem(last=False)
        return ev

    def _render_event(self, k: int) -> _Event:
        cfg = self.config
        stim = self.stimulus(k)
        t = self._t_ms
        rng = np.random.default_rng([self.seed, _TAG_STIMULUS, k])
        values = np.zeros((len(self._emg), self._event_samples))
        truths: list[SimTruthBody] = []
        w0, w1 = cfg.truth_window_ms
        sweep = (
            stim.sample_index + int(np.floor(cfg.ms_to_samples(w0))),
            stim.sample_index + int(np.ceil(cfg.ms_to_samples(w1))),
        )
        diathermy = any(b.overlaps(*sweep) for b in self.bursts)
        hazard = self._hazard(k)
        delivered = hazard is None or hazard.delivered
        noise_rms = cfg.noise_uv * (hazard.noise_factor if hazard is not None else 1.0)
        for i, ch in enumerate(self._emg):
            prof = self.profiles[ch.name]
            # Every draw happens whatever the amplitude, so a stimulus's morphology
            # does not depend on the course.
            jitter = float(rng.uniform(-1.0, 1.0)) * cfg.amr_latency_jitter_ms
            stretch = 1.0 + float(rng.uniform(-1.0, 1.0)) * cfg.amr_duration_jitter
            lim = cfg.amr_variability_limit
            variability = float(np.clip(np.exp(rng.normal(0.0, cfg.amr_variability)), 1.0 - lim, 1.0 + lim))
            if self._scenario.calibration:
                amplitude, onset, duration, shape = self._calibration_draw(rng)
            else:
                onset = prof.onset_ms + jitter
                duration = min(prof.duration_ms * stretch, cfg.amr_end_limit_ms - onset)
                shape = prof.shape
                amplitude = self._scripted_amplitude(k, ch.name, prof, variability)
            if not delivered:  # a dead stimulator: nothing evoked, so no AMR in the signal either
                if ch.direction == stim.direction:
                    truths.append(self._absent_truth(k, ch.name, noise_rms, diathermy))
                continue

            values[i] += stimulus_artifact(
                t,
                cfg.intensity_ma * cfg.artifact_uv_per_ma * prof.artifact_gain,
                cfg.width_ms,
                cfg.artifact_decay_ms,
                cfg.artifact_end_ms,
            )
            if ch.direction != stim.direction:
                if cfg.direct_response_uv > 0.0:
                    direct = render_response(
                        biphasic_shape(prof.direct_sign),
                        t,
                        prof.direct_onset_ms,
                        cfg.direct_duration_ms,
                        cfg.direct_response_uv * prof.direct_gain,
                    )
                    values[i] += direct.values
                continue
            if hazard is not None and hazard.spread_uv > 0.0:
                # Current spread: the stimulated branch's own response picked up on this AMR channel.
                values[i] += render_response(
                    _SPREAD_SHAPE, t, hazard.spread_onset_ms + 0.1 * jitter,
                    min(hazard.spread_duration_ms, cfg.amr_end_limit_ms - hazard.spread_onset_ms - 0.2),
                    hazard.spread_uv * variability,
                ).values
            if amplitude > 0.0:
                amr = render_response(shape, t, onset, duration, amplitude)
                values[i] += amr.values
                truths.append(
                    SimTruthBody(
                        stimulus_index=k,
                        channel=ch.name,
                        amplitude_uv=amr.p2p_uv,
                        onset_latency_ms=amr.onset_latency_ms,
                        peak_latency_ms=amr.peak_latency_ms,
                        n_phases=amr.n_phases,
                        noise_rms_uv=noise_rms,
                        diathermy=diathermy,
                    )
                )
            else:
                truths.append(self._absent_truth(k, ch.name, noise_rms, diathermy))
        return _Event(values, tuple(truths))

    @staticmethod
    def _absent_truth(k: int, channel: str, noise_rms: float, diathermy: bool) -> SimTruthBody:
        return SimTruthBody(stimulus_index=k, channel=channel, amplitude_uv=0.0, onset_latency_ms=None,
                        peak_latency_ms=None, n_phases=0, noise_rms_uv=noise_rms, diathermy=diathermy)

    def _scripted_amplitude(self, k: int, channel: str, prof: ChannelProfile, variability: float) -> float:
        steps = self._scenario.course_for(channel)
        fraction = course_fraction(steps, self._stage_first_stimulus, k)
        scale = self._scenario.baseline_uv * prof.gain * self.config.amr_amplitude_scale
        if fraction == 0.0 or scale == 0.0:
            return 0.0
        return scale * fraction * variability

    def _calibration_draw(self, rng: np.random.Generator) -> tuple[float, float, float, PhaseShape]:
        """Amplitude, onset, duration and morphology of one calibration AMR."""
        cfg = self.config
        absent = rng.random() < cfg.calibration_absent_fraction
        lo, hi = cfg.calibration_amplitude_uv
        amplitude = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * cfg.amr_amplitude_scale
        onset = float(rng.uniform(*cfg.amr_onset_ms)) + float(rng.uniform(-1.0, 1.0)) * cfg.amr_latency_jitter_ms
        duration = min(float(rng.uniform(*cfg.amr_duration_ms)), cfg.amr_end_limit_ms - onset)
        shape = draw_amr_shape(rng, cfg.amr_phases, cfg.amr_rise_ms)
        return (0.0 if absent else amplitude), onset, duration, shape
