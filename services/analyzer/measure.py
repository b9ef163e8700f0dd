"""What is measured on a conditioned sweep, and when a raw sweep is refused.

Definitions (docs/domain.md, "Measurements and the course"):

- p2p: maximum minus minimum in the analysis window;
- noise: RMS in the pre-stimulus window about its own straight line (a slow
  drift or the far tail of a large response is not noise); SNR = p2p /
  (2·√2·noise), the RMS of a sine of that peak-to-peak over the noise RMS;
- present: p2p reaches both `present_noise_factor` x noise and the absolute floor;
- onset: the AMR's first phase is the first excursion reaching the high
  `onset_levels` fraction of the largest one; the line through its rise at the
  low and high fractions is extrapolated back to zero. A threshold crossing
  would report later onsets for smaller responses; the extrapolation does not;
- peak latency: the largest absolute value; area: rectified, in µV·ms;
- phases: alternations of sign among excursions beyond `phase_fraction` of
  the largest one and `phase_noise_factor` x noise;
- direct: a present response that is a direct response from current spread,
  not an AMR — already under way when the window opens (|signal| in its first
  `underway_ms` reaches `underway_fraction` of the largest excursion), or with
  a measured onset before `amr_onset_min_ms` and activity before that time
  reaching the onset's high level. Either way the early activity must also
  reach half the detection limit (the peak of the smallest response that
  counts as present), so a noise peak before a small AMR cannot gate it.

Each channel's sweep is walked by a compiled loop (see jit.py for why); the
straightforward numpy formulation of the same definitions is kept in
tests/analyzer/reference.py, and the two are checked against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .condition import SweepGeometry
from .jit import compiled

#: SNR = p2p / (2·√2·noise): the RMS of a sine of that peak-to-peak over the noise RMS.
_SQRT8 = 2.0 * math.sqrt(2.0)

#: Rows of `SweepMeasures.table`, in the order the engine publishes them.
TABLE_ROWS = ("p2p_uv", "noise_uv", "snr", "area_uv_ms", "onset_ms", "peak_ms")


@dataclass(frozen=True)
class SweepMeasures:
    """One column per channel; latencies are NaN where nothing is present."""

    table: np.ndarray
    """(6, channels) float64, rows named by TABLE_ROWS."""
    present: np.ndarray
    n_phases: np.ndarray
    direct: np.ndarray
    """Present, but a direct response from current spread (see the module docstring): not an AMR."""

    @property
    def p2p_uv(self) -> np.ndarray:
        return self.table[0]

    @property
    def noise_uv(self) -> np.ndarray:
        return self.table[1]

    @property
    def snr(self) -> np.ndarray:
        return self.table[2]

    @property
    def area_uv_ms(self) -> np.ndarray:
        return self.table[3]

    @property
    def onset_ms(self) -> np.ndarray:
        return self.table[4]

    @property
    def peak_ms(self) -> np.ndarray:
        return self.table[5]


@compiled("void(float32[:, :], int64, int64, int64, int64, int64, int64, float64[:], float64[:], float64[:, :], "
          "boolean[:], int64[:], boolean[:])")
def _measure_rows(y, a0, a1, n0, n1, n_under, n_early, t_line, p, out, present, n_phases,
                  direct):  # pragma: no cover - compiled
    """Measures of each row of conditioned sweeps `y`; p = (present_noise_factor, present_floor_uv,
    onset low fraction, onset high fraction, phase_fraction, phase_noise_factor, first analysis sample
    in ms after the stimulus, ms per sample, amr_onset_min_ms, underway_fraction); n_under: samples
    of the window's start checked for a response under way; n_early: samples before amr_onset_min_ms."""
    present_factor, floor_uv, f_lo, f_hi, phase_fraction, phase_noise_factor, t0_ms, dt_ms = (
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7])
    onset_min_ms, underway_fraction = p[8], p[9]
    width = a1 - a0
    n_noise = n1 - n0
    tt = 0.0
    for i in range(n_noise):
        tt += t_line[i] * t_line[i]
    for r in range(y.shape[0]):
        row = y[r, a0:a1]
        hi = row[0]
        lo = row[0]
        best = -1.0
        peak_i = 0
        area = 0.0
        for i in range(width):
            v = row[i]
            if v > hi:
                hi = v
            if v < lo:
                lo = v
            a = abs(np.float64(v))
            if a > best:
                best = a
                peak_i = i
            area += a
        hi64 = np.float64(hi)
        lo64 = np.float64(lo)
        p2p = hi64 - lo64
        # Noise: RMS about the window's own line (orthogonal constant and slope).
        s0 = 0.0
        s1 = 0.0
        total = 0.0
        for i in range(n_noise):
            v = np.float64(y[r, n0 + i])
            s0 += v
            s1 += v * t_line[i]
            total += v * v
        noise = math.sqrt(max(total - s0 * s0 / n_noise - s1 * s1 / tt, 0.0) / n_noise)
        out[0, r] = p2p
        out[1, r] = noise
        out[2, r] = p2p / (_SQRT8 * noise) if noise > 0.0 else np.nan
        out[3, r] = area * dt_ms
        out[4, r] = np.nan
        out[5, r] = np.nan
        n_phases[r] = 0
        direct[r] = False
        present[r] = p2p >= present_factor * noise and p2p >= floor_uv
        if not present[r] or width < 2:
            continue
        big = max(hi64, -lo64)
        # First phase: the first sample at the high level; its sign is the phase's.
        level_hi = f_hi * big
        i1 = 0
        while abs(np.float64(row[i1])) < level_hi:
            i1 += 1
        sign = 1.0 if row[i1] > 0 else (-1.0 if row[i1] < 0 else 0.0)
        q = max(i1 - 1, 0)
        y0 = np.float64(row[q]) * sign
        step = max(np.float64(row[q + 1]) * sign - y0, 1e-12)
        t_hi = q + min(max((level_hi - y0) / step, 0.0), 1.0)
        # Back along the rise: the last sample before it under the low level.
        level_lo = f_lo * big
        t_lo = 0.0
        for j in range(i1 - 1, -1, -1):
            if np.float64(row[j]) * sign < level_lo:
                q = min(j, width - 2)
                y0 = np.float64(row[q]) * sign
                step = max(np.float64(row[q + 1]) * sign - y0, 1e-12)
                t_lo = q + min(max((level_lo - y0) / step, 0.0), 1.0)
                break
        onset_i = t_lo - f_lo * (t_hi - t_lo) / (f_hi - f_lo)
        onset_ms = max(t0_ms + onset_i * dt_ms, 0.0)
        out[4, r] = onset_ms
        out[5, r] = t0_ms + peak_i * dt_ms
        # Direct response: early activity, significant against the noise and the response itself.
        half_limit = 0.5 * max(present_factor * noise, floor_uv)
        first = 0.0
        for i in range(min(n_under, width)):
            a = abs(np.float64(row[i]))
            if a > first:
                first = a
        underway = first >= underway_fraction * big and first >= half_limit
        early = 0.0
        if onset_ms < onset_min_ms:
            for i in range(min(n_early, width)):
                a = abs(np.float64(row[i]))
                if a > early:
                    early = a
        direct[r] = underway or (early >= level_hi and early >= half_limit)
        # Phases: sign alternations among excursions beyond the phase threshold.
        thr = max(phase_fraction * big, phase_noise_factor * noise)
        count = 1 if big >= thr else 0
        seen = False
        last = False
        for i in range(width):
            v = np.float64(row[i])
            if abs(v) >= thr:
                positive = v > 0.0
                if seen and positive != last:
                    count += 1
                seen = True
                last = positive
        n_phases[r] = count


class Measurer:
    """Measures of conditioned sweeps, with everything that depends only on the settings computed once."""

    def __init__(self, g: SweepGeometry) -> None:
        s = g.settings
        self.settings = s
        self.g = g
        n0, n1 = g.noise
        self._t_line = np.linspace(-1.0, 1.0, n1 - n0)
        f_lo, f_hi = s.onset_levels
        t0_ms = float(g.time_ms(g.analysis[0]))
        self._params = np.array([s.present_noise_factor, s.present_floor_uv, f_lo, f_hi, s.phase_fraction,
                                 s.phase_noise_factor, t0_ms, g.dt_ms, s.amr_onset_min_ms, s.underway_fraction])
        self._n_under = max(1, g.to_samples(s.underway_ms))
        self._n_early = max(0, g.to_samples(s.amr_onset_min_ms - t0_ms))

    def __call__(self, y: np.ndarray) -> SweepMeasures:
        """Measures of conditioned sweeps `y` (channels, samples)."""
        y = np.asarray(y, dtype=np.float32)
        n_rows = y.shape[0]
        table = np.empty((len(TABLE_ROWS), n_rows))
        present = np.empty(n_rows, dtype=np.bool_)
        n_phases = np.empty(n_rows, dtype=np.int64)
        direct = np.empty(n_rows, dtype=np.bool_)
        (a0, a1), (n0, n1) = self.g.analysis, self.g.noise
        _measure_rows(y, a0, a1, n0, n1, self._n_under, self._n_early, self._t_line, self._params, table,
                      present, n_phases, direct)
        return SweepMeasures(table, present, n_phases, direct)


def reject_reasons(raw: np.ndarray, g: SweepGeometry) -> list[str | None]:
    """Why each channel's raw sweep cannot be measured as a response (None: it can).

    Checked on the raw samples: NaN/inf, saturation at the amplifier's range,
    and diathermy — broadband interference whose sample-to-sample differences,
    in some block of the sweep outside the artifact blank, exceed what EMG and
    ordinary noise produce. (Whole-sweep array arithmetic, which numpy does
    well: these stay numpy, unlike the measures.)"""
    settings = g.settings
    x = np.asarray(raw, dtype=np.float32)
    hi = x.max(axis=1)
    lo = x.min(axis=1)
    finite = np.isfinite(hi) & np.isfinite(lo)  # a NaN or inf anywhere in the row shows here
    if not finite.all():
        x = np.where(np.isfinite(x), x, np.float32(0.0))
        hi = np.where(finite, hi, 0.0)
        lo = np.where(finite, lo, 0.0)
    saturated = (hi >= settings.saturation_uv) | (lo <= -settings.saturation_uv)
    d = x[:, 1:] - x[:, :-1]
    b0, b1 = g.blank
    d[:, max(b0 - 1, 0) : b1 + 1] = 0.0  # the artifact's own edges are steep by nature
    block = max(2, g.to_samples(settings.diathermy_block_ms))
    nb = d.shape[1] // block
    if nb:
        blocks = d[:, : nb * block].reshape(d.shape[0], nb, block)
        hf = np.sqrt(np.vecdot(blocks, blocks).max(axis=1) / block)
    else:
        hf = np.sqrt(np.vecdot(d, d) / d.shape[1])
    diathermy = hf >= settings.diathermy_diff_rms_uv
    if finite.all() and not (diathermy.any() or saturated.any()):
        return [None] * len(finite)
    out: list[str | None] = []
    for ok, dia, sat in zip(finite.tolist(), diathermy.tolist(), saturated.tolist()):
        out.append("nan" if not ok else "diathermy" if dia else "saturated" if sat else None)
    return out
