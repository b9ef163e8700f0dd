"""An independent formulation of the measures, to check the compiled one against.

The analyzer measures each channel with a compiled per-sample loop
(services/analyzer/measure.py). This is the same docs/domain.md definitions
written as whole-array numpy expressions, as the analyzer computed them
before the loops were compiled: different code, same numbers expected.
"""

from __future__ import annotations

import numpy as np

from amrwatch.services.analyzer.condition import SweepGeometry

_SQRT8 = 2.0 * np.sqrt(2.0)


def _crossings(sw: np.ndarray, q: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Fractional index where each row of sw rises through `level` between samples q and q + 1.

    `q` and `level` may list each row more than once (rows repeat in order), so
    several crossings per row cost one set of array operations."""
    n_rows, width = sw.shape
    flat = sw.ravel()
    at = np.tile(np.arange(n_rows) * width, len(q) // n_rows) + q
    y0 = flat[at]
    step = np.maximum(flat[at + 1] - y0, 1e-12)
    return q + np.minimum(np.maximum((level - y0) / step, 0.0), 1.0)


class ReferenceMeasurer:
    """The measures of measure.py, as whole-array numpy expressions (no per-sample loop)."""

    def __init__(self, g: SweepGeometry) -> None:
        self.settings = s = g.settings
        self.g = g
        n0, n1 = g.noise
        t = np.linspace(-1.0, 1.0, n1 - n0)
        # Noise about the window's own line: sum of squares minus the energy of its
        # projection on the (orthogonal) constant and slope.
        self._line = np.stack([np.ones_like(t), t], axis=1)  # (n, 2)
        self._line_norm = np.array([1.0 / (n1 - n0), 1.0 / float(t @ t)])
        width = g.analysis[1] - g.analysis[0]
        self._before = np.arange(width)[None, :] < np.arange(width)[:, None]  # row i: samples before i
        self._ones = np.ones(width, dtype=np.float32)
        f_lo, f_hi = s.onset_levels
        self._levels = np.array([f_hi, f_lo])[:, None]
        t0 = float(g.time_ms(g.analysis[0]))
        self._n_under = min(max(1, g.to_samples(s.underway_ms)), width)
        self._n_early = min(max(0, g.to_samples(s.amr_onset_min_ms - t0)), width)

    def __call__(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Measures of conditioned sweeps `y` (channels, samples)."""
        s, g = self.settings, self.g
        a0, a1 = g.analysis
        n0, n1 = g.noise
        n_rows = y.shape[0]
        w = y[:, a0:a1]
        width = w.shape[1]

        hi = w.max(axis=1).astype(np.float64)
        lo = w.min(axis=1).astype(np.float64)
        p2p = hi - lo
        nw = y[:, n0:n1]
        nw = nw.astype(np.float64)  # a float32 sum of squares would lose a small noise under an offset
        sums = nw @ self._line
        resid = np.vecdot(nw, nw) - np.square(sums) @ self._line_norm
        noise = np.sqrt(np.maximum(resid, 0.0) * self._line_norm[0])
        den = _SQRT8 * noise
        snr = p2p / np.where(den > 0, den, np.nan)
        present = (p2p >= s.present_noise_factor * noise) & (p2p >= s.present_floor_uv)

        absw = np.abs(w)
        big = np.maximum(hi, -lo)
        peak_i = np.argmax(absw, axis=1)
        area = (absw @ self._ones).astype(np.float64) * g.dt_ms

        onset_ms = np.full(n_rows, np.nan)
        peak_ms = np.full(n_rows, np.nan)
        n_phases = np.zeros(n_rows, dtype=np.int64)
        direct = np.zeros(n_rows, dtype=bool)
        sel = np.flatnonzero(present)
        if sel.size:
            if sel.size < n_rows:
                w, absw, big = w[sel], absw[sel], big[sel]
            r = np.arange(sel.size)
            f_lo, f_hi = s.onset_levels
            # First phase: the first sample at the high level; its sign is the phase's.
            level_hi, level_lo = self._levels * big
            i1 = np.argmax(absw >= level_hi[:, None], axis=1)
            sw = w * np.sign(w[r, i1])[:, None]
            # Back along the rise: the last sample before it under the low level.
            below = sw < level_lo[:, None]
            below &= self._before[i1]
            q = width - 1 - np.argmax(below[:, ::-1], axis=1)
            found = below[r, q]
            t_hi, t_lo = _crossings(sw, np.concatenate([np.maximum(i1 - 1, 0), np.minimum(q, width - 2)]),
                                    np.concatenate([level_hi, level_lo])).reshape(2, -1)
            t_lo = np.where(found, t_lo, 0.0)
            onset_i = t_lo - f_lo * (t_hi - t_lo) / (f_hi - f_lo)
            onset_ms[sel] = np.maximum(g.time_ms(a0 + onset_i), 0.0)
            peak_ms[sel] = g.time_ms(a0 + peak_i[sel])

            # Phases: sign alternations among excursions beyond the phase threshold,
            # counted on the flattened (row, sample) list of those excursions.
            thr = np.maximum(s.phase_fraction * big, s.phase_noise_factor * noise[sel])
            beyond = absw >= thr[:, None]
            row_of = np.repeat(r, np.count_nonzero(beyond, axis=1))
            positive = w[beyond] > 0
            change = (positive[1:] != positive[:-1]) & (row_of[1:] == row_of[:-1])
            n_phases[sel] = np.bincount(row_of[1:][change], minlength=sel.size) + (big >= thr)

            # Direct response from current spread: significant activity under way at the window's
            # start, or before the earliest AMR onset when the measured onset is that early.
            half_limit = 0.5 * np.maximum(s.present_noise_factor * noise[sel], s.present_floor_uv)
            first = absw[:, : self._n_under].max(axis=1).astype(np.float64)
            underway = (first >= s.underway_fraction * big) & (first >= half_limit)
            if self._n_early:
                early = absw[:, : self._n_early].max(axis=1).astype(np.float64)
            else:
                early = np.zeros(sel.size)
            early_onset = (onset_ms[sel] < s.amr_onset_min_ms) & (early >= level_hi) & (early >= half_limit)
            direct[sel] = underway | early_onset

        return {"p2p_uv": p2p, "noise_uv": noise, "snr": snr, "present": present, "onset_ms": onset_ms,
                "peak_ms": peak_ms, "area_uv_ms": area, "n_phases": n_phases,
                "direct": direct}
