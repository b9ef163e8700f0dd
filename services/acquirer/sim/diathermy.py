"""Electrocautery bursts: seconds of broadband interference, 10-100 times the
EMG, that saturate the amplifier. They happen only during surgical stages,
and the sweeps they touch must be rejected rather than measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ....proto.messages import SURGICAL_STAGES
from .scenario import Timeline

if TYPE_CHECKING:
    from .config import SimConfig

_TAG_SCHEDULE = 4
_TAG_NOISE = 5

#: On/off ramp of a burst (the surgeon's pedal is not a perfect switch).
_RAMP_S = 0.02


@dataclass(frozen=True)
class Burst:
    start: int
    end: int
    """Exclusive."""
    rms_uv: float
    stage: str

    def overlaps(self, lo: int, hi: int) -> bool:
        """True when the burst touches samples [lo, hi)."""
        return self.start < hi and lo < self.end


def schedule_bursts(config: SimConfig, seed: int, timeline: Timeline, calibration: bool) -> list[Burst]:
    """A few bursts per surgical stage (or in the calibration stage when asked for)."""
    if not config.diathermy:
        return []
    if calibration and not config.calibration_diathermy:
        return []
    allowed = ("baseline",) if calibration else SURGICAL_STAGES
    fs = config.sampling_rate_hz
    bursts: list[Burst] = []
    edges = list(timeline.stages)
    for i, (start, stage) in enumerate(edges[:-1]):
        if stage not in allowed:
            continue
        end = edges[i + 1][0]
        if end <= start:
            continue
        rng = np.random.default_rng([seed, _TAG_SCHEDULE, i])
        lo, hi = config.diathermy_bursts_per_stage
        for _ in range(int(rng.integers(lo, hi + 1))):
            length = min(int(round(rng.uniform(*config.diathermy_duration_s) * fs)), end - start)
            first = start + int(rng.integers(0, end - start - length + 1))
            rms = float(rng.uniform(*config.diathermy_rms_uv))
            bursts.append(Burst(first, first + length, rms, stage))
    bursts.sort(key=lambda b: b.start)
    return bursts


def add_bursts(
    out: np.ndarray, start: int, bursts: list[Burst], seed: int, block: int, fs: float
) -> None:
    """Adds the bursts overlapping samples [start, start + out.shape[1]) to `out` in place."""
    n = out.shape[1]
    for j, burst in enumerate(bursts):
        if not burst.overlaps(start, start + n):
            continue
        lo = max(burst.start, start)
        hi = min(burst.end, start + n)
        idx = np.arange(lo, hi, dtype=np.float64)
        ramp = max(1.0, _RAMP_S * fs)
        envelope = np.minimum(1.0, np.minimum(idx - burst.start + 1, burst.end - idx) / ramp)
        rng = np.random.default_rng([seed, _TAG_NOISE, j, block])
        noise = rng.standard_normal((out.shape[0], hi - lo))
        out[:, lo - start : hi - start] += burst.rms_uv * envelope * noise
