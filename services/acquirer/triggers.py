"""Trigger channels → stimuli, for every source that carries one (EDF, LSL, future files).

A trigger channel (label `TRIG`, `STIM`, `TRIGGER`, optionally `_ZYG`/`_MAR`,
see labels.TRIGGER_LABEL) records the stimulator's sync pulse. A stimulus is
the first sample of a pulse at or above the threshold, which makes the
trigger sample-exact whatever the transport did to timestamps.

One detector, fed block by block, so that a file read whole and a stream read
in 5 ms chunks give the same stimuli:

- threshold: a fixed level (`threshold`, in the channel's own units), or by
  default half-way between the lowest and highest value seen so far — but
  only once that range reaches `min_swing` units (a quiet line's noise never
  makes a pulse; a TTL line in volts, a 0/1 counter or a file in µV all swing
  far more than 0.5);
- pulse width: a pulse must stay at or above the threshold for `min_width_ms`
  (one sample at least) — shorter spikes are glitches, not the stimulator;
- one pulse, one stimulus: after a pulse the line must fall below the
  threshold, and a new rising edge within `min_gap_ms` of the previous one is
  the same pulse bouncing (stimulation runs at ≤ 10 Hz, 100 ms apart);
- direction from the label: `TRIG_ZYG` → ZYG, `TRIG_MAR` → MAR; a plain
  `TRIG` takes the montage's only direction, or alternates its directions in
  order when it has two (the common ZYG/MAR alternating protocol; a marker
  stream, when there is one, gives the real label — see lsl.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...proto.messages import Montage
from .source import StimulusEvent


@dataclass(frozen=True)
class TriggerSettings:
    threshold: float | None = None  # channel units; None: half the range seen so far
    min_swing: float = 0.5  # channel units; the auto threshold arms only past this range
    min_width_ms: float = 0.0  # a pulse shorter than this is a glitch (at least one sample always)
    min_gap_ms: float = 5.0  # a rising edge this soon after the previous one is the same pulse

    def __post_init__(self) -> None:
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"trigger threshold must be a finite number; got {self.threshold}")
        if not 0.0 < self.min_swing <= 1e9:
            raise ValueError(f"trigger min_swing must be in (0, 1e9] channel units; got {self.min_swing}")
        if not 0.0 <= self.min_width_ms <= 10.0:
            raise ValueError(f"trigger min_width_ms must be between 0 and 10 ms; got {self.min_width_ms}")
        if not 0.0 <= self.min_gap_ms <= 50.0:
            raise ValueError(f"trigger min_gap_ms must be between 0 and 50 ms; got {self.min_gap_ms}")


def label_direction(label: str) -> str | None:
    """ZYG/MAR when the trigger's label names it (`TRIG_ZYG`, `stim-mar`), else None."""
    upper = label.strip().upper()
    return "ZYG" if upper.endswith("ZYG") else "MAR" if upper.endswith("MAR") else None


class TriggerDetector:
    """One trigger channel, fed consecutive blocks; yields stimuli at rising edges."""

    def __init__(self, label: str, fs: float, directions: list[str], settings: TriggerSettings | None = None):
        self.label = label
        self.fs = float(fs)
        self.settings = settings or TriggerSettings()
        self.fixed = label_direction(label)
        self.directions = list(directions) or ["ZYG"]
        self.min_width = max(1, int(round(self.settings.min_width_ms * self.fs / 1000.0)))
        self.min_gap = int(round(self.settings.min_gap_ms * self.fs / 1000.0))
        self.lo = np.inf
        self.hi = -np.inf
        self.high: bool | None = None  # above threshold at the end of the last block; None: not known yet
        self.run = 0  # samples the current pulse has stayed high so far
        self.edge: int | None = None  # rising edge of the pulse being measured
        self.last_edge: int | None = None
        self.n = 0  # pulses found
        self.n_glitches = 0

    def threshold(self) -> float | None:
        s = self.settings
        if s.threshold is not None:
            return s.threshold
        if not self.hi - self.lo >= s.min_swing:
            return None
        return self.lo + 0.5 * (self.hi - self.lo)

    def reset(self) -> None:
        """A gap in the signal: a pulse already high after it has no known edge and is not counted."""
        self.high = None
        self.run = 0
        self.edge = None

    def feed(self, x: np.ndarray, first_index: int) -> list[StimulusEvent]:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return []
        finite = x[np.isfinite(x)]
        if finite.size:
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))
        thr = self.threshold()
        if thr is None:  # a quiet line: nothing has swung far enough to be a pulse
            self.high = False
            return []
        above = x >= thr  # NaN reads as low
        out: list[StimulusEvent] = []
        # runs of `above` in this block, continuing the one the last block ended in
        change = np.flatnonzero(np.diff(above.astype(np.int8))) + 1
        bounds = np.concatenate([[0], change, [x.size]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if not above[a]:
                if self.high and self.edge is not None and self.run < self.min_width:
                    self.n_glitches += 1
                self.high, self.run, self.edge = False, 0, None
                continue
            if self.high is None:  # the signal starts (or resumes) inside a pulse: its edge is not known
                self.high, self.run, self.edge = True, 0, None
            elif not self.high:
                self.high, self.run = True, 0
                edge = first_index + int(a)
                bounce = self.last_edge is not None and edge - self.last_edge < self.min_gap
                self.edge = None if bounce else edge
            self.run += int(b - a)
            if self.edge is not None and self.run >= self.min_width:
                out.append(StimulusEvent(self.edge, self.fixed or self.directions[self.n % len(self.directions)]))
                self.n += 1
                self.last_edge = self.edge
                self.edge = None  # counted; the rest of this pulse is not a new one
        return out


def trigger_detectors(montage: Montage, settings: TriggerSettings | None = None) -> dict[int, TriggerDetector]:
    """Channel row → detector, for every trigger channel of the montage."""
    dirs = [s.direction for s in montage.stimulation]
    return {
        i: TriggerDetector(ch.name, montage.sampling_rate_hz, dirs, settings)
        for i, ch in enumerate(montage.channels)
        if ch.kind == "trigger"
    }
