"""`sim` — the physiological simulator as a source (see sim/)."""

from __future__ import annotations

from typing import Any

from ...proto.messages import Montage
from .labels import BRANCH
from .sim.config import SimConfig
from .sim.stream import Simulator
from .source import Chunk, StimulusEvent


class SimSource:
    paced = True
    ground_truth = True

    def __init__(self, seed: int = 0, manual: bool = False, **config: Any) -> None:
        self.config = SimConfig(**config)
        self.seed = seed
        self.manual = manual
        self.sim = Simulator(self.config, seed=seed)
        self.spec = "sim"
        self.scenario = self.config.scenario
        fs = self.config.sampling_rate_hz
        channels = []
        for ch in self.sim.channels:
            if ch.kind == "sample_index":
                channels.append(dict(name=ch.name, muscle="none", direction=None, kind="sample_index", unit="index"))
            else:
                channels.append(dict(name=ch.name, muscle=ch.muscle, direction=ch.direction))
        dirs = list(dict.fromkeys(self.config.directions))
        self.montage = Montage(
            sampling_rate_hz=fs,
            channels=channels,
            stimulation=[{"direction": d, "stimulated_branch": BRANCH[d]} for d in dirs],
        )

    def read(self, n_samples: int) -> Chunk | None:
        if self.sim.finished:
            return None
        c = self.sim.read(n_samples)
        return Chunk(
            first_sample_index=c.first_sample_index,
            samples=c.samples,
            stimuli=[StimulusEvent(s.sample_index, s.direction, s.intensity_ma, s.width_ms) for s in c.stimuli],
            stages=[] if self.manual else list(c.stages),
            factors=[] if self.manual else list(c.factors),
            truths=list(c.truths),
            device_time_s=c.first_sample_index / self.config.sampling_rate_hz,
        )

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed}
        for k, v in self.config.model_dump().items():
            if isinstance(v, (bool, int, float, str)) or v is None:
                out[k] = v
            elif isinstance(v, list):
                out[k] = ",".join(map(str, v))[:256]
        return dict(list(out.items())[:64])

    def close(self) -> None:
        pass
