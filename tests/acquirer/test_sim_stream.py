"""Simulator.read: determinism, truth consistency, noise, diathermy and the sample-index channel."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from amrwatch.services.acquirer.sim.config import SimConfig
from amrwatch.services.acquirer.sim.montage import SAMPLE_INDEX_MODULUS
from amrwatch.proto.messages import SURGICAL_STAGES
from amrwatch.services.acquirer.sim.stream import Simulator

FS = 20000.0


def read_all(sim: Simulator, sizes=(None,), limit: int | None = None):
    """Reads until `finished` (or `limit` samples) with chunk sizes cycling through `sizes`."""
    total = limit if limit is not None else sim.total_samples
    parts, stimuli, truths, stages, factors = [], [], [], [], []
    for size in itertools.cycle(sizes):
        left = total - sim.position
        if left <= 0:
            break
        c = sim.read(left if size is None else min(size, left))
        assert c.samples.dtype == np.float32 and c.samples.flags["C_CONTIGUOUS"]
        assert c.samples.shape == (len(sim.channels), min(left if size is None else size, left))
        parts.append(c.samples)
        stimuli += c.stimuli
        truths += c.truths
        stages += c.stages
        factors += c.factors
    return np.concatenate(parts, axis=1), stimuli, truths, stages, factors


QUIET = dict(noise_uv=0.0, mains_uv=0.0, wander_uv=0.0, diathermy=False)


def ms(x: float) -> int:
    return int(round(x * FS / 1000.0))


# --------------------------------------------------------------------------- #
# determinism


def test_same_seed_gives_identical_bytes_and_events():
    cfg = SimConfig(time_scale=0.05, sample_index_channel=True)
    a = read_all(Simulator(cfg, seed=11))
    b = read_all(Simulator(cfg, seed=11))
    assert hashlib.sha256(a[0].tobytes()).digest() == hashlib.sha256(b[0].tobytes()).digest()
    assert a[1:] == b[1:]
    c = read_all(Simulator(cfg, seed=12))
    assert not np.array_equal(a[0][:3], c[0][:3])


def test_output_does_not_depend_on_chunking():
    cfg = SimConfig(time_scale=0.05)
    whole = read_all(Simulator(cfg, seed=3))
    for sizes in [(100,), (1, 7, 8191, 8193, 37, 50_000, 0, 4096)]:
        chunked = read_all(Simulator(cfg, seed=3), sizes)
        assert np.array_equal(whole[0], chunked[0]), sizes
        assert whole[1:] == chunked[1:], sizes


def test_events_arrive_in_the_chunk_holding_their_sample():
    sim = Simulator(SimConfig(time_scale=0.05), seed=1)
    while not sim.finished:
        c = sim.read(1234)
        lo, hi = c.first_sample_index, c.first_sample_index + c.samples.shape[1]
        for s in c.stimuli:
            assert lo <= s.sample_index < hi
        for s, _ in c.stages + c.factors:
            assert lo <= s < hi
        assert [t.stimulus_index for t in c.truths] == sorted(t.stimulus_index for t in c.truths)
        assert {t.stimulus_index for t in c.truths} == {s.stimulus_index for s in c.stimuli}


def test_bad_read_sizes_and_seeds_are_rejected():
    sim = Simulator(SimConfig(time_scale=0.05))
    with pytest.raises(ValueError, match="n_samples"):
        sim.read(-1)
    with pytest.raises(ValueError, match="n_samples"):
        sim.read(2.5)
    with pytest.raises(ValueError, match="seed"):
        Simulator(SimConfig(), seed=-3)


# --------------------------------------------------------------------------- #
# ground truth against the signal


def test_clean_signal_matches_truth_amplitude_onset_and_peak():
    cfg = SimConfig(time_scale=0.1, **QUIET)
    sim = Simulator(cfg, seed=5)
    x, stimuli, truths, _, _ = read_all(sim)
    names = [c.name for c in sim.channels]
    by_index = {s.stimulus_index: s for s in stimuli}
    present = absent = 0
    for t in truths:
        s = by_index[t.stimulus_index].sample_index
        lo = s + ms(cfg.artifact_end_ms)
        seg = x[names.index(t.channel), lo : s + ms(50.0)].astype(np.float64)
        if t.amplitude_uv == 0.0:
            assert np.all(seg == 0.0)
            absent += 1
            continue
        present += 1
        assert seg.max() - seg.min() == pytest.approx(t.amplitude_uv, rel=1e-5)
        first = lo + int(np.flatnonzero(seg)[0])
        onset_ms = (first - s) * 1000.0 / FS
        assert 0.0 < onset_ms - t.onset_latency_ms <= 1000.0 / FS + 1e-9
        peak = lo + int(np.argmax(np.abs(seg)))
        assert (peak - s) * 1000.0 / FS == pytest.approx(t.peak_latency_ms, abs=1e-9)
        assert 1 <= t.n_phases <= 4
        assert 6.0 <= t.onset_latency_ms < t.peak_latency_ms <= 25.0
    assert present > 10 and absent > 2


def test_truths_cover_the_recording_channels_of_each_stimulus_direction():
    sim = Simulator(SimConfig(time_scale=0.05), seed=2)
    _, stimuli, truths, _, _ = read_all(sim)
    recording = {d: sorted(c.name for c in sim.channels if c.direction == d) for d in ("ZYG", "MAR")}
    for s in stimuli:
        mine = sorted(t.channel for t in truths if t.stimulus_index == s.stimulus_index)
        assert mine == recording[s.direction]
        assert all(t.noise_rms_uv == 3.0 for t in truths if t.stimulus_index == s.stimulus_index)


def test_artifact_and_direct_response_stay_before_the_analysis_window():
    """With the AMR scaled to zero, everything from 6 ms on is exactly zero: the artifact
    (every channel, decayed by artifact_end_ms) and the direct response of the stimulated
    branch (2-5.5 ms, the other direction's channels) stay out of the analysis window."""
    cfg = SimConfig(time_scale=0.05, amr_amplitude_scale=0.0, **QUIET)
    x, stimuli, truths, _, _ = read_all(Simulator(cfg, seed=8))
    assert all(t.amplitude_uv == 0.0 for t in truths)
    pulse = cfg.intensity_ma * cfg.artifact_uv_per_ma
    for s in stimuli:
        i = s.sample_index
        assert np.all(x[:, i + ms(6.0) : i + ms(400.0)] == 0.0)
        assert np.all(x[:, i - ms(100.0) : i] == 0.0)
        assert np.all(np.abs(x[:, i : i + ms(cfg.width_ms)]).min(axis=1) >= 0.5 * pulse)

    no_artifact = SimConfig(time_scale=0.05, amr_amplitude_scale=0.0, artifact_uv_per_ma=0.0, **QUIET)
    sim = Simulator(no_artifact, seed=8)
    x, stimuli, _, _, _ = read_all(sim)
    for s in stimuli:
        i = s.sample_index
        for row, ch in enumerate(sim.channels):
            direct = x[row, i : i + ms(6.0)]
            if ch.direction == s.direction:
                assert np.all(direct == 0.0)
            else:
                assert direct.max() - direct.min() > 0.5 * no_artifact.direct_response_uv
                assert np.all(x[row, i : i + ms(no_artifact.direct_onset_ms[0])] == 0.0)


# --------------------------------------------------------------------------- #
# background


@pytest.mark.parametrize("noise_uv", [1.0, 3.0, 20.0])
def test_noise_rms_in_pre_stimulus_windows_matches_setting(noise_uv):
    cfg = SimConfig(time_scale=0.05, noise_uv=noise_uv, mains_uv=0.0, wander_uv=0.0, diathermy=False)
    sim = Simulator(cfg, seed=4)
    x, stimuli, truths, _, _ = read_all(sim)
    windows = [x[:3, s.sample_index - ms(300.0) : s.sample_index - ms(1.0)] for s in stimuli[1:]]
    rms = np.sqrt(np.mean(np.concatenate(windows, axis=1).astype(np.float64) ** 2, axis=1))
    assert rms == pytest.approx([noise_uv] * 3, rel=0.02)
    assert {t.noise_rms_uv for t in truths} == {noise_uv}


def test_mains_fundamental_and_harmonic_amplitudes():
    cfg = SimConfig(noise_uv=0.0, wander_uv=0.0, diathermy=False, first_stimulus_s=2.0)
    x = Simulator(cfg, seed=1).read(int(2.0 * FS)).samples[:3].astype(np.float64)
    spec = 2.0 * np.abs(np.fft.rfft(x, axis=1)) / x.shape[1]
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / FS)
    at = lambda f: spec[:, int(np.argmin(np.abs(freqs - f)))]  # noqa: E731
    assert at(50.0) == pytest.approx([4.0] * 3, rel=1e-3)
    assert at(150.0) == pytest.approx([1.2] * 3, rel=1e-3)
    assert np.all(at(100.0) < 1e-3)


def test_baseline_wander_is_slow_and_bounded():
    cfg = SimConfig(
        time_scale=0.05, noise_uv=0.0, mains_uv=0.0, diathermy=False,
        artifact_uv_per_ma=0.0, direct_response_uv=0.0, amr_amplitude_scale=0.0,
    )
    x, *_ = read_all(Simulator(cfg, seed=6))
    x = x.astype(np.float64)
    assert np.abs(x).max() <= cfg.wander_uv
    assert np.all(np.ptp(x, axis=1) > 0.5 * cfg.wander_uv)
    power = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / FS)
    assert power[:, freqs > 2.0].sum() / power.sum() < 1e-3


# --------------------------------------------------------------------------- #
# diathermy


def test_diathermy_only_in_surgical_stages_saturating_and_flagged():
    cfg = SimConfig(time_scale=0.2)
    sim = Simulator(cfg, seed=9)
    x, stimuli, truths, stages, _ = read_all(sim)
    starts = dict((name, s) for s, name in stages)
    assert {b.stage for b in sim.bursts} == set(SURGICAL_STAGES)
    assert all(starts["incision"] <= b.start and b.end <= starts["end"] for b in sim.bursts)
    assert all(sim.timeline.stage_at(b.start) == sim.timeline.stage_at(b.end - 1) == b.stage for b in sim.bursts)
    emg = x[:3]
    # baseline: nothing but EMG, artifacts and background
    assert np.abs(emg[:, : starts["incision"]]).max() < 0.5 * cfg.amplifier_limit_uv
    # bursts: 10-100x the EMG, clipped like a saturated amplifier
    assert np.abs(emg).max() == pytest.approx(cfg.amplifier_limit_uv)
    for b in sim.bursts:
        mid = emg[:, b.start + ms(50) : b.end - ms(50)].astype(np.float64)
        assert np.sqrt(np.mean(mid**2)) > 1000.0
    # the truth flags exactly the sweeps a burst touches; the others are clean
    by_index = {s.stimulus_index: s.sample_index for s in stimuli}
    flagged = {t.stimulus_index for t in truths if t.diathermy}
    assert flagged
    for k, s in by_index.items():
        late = np.abs(emg[:, s + ms(30.0) : s + ms(50.0)]).max()
        pre = np.abs(emg[:, s - ms(10.0) : s]).max()
        if k not in flagged:
            assert max(late, pre) < 500.0, k
    loud = [k for k in flagged if np.abs(emg[:, by_index[k] - ms(10) : by_index[k] + ms(50)]).max() > 500.0]
    assert len(loud) >= 0.9 * len(flagged)


def test_no_diathermy_when_disabled_or_in_calibration():
    sim = Simulator(SimConfig(time_scale=0.2, diathermy=False), seed=9)
    assert sim.bursts == []
    assert not any(t.diathermy for k in range(sim.n_stimuli) for t in sim.truths(k))
    assert Simulator(SimConfig(scenario="calibration", calibration_stimuli=50), seed=9).bursts == []
    cal = Simulator(SimConfig(scenario="calibration", calibration_stimuli=500, calibration_diathermy=True), seed=9)
    assert cal.bursts and {b.stage for b in cal.bursts} == {"baseline"}


# --------------------------------------------------------------------------- #
# sample index channel


def test_sample_index_channel_is_exact_across_the_float32_wrap():
    cfg = SimConfig(sample_index_channel=True, **QUIET)
    sim = Simulator(cfg, seed=0)
    assert sim.channels[-1].name == "SAMPLE_INDEX" and sim.channels[-1].direction is None
    stop = SAMPLE_INDEX_MODULUS + 5000
    step = 1 << 20
    while sim.position < stop:
        c = sim.read(min(step, stop - sim.position) + 3)
        expected = (c.first_sample_index + np.arange(c.samples.shape[1])) % SAMPLE_INDEX_MODULUS
        assert np.array_equal(c.samples[-1].astype(np.int64), expected)
    assert sim.position > SAMPLE_INDEX_MODULUS


def test_finished_after_end_marker_and_tail():
    cfg = SimConfig(time_scale=0.02)
    sim = Simulator(cfg, seed=0)
    end = sim.timeline.end_sample
    assert sim.total_samples - end >= FS * 1.0
    sim.read(end)
    assert not sim.finished
    c = sim.read(1)
    assert c.stages == [(end, "end")]
    assert not sim.finished
    sim.read(sim.total_samples - sim.position - 1)
    assert not sim.finished
    sim.read(1)
    assert sim.finished
    more = sim.read(500)
    assert more.stimuli == [] and more.stages == [] and more.samples.shape == (3, 500)
