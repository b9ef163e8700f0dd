"""What is measured on a conditioned sweep, and when a raw sweep is refused.

Definitions (DOMAIN.md "Measurements per stimulus and channel"):

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
  the largest one and `phase_noise_factor` x noise.

Everything is computed for all channels of a sweep at once (numpy over rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .condition import SweepGeometry

_SQRT8 = 2.0 * np.sqrt(2.0)


@dataclass(frozen=True)
class SweepMeasures:
    """One entry per channel (float64); latencies are NaN where nothing is present."""

    p2p_uv: np.ndarray
    noise_uv: np.ndarray
    snr: np.ndarray
    present: np.ndarray
    onset_ms: np.ndarray
    peak_ms: np.ndarray
    area_uv_ms: np.ndarray
    n_phases: np.ndarray


def _crossing(sw: np.ndarray, rows: np.ndarray, q: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Fractional index where sw rises through `level` between samples q and q + 1."""
    y0 = sw[rows, q]
    step = np.maximum(sw[rows, q + 1] - y0, 1e-12)
    return q + np.minimum(np.maximum((level - y0) / step, 0.0), 1.0)


class Measurer:
    """`measure()` with everything that depends only on the settings computed once."""

    def __init__(self, g: SweepGeometry) -> None:
        self.settings = g.settings
        self.g = g
        n0, n1 = g.noise
        t = np.linspace(-1.0, 1.0, n1 - n0)
        self._tt = float(t @ t)
        self._line = np.stack([np.ones_like(t), t], axis=1).astype(np.float32)  # (n, 2): mean, slope
        width = g.analysis[1] - g.analysis[0]
        self._idx = np.arange(width)
        self._before = self._idx[None, :] < self._idx[:, None]  # row i: samples before i

    def __call__(self, y: np.ndarray) -> SweepMeasures:
        """Measures of conditioned sweeps `y` (channels, samples)."""
        s, g = self.settings, self.g
        a0, a1 = g.analysis
        n0, n1 = g.noise
        n_rows = y.shape[0]
        w = y[:, a0:a1]
        width = w.shape[1]

        hi = w.max(axis=1)
        lo = w.min(axis=1)
        p2p = hi.astype(np.float64) - lo
        nw = y[:, n0:n1]
        n_noise = nw.shape[1]
        total = np.einsum("ij,ij->i", nw, nw, dtype=np.float64)
        sums = (nw @ self._line).astype(np.float64)
        resid = total - sums[:, 0] ** 2 / n_noise - sums[:, 1] ** 2 / self._tt
        noise = np.sqrt(np.maximum(resid, 0.0) / n_noise)
        snr = np.divide(p2p, _SQRT8 * noise, out=np.full(n_rows, np.nan), where=noise > 0)
        present = (p2p >= s.present_noise_factor * noise) & (p2p >= s.present_floor_uv)

        absw = np.abs(w)
        big = np.maximum(hi, -lo)
        peak_i = np.argmax(absw, axis=1)
        area = absw.sum(axis=1).astype(np.float64) * g.dt_ms

        onset_ms = np.full(n_rows, np.nan)
        peak_ms = np.full(n_rows, np.nan)
        n_phases = np.zeros(n_rows, dtype=np.int64)
        sel = np.flatnonzero(present)
        if sel.size:
            if sel.size < n_rows:
                w, absw, big = w[sel], absw[sel], big[sel]
            r = np.arange(sel.size)
            f_lo, f_hi = s.onset_levels
            # First phase: the first sample at the high level; its sign is the phase's.
            level_hi = f_hi * big
            i1 = np.argmax(absw >= level_hi[:, None], axis=1)
            sw = w * np.sign(w[r, i1])[:, None]
            t_hi = _crossing(sw, r, np.maximum(i1 - 1, 0), level_hi)
            # Back along the rise: the last sample before it under the low level.
            level_lo = f_lo * big
            below = sw < level_lo[:, None]
            below &= self._before[i1]
            q = width - 1 - np.argmax(below[:, ::-1], axis=1)
            found = below[r, q]
            t_lo = np.where(found, _crossing(sw, r, np.minimum(q, width - 2), level_lo), 0.0)
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

        return SweepMeasures(
            p2p_uv=p2p,
            noise_uv=noise,
            snr=snr,
            present=present,
            onset_ms=onset_ms,
            peak_ms=peak_ms,
            area_uv_ms=area,
            n_phases=n_phases,
        )


def reject_reasons(raw: np.ndarray, g: SweepGeometry) -> list[str | None]:
    """Why each channel's raw sweep cannot be measured as a response (None: it can).

    Checked on the raw samples: NaN/inf, saturation at the amplifier's range,
    and diathermy — broadband interference whose sample-to-sample differences,
    in some block of the sweep outside the artifact blank, exceed what EMG and
    ordinary noise produce."""
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
        hf = np.sqrt(np.einsum("ijk,ijk->ij", blocks, blocks).max(axis=1) / block)
    else:
        hf = np.sqrt(np.einsum("ij,ij->i", d, d) / d.shape[1])
    diathermy = hf >= settings.diathermy_diff_rms_uv
    out: list[str | None] = []
    for ok, dia, sat in zip(finite.tolist(), diathermy.tolist(), saturated.tolist()):
        out.append("nan" if not ok else "diathermy" if dia else "saturated" if sat else None)
    return out
