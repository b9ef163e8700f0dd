"""The AMR course of one channel: present → diminished → disappeared → reappeared.

Only assessed sweeps count (assessment `present` or `absent`); a rejected
sweep (diathermy, saturation, gap) and a `not_assessable` one (too noisy to
show a baseline-size AMR, stimulus not confirmed, a direct response, a weaker
stimulus than at baseline) neither extends nor breaks a run, so seconds of
electrocautery, a noisy electrode or a dead stimulator can never make an AMR
"disappear". Each change needs K consecutive sweeps that agree:

- (none) → present: `confirm_k` present sweeps;
- present/reappeared → diminished: `confirm_k` present sweeps below
  `diminished_pct` of baseline; diminished → present: `confirm_k` at or above it;
- any present-like state → disappeared: `disappear_k` absent sweeps (DOMAIN K = 5);
- disappeared → reappeared: `confirm_k` present sweeps.

The disappearance is dated to the first sweep of the absent run that led to
it, which is when the AMR went, not when we became sure of it.

An analyzer restarted mid-session resumes each channel in the state it last
published (`resume`) with its runs at zero: the sweeps it missed while down
count for nothing, so every change after the restart again needs its full K
sweeps (conservative: a change can come later, never sooner).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ...proto.messages import AmrStateName, Stage
from .settings import AnalyzerSettings


@dataclass(frozen=True)
class Transition:
    channel: str
    state: AmrStateName
    previous_state: AmrStateName | None
    stimulus_index: int
    stage: Stage | None
    pct_of_baseline: float | None
    since: SweepMark | None = None
    """For `disappeared`: the first sweep of the absent run it confirms."""


@dataclass(frozen=True)
class SweepMark:
    """Where a sweep was: enough to date an event."""

    stimulus_index: int
    sample_index: int
    stage: Stage | None


class ChannelCourse:
    def __init__(self, channel: str, direction: str, settings: AnalyzerSettings) -> None:
        self.channel = channel
        self.direction = direction
        self.settings = settings
        self.state: AmrStateName | None = None
        self.ever_present = False
        self.n_good = 0
        self.n_rejected = 0
        self.n_not_assessable = 0
        self.not_assessable_run = 0
        """Not-assessable sweeps since the last assessed one: at the end, how long the channel could not tell."""
        self._absent_run = 0
        self._present_run = 0
        self._full_run = 0
        self._low_run = 0
        self._absent_since: SweepMark | None = None
        self.disappeared_at: SweepMark | None = None
        """Start of the absent run behind the current (latest) disappearance."""
        self.recent = deque(maxlen=settings.final_sweeps)
        self._confirm_k = settings.confirm_k
        self._disappear_k = settings.disappear_k
        self._diminished_pct = settings.diminished_pct

    def rejected(self) -> None:
        self.n_rejected += 1

    def not_assessable(self) -> None:
        """A sweep that cannot tell whether the AMR is there: counted, but it neither extends nor breaks a run."""
        self.n_not_assessable += 1
        self.not_assessable_run += 1

    def update(self, mark: SweepMark, present: bool, p2p_uv: float, pct: float | None) -> Transition | None:
        """Count one assessed sweep (present or absent); returns the transition it completes, if any."""
        self.n_good += 1
        self.not_assessable_run = 0
        self.recent.append(p2p_uv)
        if present:
            self._absent_run = 0
            self._absent_since = None
            self._present_run += 1
            if pct is not None and pct < self._diminished_pct:
                self._low_run += 1
                self._full_run = 0
            else:
                self._full_run += 1
                self._low_run = 0
        else:
            if self._absent_run == 0:
                self._absent_since = mark
            self._absent_run += 1
            self._present_run = self._low_run = self._full_run = 0

        new = self._next_state()
        if new is None or new == self.state:
            return None
        old, self.state = self.state, new
        if new == "disappeared":
            self.disappeared_at = self._absent_since
        if new in ("present", "reappeared"):
            self.ever_present = True
        return Transition(self.channel, new, old, mark.stimulus_index, mark.stage, pct,
                          self.disappeared_at if new == "disappeared" else None)

    def _next_state(self) -> AmrStateName | None:
        st = self.state
        k = self._confirm_k
        if st is None:
            return "present" if self._present_run >= k else None
        if st == "disappeared":
            return "reappeared" if self._present_run >= k else None
        if self._absent_run >= self._disappear_k:
            return "disappeared"
        if self._low_run >= k and st != "diminished":
            return "diminished"
        if st == "diminished" and self._full_run >= k:
            return "present"
        return None

    def final_uv(self) -> float | None:
        """The final amplitude: median of the last good sweeps."""
        return float(np.median(self.recent)) if self.recent else None

    def resume(self, state: AmrStateName | None, at: SweepMark | None = None) -> None:
        """Take up the channel in `state`, the last one published this session (None: none was), with the runs at
        zero. `at` dates a resumed `disappeared` (the absent run's first sweep when known, else the sweep that
        confirmed it)."""
        if state not in (None, "present", "diminished", "disappeared", "reappeared"):
            raise ValueError(f"state must be present, diminished, disappeared, reappeared or None; got {state!r}")
        self.state = state
        self.ever_present = state is not None  # every published state follows a confirmed presence
        self.disappeared_at = at if state == "disappeared" else None
        self._absent_run = self._present_run = self._full_run = self._low_run = 0
        self._absent_since = None
