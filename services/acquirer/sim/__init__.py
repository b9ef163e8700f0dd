"""Physiological AMR simulator: the acquirer's default source.

Pure logic (no sockets, no clock): `Simulator(config, seed).read(n)` returns
the next n samples of a scripted MVD with its stimuli, stage markers,
patient factors and ground truth (proto's `SimTruthBody`, the body of a
`sim_truth` message).
"""

from .config import SimConfig
from .montage import DEFAULT_CHANNELS, SimChannel
from .scenario import scenario_names
from .stream import SimChunk, Simulator, SimStimulus

__all__ = [
    "DEFAULT_CHANNELS",
    "SimChannel",
    "SimChunk",
    "SimConfig",
    "SimStimulus",
    "Simulator",
    "scenario_names",
]
