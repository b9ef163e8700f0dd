"""The one small interface every signal source implements.

A source hands out blocks of samples with the stimuli, stage markers and
patient factors that fall in them, each pinned to a sample index. The
acquirer does the pacing, framing and publishing; sources only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ...proto.messages import Montage, SimTruthBody


@dataclass(frozen=True)
class StimulusEvent:
    sample_index: int
    direction: str
    intensity_ma: float | None = None
    width_ms: float | None = None


#: Simulator ground truth for one stimulus and channel: the body of a `sim_truth` message, defined once in proto.
Truth = SimTruthBody


@dataclass
class Chunk:
    first_sample_index: int
    samples: np.ndarray  # (n_channels, n_samples) float32 µV
    stimuli: list[StimulusEvent] = field(default_factory=list)
    stages: list[tuple[int, str]] = field(default_factory=list)
    factors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    truths: list[SimTruthBody] = field(default_factory=list)
    device_time_s: float | None = None  # device clock of the first sample, if the device has one

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])


class Source(Protocol):
    spec: str  # "sim", "edf:PATH", "lsl:NAME"
    montage: Montage
    scenario: str | None
    ground_truth: bool
    paced: bool  # True: the acquirer paces reads against the clock; False: the device does
    manual: bool  # stages and factors come from the operator

    def read(self, n_samples: int) -> Chunk | None:
        """Up to n_samples more (live sources may return fewer, even 0); None when exhausted."""

    def settings(self) -> dict[str, Any]:
        """Scalars that describe the acquisition, archived with the session."""

    def close(self) -> None: ...

    # Optional (live sources): `stream_facts` — a dict for SessionStart.stream; `health()` —
    # conditions to alarm on, key → (kind, priority, message, pulse); see lsl.py.


class SourceError(ValueError):
    """A source that cannot be opened or read; the message says what to do."""


def open_source(spec: str, **options: Any) -> Source:
    """`sim`, `file:PATH` (any format files.py reads), `edf:PATH` or `lsl:NAME` → a Source."""
    kind, _, arg = spec.partition(":")
    if kind == "sim":
        from .simsource import SimSource

        return SimSource(**options)
    if kind == "edf":
        if not arg:
            raise SourceError("--source edf:PATH needs a file path, e.g. edf:/data/case12.edf")
        from .edf import EdfSource

        return EdfSource(arg, **{k: v for k, v in options.items() if k in ("speed_hint", "montage")})
    if kind == "file":
        if not arg:
            raise SourceError("--source file:PATH needs a file path, e.g. file:/data/case12.vhdr")
        from .files import open_file

        return open_file(arg, **{k: v for k, v in options.items() if k in ("speed_hint", "montage")})
    if kind == "lsl":
        if not arg:
            raise SourceError("--source lsl:NAME needs a stream name, e.g. lsl:EMG (options: lsl:EMG?gap_tolerance_ms=2)")
        from .lsl import LslSource

        return LslSource(arg, **{k: v for k, v in options.items() if k in ("montage",)})
    raise SourceError(f"--source must be sim, file:PATH, edf:PATH or lsl:STREAM_NAME; got {spec!r}")
