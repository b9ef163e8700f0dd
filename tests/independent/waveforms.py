"""A physiology model of AMR recordings written apart from the project's simulator.

Why a second model: a monitor graded only on recordings from its own
simulator can share that simulator's blind spots (same artifact shape, same
AMR morphology, same noise spectrum). This module shares no code with
services/acquirer/sim or tests/analyzer/edfwrite.py and makes different
choices on purpose:

- background noise: white plus 1/f ("pink") noise, shaped in the frequency
  domain and band-limited to the amplifier's pass band with cosine edges,
  scaled so that a 20 ms window, its straight-line trend removed, has the
  stated RMS (µV) — what a pre-stimulus noise window shows;
- mains: 50 Hz with 150 and 250 Hz harmonics whose amplitude drifts slowly;
- wander: a few sub-hertz sinusoids (electrode polarisation);
- stimulus artifact: a sharp biphasic transient — the pulse itself (positive
  for the pulse width, 10 µs rise) then a negative lobe ``t/τ·e^{1-t/τ}``
  (τ = 0.12 ms) — on every channel, hundreds of µV, over within ~1 ms;
- direct response (the compound muscle action potential of the muscle the
  stimulated branch supplies): a first-order Hermite function (biphasic),
  onset ~3.5 ms, ~4 ms long;
- AMR: a gamma-windowed oscillation (``(t/θ)^k e^{-t/θ}·sin``) on one channel
  and second- and third-order Hermite functions on the others, onset ~10 ms,
  5–15 ms long; every template is scaled to an exact peak-to-peak.

Everything is in µV, sampled at ``FS``; every random draw comes from the
generator handed in, so a recording is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FS = 20_000
"""Sampling rate (Hz)."""
CHANNELS: tuple[str, ...] = ("MENT", "OORIS", "OOCUL")
"""Labels as the EDF reader recognises them (services/acquirer/labels.py): mentalis and orbicularis
oris record the ZYG lateral spread, orbicularis oculi the MAR one."""
AMR_CHANNELS: dict[str, tuple[str, ...]] = {"ZYG": ("MENT", "OORIS"), "MAR": ("OOCUL",)}
"""Where each stimulated branch's AMR is recorded (the *other* branch's muscles)."""
OWN_MUSCLE: dict[str, tuple[str, ...]] = {"ZYG": ("OOCUL",), "MAR": ("MENT", "OORIS")}
"""Where each stimulated branch's own direct response is recorded (docs/domain.md, "What a neurophysiologist
checks before believing a disappearance")."""
BAND_HZ = (20.0, 1500.0)
"""The amplifier's pass band the background noise is limited to."""


def ms(x: float) -> int:
    """Milliseconds → samples."""
    return int(round(x * FS / 1000.0))


def p2p_scaled(shape: np.ndarray, p2p_uv: float) -> np.ndarray:
    """`shape` scaled to an exact peak-to-peak (0 stays 0)."""
    span = float(np.ptp(shape))
    return shape * (p2p_uv / span) if span > 0 else shape * 0.0


# --------------------------------------------------------------------------- #
# Continuous background


def band_noise(n: int, rng: np.random.Generator, *, pink_share: float = 0.5, band=BAND_HZ) -> np.ndarray:
    """Unit-RMS noise: white + 1/f power in `pink_share`, band-limited with cosine edges."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1.0 / FS)
    lo, hi = band
    f_safe = np.maximum(f, lo)
    white = np.ones_like(f)
    pink = np.sqrt(lo / f_safe)  # amplitude ∝ 1/√f, power ∝ 1/f
    # Equal power in band for each part before mixing.
    inb = (f >= lo) & (f <= hi)
    white /= np.sqrt(np.mean(white[inb] ** 2))
    pink /= np.sqrt(np.mean(pink[inb] ** 2))
    gain = np.sqrt((1 - pink_share) * white**2 + pink_share * pink**2)
    # Cosine edges an octave wide below `lo` and a fifth above `hi` (an analogue filter's skirts).
    edge = np.zeros_like(f)
    edge[inb] = 1.0
    below = (f >= lo / 2) & (f < lo)
    edge[below] = 0.5 - 0.5 * np.cos(np.pi * (f[below] - lo / 2) / (lo / 2))
    above = (f > hi) & (f <= hi * 1.5)
    edge[above] = 0.5 + 0.5 * np.cos(np.pi * (f[above] - hi) / (hi / 2))
    x = np.fft.irfft(spec * gain * edge, n)
    return x / window_rms(x)


def window_rms(x: np.ndarray, window_ms: float = 20.0) -> float:
    """RMS of `x` as a 20 ms pre-stimulus window shows it: each window's straight-line trend removed.

    This is what "noise RMS" means throughout: the 1/f part's slow swings move a whole window and
    read as trend, not as noise that could hide (or mimic) a response inside it."""
    m = ms(window_ms)
    k = len(x) // m
    seg = x[: k * m].reshape(k, m)
    t = np.arange(m) - (m - 1) / 2
    slope = seg @ t / (t @ t)
    resid = seg - seg.mean(axis=1, keepdims=True) - slope[:, None] * t
    return float(np.sqrt(np.mean(resid**2)))


def mains(n: int, rng: np.random.Generator, amplitude_uv: float) -> np.ndarray:
    """50 Hz hum with 150/250 Hz harmonics; the amplitude drifts ±25 % over ~20 s."""
    t = np.arange(n) / FS
    drift = 1.0 + 0.25 * np.sin(2 * np.pi * t / rng.uniform(15, 30) + rng.uniform(0, 2 * np.pi))
    out = np.zeros(n)
    for k, rel in ((1, 1.0), (3, 0.3), (5, 0.1)):
        out += rel * np.sin(2 * np.pi * 50.0 * k * t + rng.uniform(0, 2 * np.pi))
    return amplitude_uv * drift * out


def wander(n: int, rng: np.random.Generator, amplitude_uv: float) -> np.ndarray:
    """Electrode polarisation: three sinusoids between 0.05 and 0.6 Hz."""
    t = np.arange(n) / FS
    out = np.zeros(n)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(0.05, 0.6) * t + rng.uniform(0, 2 * np.pi))
    return amplitude_uv * out / 3.0


# --------------------------------------------------------------------------- #
# Evoked waveforms (each starts at its own time zero)


def stimulus_artifact(amplitude_uv: float, width_ms: float = 0.2, tau_ms: float = 0.12) -> np.ndarray:
    """The pulse (positive for `width_ms`) then a negative lobe peaking at 0.8 x amplitude; 3 ms long."""
    t = np.arange(ms(3.0)) / FS * 1000.0  # ms
    out = np.zeros_like(t)
    on = t < width_ms
    out[on] = amplitude_uv * (1.0 - np.exp(-t[on] / 0.01))
    u = (t[~on] - width_ms) / tau_ms
    out[~on] = -0.8 * amplitude_uv * u * np.exp(1.0 - u)
    return out


def hermite(order: int, sigma_ms: float) -> np.ndarray:
    """Hermite function of `order` (1 biphasic, 2 triphasic, 3 four phases), ±4σ long, unit p2p."""
    t = np.arange(-ms(4 * sigma_ms), ms(4 * sigma_ms) + 1) / FS * 1000.0
    x = t / sigma_ms
    poly = {1: 2 * x, 2: 4 * x**2 - 2, 3: 8 * x**3 - 12 * x}[order]
    y = poly * np.exp(-(x**2) / 2)
    return p2p_scaled(y - y[0], 1.0)


def gamma_oscillation(duration_ms: float, freq_hz: float, k: float = 3.0) -> np.ndarray:
    """A sine under a gamma envelope (t/θ)^k e^{-t/θ}, θ = duration/(2k+4); unit p2p."""
    t = np.arange(ms(duration_ms)) / FS * 1000.0
    theta = duration_ms / (2 * k + 4)
    env = (t / theta) ** k * np.exp(-t / theta)
    y = env * np.sin(2 * np.pi * freq_hz * t / 1000.0)
    return p2p_scaled(y, 1.0)


@dataclass(frozen=True)
class Morphology:
    """One channel's AMR: a unit-p2p template whose first sample is the onset."""

    template: np.ndarray
    onset_ms: float

    @property
    def duration_ms(self) -> float:
        return len(self.template) * 1000.0 / FS


def amr_morphologies(rng: np.random.Generator) -> dict[str, Morphology]:
    """Each AMR channel's own shape; onsets 9.5–11 ms, durations 7–12 ms."""
    return {
        "MENT": Morphology(gamma_oscillation(rng.uniform(9.0, 12.0), rng.uniform(160, 220)),
                           rng.uniform(9.5, 10.5)),
        "OORIS": Morphology(hermite(2, rng.uniform(1.1, 1.4)), rng.uniform(9.8, 11.0)),
        "OOCUL": Morphology(hermite(3, rng.uniform(0.9, 1.1)), rng.uniform(9.5, 10.5)),
    }


def direct_response(sigma_ms: float = 0.55) -> tuple[np.ndarray, float]:
    """The own muscle's CMAP: biphasic (Hermite 1), unit p2p; returns (template, offset of its onset)."""
    y = hermite(1, sigma_ms)
    # The Hermite function is ±4σ long; its visible onset is ~2.2σ before the centre.
    return y, (4 - 2.2) * sigma_ms


def spread_response(duration_ms: float = 17.0) -> np.ndarray:
    """Current spread: a large polyphasic direct response running from its onset through ~20 ms."""
    return gamma_oscillation(duration_ms, 140.0, k=2.0)


def add_at(x: np.ndarray, start: int, w: np.ndarray) -> None:
    """x[start:start+len(w)] += w, clipped to x."""
    if start >= len(x) or start + len(w) <= 0:
        return
    a, b = max(start, 0), min(start + len(w), len(x))
    x[a:b] += w[a - start:b - start]


def shift(w: np.ndarray, frac_samples: float) -> np.ndarray:
    """`w` delayed by a fraction of a sample (linear interpolation), so latencies jitter finely."""
    if frac_samples == 0:
        return w
    i = np.arange(len(w) + 1) - frac_samples
    return np.interp(i, np.arange(len(w)), w, left=0.0, right=0.0)
