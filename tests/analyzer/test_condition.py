"""Conditioning: artifact blank, baseline and mains fit, zero-phase band-pass."""

from __future__ import annotations

import numpy as np
from scipy import signal

from amrwatch.services.analyzer.condition import Conditioner, SweepGeometry, zero_phase
from amrwatch.services.analyzer.measure import Measurer
from amrwatch.services.analyzer.settings import AnalyzerSettings

from .sweeps import FS, GEOMETRY, SETTINGS, amr, artifact, mains, shapes, times_ms


def test_zero_phase_is_scipy_sosfiltfilt():
    c = Conditioner(SweepGeometry(AnalyzerSettings(filter_method="sosfiltfilt"), FS))
    x = np.random.default_rng(1).standard_normal((3, GEOMETRY.n)) * 10
    ours = zero_phase(c.sos, c.zi, c.padlen, x)
    ref = signal.sosfiltfilt(c.sos, x, axis=-1, padtype="even", padlen=c.padlen)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_fft_and_sosfiltfilt_give_the_same_measures():
    rng = np.random.default_rng(2)
    fft, sos = Conditioner(GEOMETRY), Conditioner(SweepGeometry(AnalyzerSettings(filter_method="sosfiltfilt"), FS))
    m = Measurer(GEOMETRY)
    sweeps = []
    for i, shape in enumerate(shapes() * 5):
        x, _ = amr(shape, 9.0 + i % 4, 6.0 + i % 9, 50.0 + 40 * i)
        sweeps.append(x + mains() + artifact() + rng.standard_normal(GEOMETRY.n) * 3)
    x = np.array(sweeps, dtype=np.float32)
    a, b = m(fft(x)), m(sos(x))
    np.testing.assert_allclose(a.p2p_uv, b.p2p_uv, rtol=0.01)
    np.testing.assert_allclose(a.onset_ms, b.onset_ms, atol=0.05)


def test_mains_and_drift_are_fitted_out():
    """4 µV of 50 Hz (+ 3rd harmonic) and a 30 µV drift swamp a 40 µV AMR unless removed."""
    clean, _ = amr(shapes()[1], 10.0, 8.0, 40.0)
    drift = np.linspace(-15.0, 15.0, GEOMETRY.n)
    x = np.array([clean + mains() + drift, clean], dtype=np.float32)
    a0, a1 = GEOMETRY.analysis
    for mode, limit in (("fit", 0.3), ("notch", None), ("off", None)):
        y = Conditioner(SweepGeometry(AnalyzerSettings(mains_mode=mode), FS))(x)
        err = float(np.max(np.abs(y[0, a0:a1] - y[1, a0:a1])))
        if mode == "fit":
            assert err < limit, f"fit leaves {err:.2f} µV of mains/drift"
            fit_err = err
        elif mode == "off":
            assert err > 3.0 > 10 * fit_err  # without removal the mains is plainly there
        else:
            assert err < 5.0  # a notch helps somewhat; its transient outlasts a 70 ms sweep


def recovery_artifact(amplitude_uv: float) -> np.ndarray:
    """Pulse feed-through then a monophasic amplifier recovery (tau 0.4 ms), over by 3 ms."""
    t = times_ms()
    out = np.where((t >= 0) & (t < 0.2), amplitude_uv, 0.0)
    tail = t >= 0.2
    out[tail] = amplitude_uv * np.exp(-(t[tail] - 0.2) / 0.4)
    return out


def test_artifact_is_blanked():
    """Stimulus artifacts leave nothing measurable in the noise or analysis window."""
    raw = np.array([artifact(1000.0), -artifact(600.0), recovery_artifact(1000.0)], dtype=np.float32)
    y = Conditioner(GEOMETRY)(raw)
    a0, a1 = GEOMETRY.analysis
    n0, n1 = GEOMETRY.noise
    assert np.max(np.ptp(y[:, a0:a1], axis=1)) < 1.0
    assert np.max(np.abs(y[:, n0:n1])) < 1.0
    # What the blank saves us from: the band-pass spreads an unblanked artifact into the window.
    unblanked = Conditioner(SweepGeometry(AnalyzerSettings(blank_ms=(0.0, 0.05)), FS))(raw[2:])
    assert np.ptp(unblanked[0, a0:a1]) > 5.0


def test_zero_phase_does_not_move_a_peak():
    t = times_ms()
    pulse = 100.0 * np.exp(-0.5 * ((t - 12.0) / 0.8) ** 2)
    y = Conditioner(GEOMETRY)(np.array([pulse], dtype=np.float32))
    assert abs(t[int(np.argmax(y[0]))] - 12.0) <= GEOMETRY.dt_ms


def test_other_sampling_rates():
    g = SweepGeometry(SETTINGS, 10_000.0)
    y = Conditioner(g)(np.zeros((2, g.n), dtype=np.float32))
    assert y.shape == (2, g.n) and g.n == 700
    assert FS == 20_000.0
