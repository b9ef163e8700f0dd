"""Measures on conditioned sweeps, and the refusal of sweeps that cannot be measured."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from amrwatch.services.analyzer.condition import Conditioner
from amrwatch.services.analyzer.measure import Measurer, reject_reasons

from .sweeps import GEOMETRY, SETTINGS, amr, artifact, shapes, times_ms

COND = Conditioner(GEOMETRY)
MEAS = Measurer(GEOMETRY)


def run(rows: list[np.ndarray]):
    return MEAS(COND(np.array(rows, dtype=np.float32)))


@pytest.mark.parametrize("shape_i", range(4))
def test_clean_responses(shape_i):
    shape = shapes()[shape_i]
    rows, truths = [], []
    for onset, duration, p2p in ((7.5, 5.0, 60.0), (10.0, 10.0, 300.0), (12.0, 12.5, 1500.0)):
        x, r = amr(shape, onset, duration, p2p)
        rows.append(x + artifact(800.0))
        truths.append(r)
    m = run(rows)
    for i, r in enumerate(truths):
        assert m.present[i]
        assert m.p2p_uv[i] == pytest.approx(r.p2p_uv, rel=0.04), f"p2p of {shape.n_phases}-phasic AMR"
        assert abs(m.onset_ms[i] - r.onset_latency_ms) < 0.1
        assert abs(m.peak_ms[i] - r.peak_latency_ms) < 0.3
        assert m.n_phases[i] == shape.n_phases
        assert m.area_uv_ms[i] > 0.1 * r.p2p_uv  # rectified: never cancels out


def test_noise_is_the_filtered_rms_of_the_pre_stimulus_window():
    """White noise of RMS s comes out as s x sqrt(equivalent noise bandwidth / Nyquist)."""
    rng = np.random.default_rng(5)
    sigma = 10.0
    m = run(list(rng.standard_normal((300, GEOMETRY.n)) * sigma))
    f, h = signal.sosfreqz(COND.sos, worN=8192, fs=GEOMETRY.fs)
    enbw = np.trapezoid(np.abs(h) ** 4, f)  # the zero-phase filter applies |H|², power |H|⁴
    expected = sigma * np.sqrt(enbw / (GEOMETRY.fs / 2))
    assert np.median(m.noise_uv) == pytest.approx(expected, rel=0.05)
    assert 2.5 < np.median(m.p2p_uv / m.noise_uv) < SETTINGS.present_noise_factor
    assert np.mean(m.present) < 0.01  # pure noise is absent
    np.testing.assert_allclose(m.snr, m.p2p_uv / (2 * np.sqrt(2) * m.noise_uv))


def test_noise_ignores_a_slow_drift():
    rng = np.random.default_rng(6)
    drift = np.where(times_ms() < 0, 0.8 * (times_ms() + 20.0), 16.0)  # 16 µV over the window
    m = run([rng.standard_normal(GEOMETRY.n) * 4.0, rng.standard_normal(GEOMETRY.n) * 4.0 + drift])
    assert m.noise_uv[1] == pytest.approx(m.noise_uv[0], rel=0.15)


def test_present_needs_the_noise_multiple_and_the_floor():
    rng = np.random.default_rng(7)
    shape = shapes()[1]
    small, _ = amr(shape, 10.0, 8.0, 15.0)  # well above tiny noise, under the 20 µV floor
    ok, _ = amr(shape, 10.0, 8.0, 30.0)
    noisy, _ = amr(shape, 10.0, 8.0, 30.0)
    m = run([small + rng.standard_normal(GEOMETRY.n) * 0.2,
             ok + rng.standard_normal(GEOMETRY.n) * 0.2,
             noisy + rng.standard_normal(GEOMETRY.n) * 12.0])  # 30 µV in 12 µV RMS noise
    assert list(m.present) == [False, True, False]
    assert np.isnan(m.onset_ms[0]) and np.isnan(m.peak_ms[0]) and m.n_phases[0] == 0


def test_onset_does_not_depend_on_amplitude():
    """A threshold detector reports later onsets for smaller responses; extrapolation does not."""
    shape = shapes()[0]
    rows = [amr(shape, 10.0, 8.0, a)[0] for a in (40.0, 150.0, 600.0, 2400.0)]
    m = run(rows)
    assert np.ptp(m.onset_ms) < 0.02


def test_reject_reasons():
    rng = np.random.default_rng(8)
    n = GEOMETRY.n
    big, _ = amr(shapes()[0], 9.0, 6.0, 1500.0)
    burst = np.zeros(n)
    burst[1200:1300] = rng.standard_normal(100) * 1500.0  # 5 ms of electrocautery at the sweep's end
    nan = rng.standard_normal(n)
    nan[700] = np.nan
    clipped = big * 5.0
    rows = np.array([
        rng.standard_normal(n) * 3.0 + artifact(1500.0),  # ordinary: the artifact is not diathermy
        big + rng.standard_normal(n) * 3.0,  # a large, steep AMR is not diathermy
        rng.standard_normal(n) * 200.0,  # very poor contact is still not diathermy
        burst,
        nan,
        clipped,
    ], dtype=np.float32)
    assert reject_reasons(rows, GEOMETRY) == [None, None, None, "diathermy", "nan", "saturated"]


def _simulated_sweeps(noise_uv: float, seed: int, g=GEOMETRY) -> np.ndarray:
    """Conditioned sweeps of the simulator's three channels: AMRs of every size, and absent ones."""
    from amrwatch.services.acquirer.sim import SimConfig, Simulator

    sim = Simulator(SimConfig(scenario="calibration", calibration_stimuli=60, calibration_absent_fraction=0.3,
                              noise_uv=noise_uv, sampling_rate_hz=g.fs), seed=seed)
    chunk = sim.read(sim.timeline.total_samples)
    cond = Conditioner(g)
    return np.concatenate([cond(chunk.samples[:3, s.sample_index - g.pre : s.sample_index + g.post])
                           for s in chunk.stimuli if s.sample_index + g.post <= chunk.samples.shape[1]])


@pytest.mark.parametrize("settings", [
    SETTINGS,
    SETTINGS.model_copy(update={"analysis_ms": (4.0, 12.0), "noise_ms": (-10.0, -2.0), "onset_levels": (0.1, 0.6),
                                "phase_fraction": 0.05}),
], ids=["defaults", "other-windows"])
def test_compiled_measures_agree_with_the_numpy_reference(settings):
    """The per-sample loop and the whole-array formulation (tests/analyzer/reference.py) of the same
    definitions give the same numbers on ~1,000 sweeps of every size and noise, present or not."""
    from amrwatch.services.analyzer.condition import SweepGeometry

    from .reference import ReferenceMeasurer

    g = SweepGeometry(settings, 20_000.0)
    y = np.concatenate([_simulated_sweeps(noise, seed, g) for seed, noise in ((1, 1.0), (2, 6.0), (3, 30.0))]
                       + [np.zeros((1, g.n), dtype=np.float32)])
    got, ref = Measurer(g)(y), ReferenceMeasurer(g)(y)
    assert 0.2 < got.present.mean() < 0.9, "the set needs present and absent sweeps"
    np.testing.assert_array_equal(got.present, ref["present"])
    np.testing.assert_array_equal(got.n_phases, ref["n_phases"])
    np.testing.assert_array_equal(got.direct, ref["direct"])
    np.testing.assert_array_equal(got.p2p_uv, ref["p2p_uv"])
    for name in ("noise_uv", "snr", "area_uv_ms"):  # float32 sums in the reference, float64 in the loop
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=2e-5, atol=1e-9, err_msg=name)
    for name in ("onset_ms", "peak_ms"):
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=0, atol=1e-7, err_msg=name)  # published to 1e-4 ms
