"""Offline drivers of the same `AnalyzerEngine` the live service runs.

- `analyze_source`: any acquirer source (simulator, EDF) fed frame by frame in
  the order the acquirer publishes — stage markers, samples, then stimuli;
- `analyze_edf`: an EDF/EDF+/BDF file, reading only the samples of each sweep
  and telling the engine the signal between sweeps is skipped on purpose (not a
  gap). The sweep's samples are the same float32 values the acquirer would
  publish, so the numbers are identical to the live path's, only faster;
- `analyze_messages`: decoded proto messages (an archived session or a
  capture of the bus), dispatched exactly as the live service dispatches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ...proto.messages import Message
from ..acquirer.source import Chunk, Source
from .dispatcher import MessageDispatcher
from .engine import AnalyzerEngine, Output
from .settings import AnalyzerSettings


def feed_chunk(engine: AnalyzerEngine, chunk: Chunk, first_stimulus_index: int) -> tuple[list[Output], int]:
    """One source chunk, in the acquirer's publishing order; returns outputs and the next stimulus index."""
    out: list[Output] = []
    for idx, stage in chunk.stages:
        out += engine.on_stage(stage, idx)
    if chunk.n_samples:
        out += engine.on_frame(chunk.first_sample_index, chunk.samples)
    k = first_stimulus_index
    for s in chunk.stimuli:
        out += engine.on_stimulus(k, s.sample_index, s.sample_index / engine.fs, s.direction,
                                  s.intensity_ma, s.width_ms)
        k += 1
    return out, k


def analyze_source(source: Source, settings: AnalyzerSettings | None = None, *,
                   frame_ms: float = 5.0) -> Iterator[Output]:
    """Frame by frame, as the live analyzer sees the acquirer's stream of this source."""
    engine = AnalyzerEngine(source.montage, settings, source="analyze")
    n = max(1, int(round(engine.fs * frame_ms / 1000.0)))
    k = 0
    while True:
        chunk = source.read(n)
        if chunk is None:
            break
        out, k = feed_chunk(engine, chunk, k)
        yield from out
    yield from engine.on_end()


def analyze_edf(path: str | Any, settings: AnalyzerSettings | None = None) -> Iterator[Output]:
    """Only the sweeps of a recording (a path — any format `file:` reads — or a file source already
    opened, e.g. with a montage file): one measurement per stimulus and channel."""
    from ..acquirer.files import open_file

    src = open_file(path) if isinstance(path, str) else path
    try:
        engine = AnalyzerEngine(src.montage, settings, source="analyze")
        g = engine.geometry
        stages = list(src.stages)
        si = 0
        for k, stim in enumerate(src.stimuli):
            lo = max(stim.sample_index - g.pre, 0)
            hi = min(stim.sample_index + g.post, src.n_total)
            while si < len(stages) and stages[si][0] < hi:
                yield from engine.on_stage(stages[si][1], stages[si][0])
                si += 1
            hwm = engine.buffer.hwm or 0
            if lo > hwm:
                yield from engine.skip_to(lo)
            start = max(lo, engine.buffer.hwm or 0)
            if hi > start:
                yield from engine.on_frame(start, src.samples(start, hi))
            yield from engine.on_stimulus(k, stim.sample_index, stim.sample_index / engine.fs, stim.direction,
                                          stim.intensity_ma, stim.width_ms)
        for idx, stage in stages[si:]:
            yield from engine.on_stage(stage, idx)
        yield from engine.on_end()
    finally:
        src.close()


def analyze_messages(messages: Iterable[Message], settings: AnalyzerSettings | None = None) -> Iterator[Output]:
    """A recorded message stream (session_start first) through the engine, session by session."""
    d = MessageDispatcher(settings)
    for msg in messages:
        yield from d.dispatch(msg)
    yield from d.close()
