"""The baseline amplitude of each channel, against which the course is judged.

DOMAIN: the median amplitude over the `baseline` stage, or over the first N
good sweeps when no baseline stage was marked. It is taken when the baseline
stage ends (the first good sweep of a later stage) so that every baseline
sweep counts. A channel whose AMR was absent in most baseline sweeps has no
AMR at baseline: its baseline is 0 and percentages of it are undefined.

An analyzer restarted mid-session takes the session's established baselines
back (`resume`); a channel whose baseline was due but cannot be had is
`unknown` for the rest of the session: sweeps from the middle of the operation
are never taken for the preoperative baseline.

Only assessed sweeps (present or absent) are counted: a sweep that could not
tell (too noisy, stimulus unconfirmed, a direct response) says nothing about
the AMR's size. The median noise of the same sweeps is kept, so a later
recording-quality alarm can say how the noise compares with the baseline's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .settings import AnalyzerSettings


@dataclass(frozen=True)
class EstablishedBaseline:
    channel: str
    baseline_uv: float
    n_sweeps: int
    present_fraction: float
    noise_uv: float | None = None
    """Median noise RMS of the baseline sweeps (None after a restart: the session does not publish it)."""


@dataclass
class _Collect:
    p2p: list[float] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    in_stage: int = 0
    """How many of them were in the baseline stage."""


class BaselineTracker:
    def __init__(self, settings: AnalyzerSettings, channels: list[str]) -> None:
        self.settings = settings
        self._collect = {ch: _Collect() for ch in channels}
        self.established: dict[str, EstablishedBaseline] = {}
        self.unknown: set[str] = set()
        """Channels whose baseline a restart lost: never established from later sweeps."""

    def value(self, channel: str) -> float | None:
        b = self.established.get(channel)
        return None if b is None else b.baseline_uv

    def session_amplitude(self) -> float:
        """The preoperative AMR amplitude: the largest channel baseline so far."""
        return max((b.baseline_uv for b in self.established.values()), default=0.0)

    def noise(self, channel: str) -> float | None:
        b = self.established.get(channel)
        return None if b is None else b.noise_uv

    def add(self, channel: str, stage: str | None, p2p_uv: float, present: bool,
            noise_uv: float = 0.0) -> EstablishedBaseline | None:
        """Count one assessed sweep; returns the baseline when this sweep establishes it."""
        if channel in self.established or channel in self.unknown:
            return None
        c = self._collect[channel]
        s = self.settings
        if stage == "baseline":
            c.p2p.append(p2p_uv)
            c.present.append(present)
            c.noise.append(noise_uv)
            c.in_stage += 1
            return None
        if c.in_stage >= s.baseline_min_sweeps:
            return self._establish(channel)
        c.p2p.append(p2p_uv)
        c.present.append(present)
        c.noise.append(noise_uv)
        if len(c.p2p) >= s.baseline_first_n:
            return self._establish(channel)
        return None

    def finish(self, channel: str) -> EstablishedBaseline | None:
        """At the end of a session: take what there is, if it is enough."""
        if channel in self.established or channel in self.unknown:
            return None
        c = self._collect[channel]
        if len(c.p2p) >= self.settings.baseline_min_sweeps:
            return self._establish(channel)
        return None

    def _establish(self, channel: str) -> EstablishedBaseline:
        c = self._collect[channel]
        fraction = float(np.mean(c.present)) if c.present else 0.0
        value = float(np.median(c.p2p)) if fraction >= self.settings.baseline_min_present_fraction else 0.0
        noise = float(np.median(c.noise)) if c.noise else 0.0
        b = EstablishedBaseline(channel, value, len(c.p2p), fraction, noise)
        self.established[channel] = b
        return b

    def resume(self, channel: str, baseline_uv: float | None, n_sweeps: int = 0) -> None:
        """Take up a session mid-way: `baseline_uv` is the channel's baseline as this session published it
        (over `n_sweeps` sweeps), or None when it was due but cannot be had (the channel is then unknown).
        Its present fraction is not published; a baseline > 0 had at least the minimum, one of 0 less."""
        if channel not in self._collect:
            raise ValueError(f"channel {channel!r} is not one this session records; known: {sorted(self._collect)}")
        if baseline_uv is None:
            self.established.pop(channel, None)
            self.unknown.add(channel)
            return
        if not baseline_uv >= 0:
            raise ValueError(f"baseline_uv must be >= 0 µV; got {baseline_uv!r}")
        self.unknown.discard(channel)
        fraction = 1.0 if baseline_uv > 0 else 0.0
        self.established[channel] = EstablishedBaseline(channel, float(baseline_uv), int(n_sweeps), fraction)
