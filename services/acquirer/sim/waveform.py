"""Clean evoked waveforms of one sweep: the AMR, the direct muscle response
and the stimulus artifact, each a pure function of time after the stimulus.

The AMR is a train of alternating-sign phases that is exactly zero before its
onset and rises to its first peak within a fraction of a millisecond, so its
onset is physically defined and a threshold detector can find it without a
shape-dependent bias. Its amplitude is normalised on the sample grid, so the
peak-to-peak the truth reports is the one a perfect measurement would read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhaseShape:
    """Morphology of a (mono- or poly-)phasic response, independent of its size and timing."""

    widths: tuple[float, ...]
    """Relative width of each phase (they sum to 1)."""
    heights: tuple[float, ...]
    """Relative height of each phase (positive; signs alternate)."""
    first_sign: int
    """+1 or -1: polarity of the first phase."""
    rise_ms: float
    """Onset to first peak."""

    @property
    def n_phases(self) -> int:
        return len(self.widths)


@dataclass(frozen=True)
class RenderedResponse:
    values: np.ndarray
    """µV at the requested sample times (float64)."""
    p2p_uv: float
    onset_latency_ms: float
    peak_latency_ms: float
    """Time (after the stimulus) of the sample with the largest |value|."""
    n_phases: int


def draw_amr_shape(
    rng: np.random.Generator,
    phases: tuple[int, int],
    rise_ms: tuple[float, float],
) -> PhaseShape:
    """A random but plausible AMR morphology: 1-4 phases of unequal width and height."""
    n = int(rng.integers(phases[0], phases[1] + 1))
    weights = rng.uniform(0.7, 1.3, size=n)
    widths = tuple(float(w) for w in weights / weights.sum())
    heights = [float(rng.uniform(0.7, 1.0))] + [float(h) for h in rng.uniform(0.4, 1.0, size=n - 1)]
    sign = 1 if rng.random() < 0.5 else -1
    return PhaseShape(widths, tuple(heights), sign, float(rng.uniform(*rise_ms)))


def biphasic_shape(sign: int) -> PhaseShape:
    """The direct (M-wave-like) response: two equal, symmetric phases."""
    return PhaseShape((0.5, 0.5), (1.0, 0.8), sign, rise_ms=0.0)


def shape_values(shape: PhaseShape, t_ms: np.ndarray, duration_ms: float) -> np.ndarray:
    """Unit-scale waveform at times `t_ms` after onset; exactly 0 outside [0, duration).

    Each phase is an asymmetric half sine: it rises over a fraction `rho` of its
    width and falls over the rest. The first phase rises in `rise_ms` (steep);
    the others are symmetric.
    """
    t = np.asarray(t_ms, dtype=np.float64)
    out = np.zeros_like(t)
    start = 0.0
    sign = float(shape.first_sign)
    for i, (w_rel, h) in enumerate(zip(shape.widths, shape.heights)):
        width = w_rel * duration_ms
        if i == 0 and shape.rise_ms > 0.0:
            rho = min(shape.rise_ms / width, 0.6)
        else:
            rho = 0.5
        lo = np.searchsorted(t, start, side="left")
        hi = np.searchsorted(t, start + width, side="left")
        u = (t[lo:hi] - start) / width
        rising = u < rho
        phase = np.where(
            rising,
            np.sin(0.5 * np.pi * u / rho),
            np.cos(0.5 * np.pi * (u - rho) / (1.0 - rho)),
        )
        out[lo:hi] = sign * h * phase
        start += width
        sign = -sign
    return out


def render_response(
    shape: PhaseShape,
    t_ms: np.ndarray,
    onset_ms: float,
    duration_ms: float,
    p2p_uv: float,
) -> RenderedResponse:
    """The response at sample times `t_ms` (ms after the stimulus, increasing), scaled so
    that the peak-to-peak of the returned samples is exactly `p2p_uv`."""
    unit = shape_values(shape, np.asarray(t_ms, dtype=np.float64) - onset_ms, duration_ms)
    span = float(unit.max() - unit.min())
    if span <= 0.0:
        raise ValueError(
            f"the response (onset {onset_ms:g} ms, duration {duration_ms:g} ms) falls outside "
            f"the rendered times {float(t_ms[0]):g}..{float(t_ms[-1]):g} ms"
        )
    values = unit * (p2p_uv / span)
    k = int(np.argmax(np.abs(values)))
    return RenderedResponse(
        values=values,
        p2p_uv=float(values.max() - values.min()),
        onset_latency_ms=float(onset_ms),
        peak_latency_ms=float(t_ms[k]),
        n_phases=shape.n_phases,
    )


def stimulus_artifact(
    t_ms: np.ndarray,
    amplitude_uv: float,
    width_ms: float,
    decay_ms: float,
    end_ms: float,
) -> np.ndarray:
    """Pulse feed-through during the pulse, then the amplifier's reverse recovery
    decaying exponentially; tapered (cosine, last 1 ms) to exactly zero at `end_ms`."""
    t = np.asarray(t_ms, dtype=np.float64)
    out = np.zeros_like(t)
    during = (t >= 0.0) & (t < width_ms)
    out[during] = amplitude_uv
    after = (t >= width_ms) & (t < end_ms)
    ta = t[after]
    tail = -0.5 * amplitude_uv * np.exp(-(ta - width_ms) / decay_ms)
    taper_start = max(width_ms, end_ms - 1.0)
    taper = np.where(
        ta < taper_start,
        1.0,
        0.5 + 0.5 * np.cos(np.pi * (ta - taper_start) / max(end_ms - taper_start, 1e-9)),
    )
    out[after] = tail * taper
    return out
