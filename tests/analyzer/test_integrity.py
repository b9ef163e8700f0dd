"""Stimulus confirmation from the recording (services/analyzer/integrity.py), sweep by sweep."""

from __future__ import annotations

import numpy as np

from amrwatch.services.acquirer.labels import montage_from_labels
from amrwatch.services.analyzer.condition import Conditioner, SweepGeometry
from amrwatch.services.analyzer.integrity import StimulusCheck
from amrwatch.services.analyzer.settings import AnalyzerSettings

FS = 20_000.0
MONTAGE = montage_from_labels(["MENT", "OORIS", "OOCUL"], FS)


def check(settings: AnalyzerSettings | None = None) -> tuple[StimulusCheck, SweepGeometry]:
    g = SweepGeometry(settings or AnalyzerSettings(), FS)
    return StimulusCheck(MONTAGE, g, Conditioner(g), {"ZYG": [0, 1], "MAR": [2]}), g


def sweeps(g: SweepGeometry, n: int, noise_uv: float, seed: int) -> np.ndarray:
    """n sweeps of 3 channels: band-limited noise, 50 Hz hum, a slow offset; no stimulus of any kind."""
    rng = np.random.default_rng(seed)
    t = (np.arange(g.n) - g.pre) / FS
    x = rng.standard_normal((n, 3, g.n)) * noise_uv
    x += 8.0 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi, (n, 3, 1)))
    x += rng.uniform(-200, 200, (n, 3, 1))
    return x.astype(np.float32)


def test_noise_and_hum_never_pass_for_an_artifact():
    sc, g = check()
    x = sweeps(g, 400, 20.0, seed=1)
    assert not any(sc.has_artifact(s) for s in x), "a noise peak taken for proof of delivery"
    no_rows = lambda rows: None  # noqa: E731 - nothing else to read
    assert not any(sc("ZYG", s[:2], False, lambda rows, s=s: s[rows]).confirmed for s in x[:50])
    assert not sc("ZYG", x[0, :2], False, no_rows).confirmed


def test_an_artifact_on_any_emg_channel_confirms():
    sc, g = check()
    x = sweeps(g, 20, 20.0, seed=2)
    a0, _ = g.window((0.0, 0.3))
    for s in x:
        s[2, a0 : a0 + 4] += 600.0  # a 0.2 ms pulse on OOCUL only (not a ZYG recording channel)
        c = sc("ZYG", s[:2], False, lambda rows, s=s: s[rows])
        assert c.confirmed and c.by == "artifact"
    # below artifact_factor x the pre-stimulus RMS or the floor: not an artifact
    weak = sweeps(g, 20, 20.0, seed=3)
    weak[:, :, a0 : a0 + 4] += 120.0  # ~6x the 20 µV RMS: under the 10x rule
    assert not any(sc.has_artifact(s) for s in weak)


def test_direct_mode_needs_the_stimulated_branchs_own_muscle():
    sc, g = check(AnalyzerSettings(stimulus_check="direct"))
    x = sweeps(g, 10, 3.0, seed=4)
    a0, _ = g.window((0.0, 0.3))
    t = (np.arange(g.n) - g.pre) * g.dt_ms
    m_wave = (-(t - 4.0) / 0.4 * np.exp(-0.5 * ((t - 4.0) / 0.4) ** 2) * 100.0).astype(np.float32)
    for s in x:
        s[:, a0 : a0 + 4] += 2000.0  # an artifact (or a blanking step) proves nothing in 'direct' mode
        assert not sc("ZYG", s[:2], False, lambda rows, s=s: s[rows]).confirmed
        s[2] += m_wave  # the zygomatic branch's own orbicularis oculi response
        c = sc("ZYG", s[:2], False, lambda rows, s=s: s[rows])
        assert c.confirmed and c.by == "direct_response"
        # for MAR the own muscles are mentalis and orbicularis oris, which show nothing here
        assert not sc("MAR", s[2:], False, lambda rows, s=s: s[rows]).confirmed
