"""Sweeps cut from a ring buffer of the incoming signal.

Frames may arrive split anywhere, late, or with samples missing. The buffer
remembers, for every sample it holds, whether it was received, lost (a gap)
or deliberately not fed (the offline driver skips the signal between sweeps),
so a sweep that spans a hole is reported as such and never measured as if
whole. A sweep is complete as soon as its last sample has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Per-sample state in the buffer.
MISSING, RECEIVED, SKIPPED = 0, 1, 2


@dataclass(frozen=True)
class WriteResult:
    """What a frame did to the buffer; the engine turns anything but `ok` into an alarm."""

    kind: str  # "ok" | "gap" | "duplicate" | "out_of_order" | "overlap"
    written: int
    missing: int = 0
    """Samples lost before this frame (kind 'gap')."""
    dropped: int = 0
    """Samples of this frame not written because they were already past."""


class RingBuffer:
    """The last `capacity` samples of every channel, with a per-sample state."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 sample; got {capacity}")
        self.n_channels = n_channels
        self.capacity = capacity
        self.data = np.zeros((n_channels, capacity), dtype=np.float32)
        self.state = np.zeros(capacity, dtype=np.uint8)
        self.start: int | None = None
        """Index of the first sample ever fed (a late joiner does not start at 0)."""
        self.hwm: int | None = None
        """Index of the next sample expected (one past the newest)."""

    # -- writing ------------------------------------------------------------------
    def _fill(self, lo: int, hi: int, state: int, samples: np.ndarray | None = None) -> None:
        """Set samples [lo, hi) (hi - lo <= capacity) to `state` (and data)."""
        n = hi - lo
        if n <= 0:
            return
        a = lo % self.capacity
        first = min(n, self.capacity - a)
        self.state[a : a + first] = state
        if samples is not None:
            self.data[:, a : a + first] = samples[:, :first]
        if first < n:
            self.state[: n - first] = state
            if samples is not None:
                self.data[:, : n - first] = samples[:, first:]

    def _advance(self, to: int, state: int) -> None:
        """Mark [hwm, to) with `state` (only the last `capacity` matter)."""
        assert self.hwm is not None
        lo = max(self.hwm, to - self.capacity)
        self._fill(lo, to, state)
        self.hwm = to

    def write(self, first: int, samples: np.ndarray) -> WriteResult:
        n = int(samples.shape[1])
        if self.hwm is None:
            self.start = self.hwm = first
        end = first + n
        if end <= self.hwm:
            # Entirely in the past: a repeat of what we have, or a late arrival into a hole.
            held = self._states(first, end)
            if held is not None and np.all(held == RECEIVED):
                return WriteResult("duplicate", 0, dropped=n)
            return WriteResult("out_of_order", 0, dropped=n)
        kind, missing, dropped = "ok", 0, 0
        if first > self.hwm:
            missing = first - self.hwm
            kind = "gap"
            self._advance(first, MISSING)
        elif first < self.hwm:
            dropped = self.hwm - first
            kind = "overlap"
            samples = samples[:, dropped:]
            first = self.hwm
        n = end - first
        if n > self.capacity:
            samples = samples[:, n - self.capacity :]
            first = end - self.capacity
            n = self.capacity
        self._fill(first, end, RECEIVED, samples)
        self.hwm = end
        return WriteResult(kind, n, missing=missing, dropped=dropped)

    def skip_to(self, index: int) -> int:
        """Declare samples up to `index` deliberately not fed; returns how many."""
        if self.hwm is None:
            self.start = self.hwm = index
            return 0
        if index <= self.hwm:
            return 0
        n = index - self.hwm
        self._advance(index, SKIPPED)
        return n

    # -- reading ------------------------------------------------------------------
    def oldest(self) -> int | None:
        """Index of the oldest sample still held."""
        if self.hwm is None or self.start is None:
            return None
        return max(self.start, self.hwm - self.capacity)

    def _states(self, lo: int, hi: int) -> np.ndarray | None:
        oldest = self.oldest()
        if oldest is None or lo < oldest or hi > self.hwm:
            return None
        a, n = lo % self.capacity, hi - lo
        if a + n <= self.capacity:
            return self.state[a : a + n]
        return np.concatenate([self.state[a:], self.state[: a + n - self.capacity]])

    def read(self, lo: int, hi: int, rows: np.ndarray | slice) -> tuple[str, np.ndarray | None]:
        """Samples [lo, hi) of channels `rows`: ("ok", array) or (reason, None).

        With a slice of rows and no wrap-around the array is a view into the
        buffer: read it, do not write it (it is overwritten as signal arrives).

        Reasons: before_recording, stale, incomplete, gap, not_fed."""
        if self.hwm is None or self.start is None or hi > self.hwm:
            return "incomplete", None
        if lo < self.start:
            return "before_recording", None
        if lo < self.hwm - self.capacity:
            return "stale", None
        states = self._states(lo, hi)
        assert states is not None
        if not np.all(states == RECEIVED):
            return ("gap" if np.any(states == MISSING) else "not_fed"), None
        a, n = lo % self.capacity, hi - lo
        if a + n <= self.capacity:
            return "ok", self.data[rows, a : a + n]
        return "ok", np.concatenate([self.data[rows, a:], self.data[rows, : a + n - self.capacity]], axis=1)


@dataclass(frozen=True)
class PendingSweep:
    stimulus_index: int
    sample_index: int
    stim_time_s: float
    direction: str
    lo: int
    hi: int
    intensity_ma: float | None = None
    """The stimulator's current and pulse width, when the source reports them (EDF+ `stim ZYG 15mA 0.2ms`)."""
    width_ms: float | None = None


class Epocher:
    """Stimuli waiting for the end of their sweep, released in sample order."""

    def __init__(self, pre_samples: int, post_samples: int) -> None:
        self.pre = pre_samples
        self.post = post_samples
        self.pending: list[PendingSweep] = []

    def add(self, stimulus_index: int, sample_index: int, stim_time_s: float, direction: str,
            intensity_ma: float | None = None, width_ms: float | None = None) -> PendingSweep:
        sweep = PendingSweep(
            stimulus_index, sample_index, stim_time_s, direction,
            sample_index - self.pre, sample_index + self.post, intensity_ma, width_ms,
        )
        self.pending.append(sweep)
        self.pending.sort(key=lambda s: (s.hi, s.stimulus_index))
        return sweep

    def complete(self, hwm: int | None) -> list[PendingSweep]:
        """Sweeps whose last sample is in (hwm is one past the newest sample)."""
        if hwm is None:
            return []
        n = 0
        while n < len(self.pending) and self.pending[n].hi <= hwm:
            n += 1
        done, self.pending = self.pending[:n], self.pending[n:]
        return done

    def drain(self) -> list[PendingSweep]:
        done, self.pending = self.pending, []
        return done
