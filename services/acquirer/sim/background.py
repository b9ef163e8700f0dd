"""What every channel records when nothing is evoked: Gaussian noise, mains
interference with a harmonic, and slow baseline wander.

Rendered in fixed blocks of absolute sample indices (the Gaussian noise of a
block comes from its own seeded generator; mains and wander are functions of
the absolute index), so the signal does not depend on how it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .config import SimConfig

#: Samples per internally rendered block.
BLOCK_SAMPLES = 8192

_TAG_NOISE = 1
_TAG_INTERFERENCE = 6

#: Sinusoids summed into the baseline wander of each channel.
_WANDER_COMPONENTS = 3
#: The wander is evaluated on a grid this fine (in Hz) and interpolated: it is < 2 Hz.
_WANDER_GRID_HZ = 200.0


class Background:
    def __init__(self, config: SimConfig, seed: int, n_channels: int):
        self.config = config
        self.seed = seed
        self.n_channels = n_channels
        rng = np.random.default_rng([seed, _TAG_INTERFERENCE])
        self._mains_phase = rng.uniform(0.0, 2 * np.pi, size=n_channels)
        self._harmonic_phase = rng.uniform(0.0, 2 * np.pi, size=n_channels)
        low = min(0.05, config.wander_max_hz)
        self._wander_hz = rng.uniform(low, config.wander_max_hz, size=(n_channels, _WANDER_COMPONENTS))
        weights = rng.uniform(0.5, 1.0, size=(n_channels, _WANDER_COMPONENTS))
        self._wander_amp = config.wander_uv * weights / weights.sum(axis=1, keepdims=True)
        self._wander_phase = rng.uniform(0.0, 2 * np.pi, size=(n_channels, _WANDER_COMPONENTS))
        self._grid = max(1, int(config.sampling_rate_hz / _WANDER_GRID_HZ))

    def render(self, block: int, noise_gain: np.ndarray | None = None) -> np.ndarray:
        """(n_channels, BLOCK_SAMPLES) float64 µV of block `block`; `noise_gain` (per sample) scales
        the Gaussian noise (a scenario's noise hazard), mains and wander stay as they are."""
        cfg = self.config
        start = block * BLOCK_SAMPLES
        n = np.arange(start, start + BLOCK_SAMPLES, dtype=np.int64)
        if cfg.noise_uv > 0.0:
            rng = np.random.default_rng([self.seed, _TAG_NOISE, block])
            out = rng.standard_normal((self.n_channels, BLOCK_SAMPLES))
            out *= cfg.noise_uv
            if noise_gain is not None:
                out *= noise_gain
        else:
            out = np.zeros((self.n_channels, BLOCK_SAMPLES))
        if cfg.mains_uv > 0.0:
            self._add_tone(out, n, cfg.mains_hz, cfg.mains_uv, self._mains_phase)
            if cfg.mains_harmonic_ratio > 0.0:
                self._add_tone(
                    out,
                    n,
                    cfg.mains_hz * cfg.mains_harmonic,
                    cfg.mains_uv * cfg.mains_harmonic_ratio,
                    self._harmonic_phase,
                )
        if cfg.wander_uv > 0.0:
            out += self._wander(start)
        return out

    def _add_tone(self, out: np.ndarray, n: np.ndarray, hz: float, amp: float, phase: np.ndarray):
        # sin(wn + p) = sin(wn) cos(p) + cos(wn) sin(p): two trig evaluations per
        # sample for all channels.
        arg = (2 * np.pi * hz / self.config.sampling_rate_hz) * n.astype(np.float64)
        s, c = np.sin(arg), np.cos(arg)
        out += amp * (np.cos(phase)[:, None] * s + np.sin(phase)[:, None] * c)

    def _wander(self, start: int) -> np.ndarray:
        g = self._grid
        m0 = start // g
        m1 = -(-(start + BLOCK_SAMPLES) // g)
        grid_n = np.arange(m0, m1 + 1, dtype=np.int64) * g
        t = grid_n.astype(np.float64) / self.config.sampling_rate_hz
        vals = np.einsum(
            "ck,ckt->ct",
            self._wander_amp,
            np.sin(2 * np.pi * self._wander_hz[:, :, None] * t[None, None, :] + self._wander_phase[:, :, None]),
        )
        n = np.arange(start, start + BLOCK_SAMPLES, dtype=np.float64)
        return np.stack([np.interp(n, grid_n.astype(np.float64), v) for v in vals])
