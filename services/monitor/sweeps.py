"""Display sweeps cut from the raw stream, off the analyzer's hot path.

The monitor sees the same `emg_frame` and `stimulus` messages as the
analyzer and cuts its own short, decimated sweeps for the page: −5..+50 ms
around each stimulus, on the channels that record that stimulus's direction.
Decimation keeps each bin's minimum and maximum in time order (peak-detect),
so the peak-to-peak the page draws equals the peak-to-peak of the raw signal
— a plain low-pass decimator would shrink a 1 ms AMR phase on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...proto.messages import Montage
from .settings import SweepSettings


def peak_decimate(x: np.ndarray, factor: int) -> np.ndarray:
    """Each run of `factor` samples becomes its (min, max) in the order they
    occurred; NaN samples are ignored, an all-NaN run gives two NaNs.
    len(x) must be a multiple of `factor`."""
    x = np.asarray(x, dtype=np.float64)
    if factor < 1:
        raise ValueError(f"factor must be at least 1; got {factor}")
    if factor == 1:
        return x.copy()
    if x.size % factor:
        raise ValueError(f"length {x.size} is not a multiple of the decimation factor {factor}")
    bins = x.reshape(-1, factor)
    nan = np.isnan(bins)
    i_min = np.where(nan, np.inf, bins).argmin(axis=1)
    i_max = np.where(nan, -np.inf, bins).argmax(axis=1)
    rows = np.arange(bins.shape[0])
    v_min, v_max = bins[rows, i_min], bins[rows, i_max]
    min_first = i_min <= i_max
    out = np.empty(2 * bins.shape[0])
    out[0::2] = np.where(min_first, v_min, v_max)
    out[1::2] = np.where(min_first, v_max, v_min)
    empty = nan.all(axis=1)
    out[0::2][empty] = np.nan
    out[1::2][empty] = np.nan
    return out


class SampleRing:
    """The last `capacity` samples of every channel, addressed by absolute
    sample index. Samples never received (a gap, before the first frame,
    aged out) read as NaN."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 sample; got {capacity}")
        self.capacity = capacity
        self.data = np.full((n_channels, capacity), np.nan, dtype=np.float32)
        self.end = 0  # one past the newest absolute index written
        self.start = 0  # oldest absolute index still valid

    def _put(self, first: int, block: np.ndarray) -> None:
        n = block.shape[1]
        pos = first % self.capacity
        head = min(n, self.capacity - pos)
        self.data[:, pos:pos + head] = block[:, :head]
        if head < n:
            self.data[:, : n - head] = block[:, head:]

    def write(self, first: int, block: np.ndarray) -> None:
        """Append samples first..first+n; a jump forward leaves NaN, a block
        entirely older than the newest is ignored (duplicate)."""
        n = block.shape[1]
        if first + n <= self.end:
            return
        if first < self.end:  # partial overlap: keep only the new part
            block = block[:, self.end - first:]
            first, n = self.end, block.shape[1]
        if n > self.capacity:
            block = block[:, n - self.capacity:]
            first, n = first + (n - self.capacity), self.capacity
        if first > self.end:
            gap = first - self.end
            if gap >= self.capacity:
                self.data[:] = np.nan
            else:
                self._put(self.end, np.full((self.data.shape[0], gap), np.nan, dtype=np.float32))
        self._put(first, block)
        self.end = first + n
        self.start = max(self.start, self.end - self.capacity)

    def read(self, rows: list[int], start: int, stop: int) -> np.ndarray:
        """(len(rows), stop-start) float64; NaN where nothing valid is held."""
        out = np.full((len(rows), stop - start), np.nan)
        lo, hi = max(start, self.start), min(stop, self.end)
        if lo < hi:
            idx = np.arange(lo, hi) % self.capacity
            out[:, lo - start:hi - start] = self.data[np.ix_(rows, idx)]
        return out


@dataclass(frozen=True)
class Sweep:
    """One decimated display sweep: values[k] is at t0_ms + k·dt_ms from the stimulus."""

    stimulus_index: int
    channel: str
    direction: str
    stim_time_s: float
    t0_ms: float
    dt_ms: float
    values: np.ndarray = field(repr=False)

    def times_ms(self) -> np.ndarray:
        return self.t0_ms + self.dt_ms * np.arange(self.values.size)

    def window_p2p(self, lo_ms: float, hi_ms: float) -> float | None:
        """Peak-to-peak in [lo_ms, hi_ms); None when that part holds no data."""
        t = self.times_ms()
        part = self.values[(t >= lo_ms) & (t < hi_ms)]
        part = part[~np.isnan(part)]
        return float(part.max() - part.min()) if part.size else None

    def to_json(self, resolution_uv: float = 0.1) -> dict:
        """Values rounded to `resolution_uv`, NaN as null (JSON has no NaN)."""
        digits = max(0, -math.floor(math.log10(resolution_uv)))
        q = np.round(self.values / resolution_uv) * resolution_uv
        vals = [None if math.isnan(v) else round(v, digits) for v in q.tolist()]
        return {
            "stimulus_index": self.stimulus_index,
            "channel": self.channel,
            "direction": self.direction,
            "stim_time_s": self.stim_time_s,
            "t0_ms": self.t0_ms,
            "dt_ms": self.dt_ms,
            "values": vals,
        }


@dataclass
class _Pending:
    stimulus_index: int
    sample_index: int
    stim_time_s: float
    direction: str


class SweepCutter:
    """Feed it frames and stimuli in bus order; it returns each sweep once the
    samples up to the sweep's end have arrived."""

    def __init__(self, montage: Montage, settings: SweepSettings | None = None) -> None:
        self.settings = s = settings or SweepSettings()
        self.fs = fs = montage.sampling_rate_hz
        self.factor = max(1, int(round(fs / s.display_rate_hz)))
        # Bin edges fall on the stimulus sample, so the blanking and the
        # analysis window line up with the bins.
        self.pre = math.ceil(s.pre_ms * fs / 1000.0 / self.factor) * self.factor
        self.post = math.ceil(s.post_ms * fs / 1000.0 / self.factor) * self.factor
        self.blank = int(round(s.blank_ms * fs / 1000.0))
        self.rows: dict[str, list[tuple[int, str]]] = {}
        for row, ch in enumerate(montage.channels):
            if ch.kind == "emg" and ch.direction is not None:
                self.rows.setdefault(ch.direction, []).append((row, ch.name))
        capacity = max(int(s.keep_s * fs), 2 * (self.pre + self.post))
        self.ring = SampleRing(len(montage.channels), capacity)
        self.pending: list[_Pending] = []
        if self.factor == 1:
            self.t0_ms, self.dt_ms = -self.pre * 1000.0 / fs, 1000.0 / fs
        else:
            # the two values of a bin are drawn at its first and third quarter
            self.t0_ms = (-self.pre + self.factor / 4.0) * 1000.0 / fs
            self.dt_ms = self.factor / 2.0 * 1000.0 / fs

    def channels(self, direction: str) -> list[str]:
        return [name for _, name in self.rows.get(direction, [])]

    def on_frame(self, first_sample_index: int, samples: np.ndarray) -> list[Sweep]:
        self.ring.write(first_sample_index, samples)
        return self._cut_ready()

    def on_stimulus(self, stimulus_index: int, sample_index: int, stim_time_s: float, direction: str) -> list[Sweep]:
        if direction in self.rows:
            self.pending.append(_Pending(stimulus_index, sample_index, stim_time_s, direction))
        return self._cut_ready()

    def flush(self) -> list[Sweep]:
        """Cut whatever is pending with the data there is (session end)."""
        out: list[Sweep] = []
        for p in self.pending:
            out.extend(self._cut(p))
        self.pending = []
        return out

    def _cut_ready(self) -> list[Sweep]:
        out: list[Sweep] = []
        keep: list[_Pending] = []
        for p in self.pending:
            if p.sample_index + self.post <= self.ring.end:
                out.extend(self._cut(p))
            else:
                keep.append(p)
        self.pending = keep
        return out

    def _cut(self, p: _Pending) -> list[Sweep]:
        rows = self.rows[p.direction]
        raw = self.ring.read([r for r, _ in rows], p.sample_index - self.pre, p.sample_index + self.post)
        if self.blank:
            raw[:, self.pre:self.pre + self.blank] = np.nan
        out = []
        for k, (_, name) in enumerate(rows):
            x = raw[k]
            pre = x[: self.pre]
            pre = pre[~np.isnan(pre)]
            if pre.size:
                x = x - np.median(pre)
            out.append(
                Sweep(p.stimulus_index, name, p.direction, p.stim_time_s, self.t0_ms, self.dt_ms,
                      peak_decimate(x, self.factor))
            )
        return out
