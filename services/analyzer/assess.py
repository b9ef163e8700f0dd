"""Can this sweep tell whether the AMR is there? The pieces of state the answer needs.

Each good sweep of a channel is assessed (the engine applies the rules in this
order, the first that holds deciding):

1. stimulus not confirmed (integrity.py) → `not_assessable`, stimulus_unconfirmed;
2. a direct response from current spread (measure.py) → `not_assessable`,
   direct_response (and `present` false);
3. a response present → `present`;
4. absent, but the stimulus was weaker than at baseline (lower current or a
   shorter pulse than the direction's baseline stimuli) → `not_assessable`,
   intensity_below_baseline: a disappearance must not be produced by turning
   the current down;
5. absent, and its detection limit is above `detectability_fraction` of the
   channel's reference amplitude → `not_assessable`, noise_too_high;
6. otherwise → `absent`.

The reference amplitude is the channel's baseline; before one exists, or when
the baseline is 0 (no AMR at baseline), the median p2p of the channel's present
sweeps so far. A channel that has shown no AMR at all has no reference: there is
nothing whose loss a sweep must be able to show, so its absent sweeps are
`absent`, with their detection limit published (it cannot "disappear": its
course never reached `present`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any


class References:
    """Median p2p of each channel's present sweeps, the reference until a non-zero baseline exists."""

    def __init__(self, channels: list[str]) -> None:
        self._present: dict[str, list[float]] = {ch: [] for ch in channels}
        self.median: dict[str, float | None] = dict.fromkeys(channels)
        """Median p2p of each channel's present sweeps so far (None before the first)."""

    def add_present(self, channel: str, p2p_uv: float) -> None:
        v = self._present[channel]
        bisect.insort(v, p2p_uv)
        n = len(v)
        self.median[channel] = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


@dataclass
class Run:
    """A condition judged sweep by sweep: raised after `raise_after` consecutive bad sweeps, cleared
    after `clear_after` consecutive good ones. `since` is the first sweep of the bad run."""

    raise_after: int
    clear_after: int = 1
    active: bool = False
    bad: int = 0
    good: int = 0
    since: Any = None

    def update(self, bad: bool, mark: Any = None) -> str | None:
        """'raise', 'clear' or None."""
        if bad:
            if self.bad == 0:
                self.since = mark
            self.bad += 1
            self.good = 0
            if not self.active and self.bad >= self.raise_after:
                self.active = True
                return "raise"
        else:
            self.good += 1
            self.bad = 0
            if self.active and self.good >= self.clear_after:
                self.active = False
                return "clear"
        return None


class StimulusStrength:
    """The current and pulse width each direction's baseline was recorded with, and later stimuli against them.

    The baseline strength is the median over the direction's confirmed stimuli
    of the `baseline` stage, fixed at the first stimulus after that stage;
    without a baseline stage, over its stimuli up to the moment the direction's
    first channel baseline is taken (`fix`). Sources that report no intensity
    (a bare trigger channel) leave it unknown, and then nothing is compared."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[list[float], list[float], bool]] = {}
        self.baseline: dict[str, tuple[float | None, float | None]] = {}

    def collect(self, direction: str, stage: str | None, intensity_ma: float | None,
                width_ms: float | None) -> None:
        """A confirmed stimulus, in sample order (before `weaker` is asked about it)."""
        if direction in self.baseline:
            return
        ma, ms, in_stage = self._seen.setdefault(direction, ([], [], False))
        if stage != "baseline" and in_stage:
            self.fix(direction)  # the baseline stage is over: this stimulus is the first one judged
            return
        if stage == "baseline" and not in_stage:
            ma, ms = [], []  # the stage's stimuli define the baseline, not any before it
            self._seen[direction] = (ma, ms, True)
        if intensity_ma is not None:
            ma.append(intensity_ma)
        if width_ms is not None:
            ms.append(width_ms)

    def fix(self, direction: str) -> None:
        if direction in self.baseline:
            return
        ma, ms, _ = self._seen.pop(direction, ([], [], False))
        self.baseline[direction] = (_median(ma), _median(ms))

    def weaker(self, direction: str, intensity_ma: float | None, width_ms: float | None) -> str | None:
        """How this stimulus is weaker than the baseline's (for the message), or None."""
        base = self.baseline.get(direction)
        if base is None:
            return None
        b_ma, b_ms = base
        parts = []
        if intensity_ma is not None and b_ma is not None and intensity_ma < b_ma:
            parts.append(f"{intensity_ma:g} mA against {b_ma:g} mA at baseline")
        if width_ms is not None and b_ms is not None and width_ms < b_ms:
            parts.append(f"{width_ms:g} ms pulses against {b_ms:g} ms at baseline")
        return "; ".join(parts) or None


def _median(v: list[float]) -> float | None:
    if not v:
        return None
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
