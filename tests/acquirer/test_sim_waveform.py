"""The clean AMR shape: zero before onset, steep first rise, exact p2p on the sample grid."""

from __future__ import annotations

import numpy as np
import pytest

from amrwatch.services.acquirer.sim.waveform import (
    biphasic_shape,
    draw_amr_shape,
    render_response,
    stimulus_artifact,
)

FS = 20000.0
T_MS = np.arange(0, 1200) * 1000.0 / FS


def shapes(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return [draw_amr_shape(rng, (1, 4), (0.3, 0.7)) for _ in range(n)]


def lobes(x: np.ndarray) -> int:
    """Number of runs of same-sign non-zero samples."""
    s = np.sign(x[x != 0.0])
    return int(1 + np.count_nonzero(np.diff(s))) if len(s) else 0


def test_drawn_shapes_cover_one_to_four_phases():
    counts = {s.n_phases for s in shapes()}
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("shape_index", range(0, 200, 7))
def test_response_is_exactly_zero_outside_and_has_exact_p2p(shape_index):
    shape = shapes()[shape_index]
    rng = np.random.default_rng(shape_index)
    onset = float(rng.uniform(9.0, 12.0))
    duration = float(rng.uniform(5.0, 12.0))
    p2p = float(np.exp(rng.uniform(np.log(5), np.log(1000))))
    r = render_response(shape, T_MS, onset, duration, p2p)
    assert r.p2p_uv == pytest.approx(p2p, rel=1e-12)
    assert float(r.values.max() - r.values.min()) == pytest.approx(p2p, rel=1e-12)
    before = T_MS < onset
    after = T_MS >= onset + duration
    assert np.all(r.values[before] == 0.0)
    assert np.all(r.values[after] == 0.0)
    # the first sample past onset already carries signal (nothing flat after onset)
    first = int(np.argmax(T_MS > onset))
    assert r.values[first] != 0.0
    # the phases the truth reports are the lobes one can count
    assert lobes(r.values) == shape.n_phases == r.n_phases
    # peak latency is where |x| is largest
    assert r.peak_latency_ms == pytest.approx(T_MS[np.argmax(np.abs(r.values))])
    assert onset < r.peak_latency_ms < onset + duration


def test_rise_is_steep_enough_for_an_unbiased_threshold_onset():
    """A detector taking the first sample above 20 % of the largest |x| lands within
    0.2 ms (4 samples at 20 kHz) of the true onset, never before it, for every
    drawn morphology: the first phase rises to its peak within 0.3-0.7 ms."""
    errors = []
    for i, shape in enumerate(shapes(300, seed=5)):
        rng = np.random.default_rng(1000 + i)
        onset = float(rng.uniform(9.0, 12.0))
        r = render_response(shape, T_MS, onset, float(rng.uniform(5.0, 12.0)), 100.0)
        thr = 0.2 * np.abs(r.values).max()
        detected = T_MS[np.argmax(np.abs(r.values) >= thr)]
        errors.append(detected - onset)
    errors = np.array(errors)
    assert errors.min() >= 0.0
    assert errors.max() <= 0.2, errors.max()


def test_response_outside_rendered_times_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        render_response(biphasic_shape(1), T_MS, 80.0, 2.0, 50.0)


def test_artifact_is_large_early_and_exactly_zero_after_its_end():
    a = stimulus_artifact(T_MS, 900.0, 0.2, 0.5, 4.0)
    assert np.abs(a[T_MS < 0.2]).min() == pytest.approx(900.0)
    assert np.abs(a[(T_MS >= 0.2) & (T_MS < 1.0)]).max() > 100.0
    assert np.all(a[T_MS >= 4.0] == 0.0)
    # decays: under 1 % of the pulse amplitude after 3 ms
    assert np.abs(a[T_MS >= 3.0]).max() < 9.0
