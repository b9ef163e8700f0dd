"""Offline drivers of the same `AnalyzerEngine` the live service runs.

- `analyze_source`: any acquirer source (simulator, EDF) fed frame by frame in
  the order the acquirer publishes — stage markers, samples, then stimuli;
- `analyze_edf`: an EDF/EDF+/BDF file, reading only the samples of each sweep
  and telling the engine the signal between sweeps is skipped on purpose (not a
  gap). The sweep's samples are the same float32 values the acquirer would
  publish, so the numbers are identical to the live path's, only faster;
- `analyze_messages`: decoded proto messages (a capture of the bus),
  dispatched exactly as the live service dispatches them;
- `analyze_archive`: an archived session (archive.open_session) in signal
  order — the one feed `amrwatch analyze DIR/ID` and `amrwatch verify` share,
  so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


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


#: An archived session's frames are handed to the engine in blocks of at most this long (never across a
#: stimulus, stage or hole; see ArchivedSession.messages): the engine's results do not depend on how the
#: signal is split, and one call per second of signal instead of per 5 ms frame is what makes it fast.
BLOCK_S = 1.0


def analyze_archive(session: Any, settings: AnalyzerSettings | None = None, *, source: str = "analyze",
                    finish: bool = True) -> Iterator[Output]:
    """An archived session (`archive.session.ArchivedSession`) through the engine in signal order: the
    order the acquirer published it, so frames the recorder refetched after a loss (archived later in the
    log) are back in their place and are not mistaken for gaps. `finish`: end the session after the last
    message even if the archive holds no `session_end` (verify does not: it recomputes only what the live
    analyzer could have sent)."""
    settings = settings or AnalyzerSettings()
    d = MessageDispatcher(settings, source)
    for msg in session.messages("signal", block_s=min(BLOCK_S, settings.buffer_s / 2)):
        yield from d.dispatch(msg)
    if finish:
        yield from d.close()
