"""A simulated session held in memory, to feed the engine in different ways."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amrwatch.proto.messages import Montage
from amrwatch.services.acquirer.simsource import SimSource
from amrwatch.services.acquirer.source import Truth
from amrwatch.services.analyzer.engine import AnalyzerEngine, Output


@dataclass
class Session:
    montage: Montage
    samples: np.ndarray  # (channels, n) float32
    stimuli: list[tuple[int, int, str]]  # (stimulus_index, sample_index, direction)
    stages: list[tuple[int, str]]
    truths: dict[tuple[int, str], Truth] = field(default_factory=dict)

    @property
    def fs(self) -> float:
        return self.montage.sampling_rate_hz


def simulate(seed: int = 0, **sim) -> Session:
    src = SimSource(seed=seed, **sim)
    blocks, stimuli, stages, truths = [], [], [], {}
    while True:
        c = src.read(50_000)
        if c is None:
            break
        blocks.append(c.samples)
        for s in c.stimuli:
            stimuli.append((len(stimuli), s.sample_index, s.direction))
        stages += c.stages
        truths.update({(t.stimulus_index, t.channel): t for t in c.truths})
    return Session(src.montage, np.concatenate(blocks, axis=1), stimuli, stages, truths)


def feed(engine: AnalyzerEngine, s: Session, frame_sizes, *, stages_after_frame: bool = False) -> list[Output]:
    """Frames of the given sizes (cycled), stimuli and stages delivered as the acquirer does
    (stages before the frame that holds them, stimuli after) or stages after the frame."""
    out: list[Output] = []
    sizes = list(frame_sizes)
    pos, i, si, gi = 0, 0, 0, 0
    n = s.samples.shape[1]
    while pos < n:
        end = min(n, pos + sizes[i % len(sizes)])
        i += 1
        due = []
        while gi < len(s.stages) and s.stages[gi][0] < end:
            due.append(s.stages[gi])
            gi += 1
        if not stages_after_frame:
            for idx, stage in due:
                out += engine.on_stage(stage, idx)
        out += engine.on_frame(pos, s.samples[:, pos:end], s.fs)
        if stages_after_frame:
            for idx, stage in due:
                out += engine.on_stage(stage, idx)
        while si < len(s.stimuli) and s.stimuli[si][1] < end:
            k, idx, d = s.stimuli[si]
            out += engine.on_stimulus(k, idx, idx / s.fs, d)
            si += 1
        pos = end
    return out + engine.on_end()


def pairs(outputs: list[Output]) -> list[tuple[str, dict]]:
    """(message type, body as a dict) of each output, for tests that compare or select by type."""
    return [(o.TOPIC, o.fields()) for o in outputs]


def of_type(outputs: list[Output], kind: str) -> list[dict]:
    return [o.fields() for o in outputs if o.TOPIC == kind]


def by_key(outputs: list[Output]) -> dict[tuple[int, str], dict]:
    return {(f["stimulus_index"], f["channel"]): f for f in of_type(outputs, "amr_measurement")}
