"""Hand-built sweeps with known content, for the unit tests of conditioning and measures."""

from __future__ import annotations

import numpy as np

from amrwatch.services.acquirer.sim.waveform import PhaseShape, render_response, stimulus_artifact
from amrwatch.services.analyzer.condition import SweepGeometry
from amrwatch.services.analyzer.settings import AnalyzerSettings

FS = 20_000.0
SETTINGS = AnalyzerSettings()
GEOMETRY = SweepGeometry(SETTINGS, FS)


def times_ms(g: SweepGeometry = GEOMETRY) -> np.ndarray:
    """Time after the stimulus of every sample of a sweep."""
    return (np.arange(g.n) - g.pre) * g.dt_ms


def amr(shape: PhaseShape, onset_ms: float, duration_ms: float, p2p_uv: float, g: SweepGeometry = GEOMETRY):
    """A clean AMR over the sweep and its rendered truth (p2p on the sample grid, onset, peak)."""
    t = times_ms(g)
    after = t >= 0
    out = np.zeros(g.n)
    r = render_response(shape, t[after], onset_ms, duration_ms, p2p_uv)
    out[after] = r.values
    return out, r


def shapes() -> list[PhaseShape]:
    """Mono- to tetraphasic AMRs, both polarities, steep first rise."""
    return [
        PhaseShape((1.0,), (1.0,), 1, 0.4),
        PhaseShape((0.5, 0.5), (1.0, 0.8), -1, 0.5),
        PhaseShape((0.3, 0.4, 0.3), (0.8, 1.0, 0.5), 1, 0.3),
        PhaseShape((0.25, 0.25, 0.25, 0.25), (0.9, 1.0, 0.7, 0.5), -1, 0.6),
    ]


def artifact(amplitude_uv: float = 1000.0, g: SweepGeometry = GEOMETRY) -> np.ndarray:
    return stimulus_artifact(times_ms(g), amplitude_uv, 0.2, 0.5, 4.0)


def mains(g: SweepGeometry = GEOMETRY, hz: float = 50.0, uv: float = 4.0, phase: float = 0.7,
          harmonic: int = 3, ratio: float = 0.3) -> np.ndarray:
    t = times_ms(g) / 1000.0
    return uv * np.sin(2 * np.pi * hz * t + phase) + uv * ratio * np.sin(2 * np.pi * hz * harmonic * t + 2 * phase)
