"""The hazard scenarios (issue 13) tell their story, in the simulator's truth AND in its signal.

noise-rise: the noise really rises and the AMR under it does not change;
stimulator-failure: the artifact and the direct response really stop while the
stimuli go on; current-spread: a large response really starts at ~3.5 ms on the
AMR channels and runs into the analysis window; reappearance: the AMR is gone
after decompression and really back before closure.
"""

from __future__ import annotations

import numpy as np
import pytest

from amrwatch.services.acquirer.sim.config import SimConfig
from amrwatch.services.acquirer.sim.scenario import (
    NOISE_RISE_FACTOR,
    REAPPEAR_BEFORE_CLOSURE,
    SPREAD_UV,
    get_scenario,
    hazard_start,
    scenario_names,
)
from amrwatch.services.acquirer.sim.stream import Simulator

HAZARDS = ("noise-rise", "stimulator-failure", "current-spread", "reappearance")
TIME_SCALE = 0.4


def run(name: str, seed: int = 2) -> tuple[Simulator, np.ndarray]:
    """The scenario's whole signal (channels x samples, µV) and its simulator."""
    sim = Simulator(SimConfig(scenario=name, time_scale=TIME_SCALE), seed=seed)
    data = sim.read(sim.timeline.total_samples).samples.astype(np.float64)
    return sim, data


def ms(sim: Simulator, x: float) -> int:
    return int(round(x * sim.config.sampling_rate_hz / 1000.0))


def win(sim: Simulator, data: np.ndarray, k: int, a_ms: float, b_ms: float) -> np.ndarray:
    s = int(sim.timeline.stimulus_samples[k])
    return data[..., s + ms(sim, a_ms): s + ms(sim, b_ms)]


def residual_rms(sim: Simulator, seg: np.ndarray) -> float:
    """RMS after a least-squares line and the mains (fundamental and harmonic) removed."""
    fs = sim.config.sampling_rate_hz
    t = np.arange(seg.size) / fs
    cols = [np.ones_like(t), t - t.mean()]
    for f0 in (sim.config.mains_hz, sim.config.mains_hz * sim.config.mains_harmonic):
        cols += [np.sin(2 * np.pi * f0 * t), np.cos(2 * np.pi * f0 * t)]
    a = np.column_stack(cols)
    return float(np.sqrt(np.mean((seg - a @ np.linalg.lstsq(a, seg, rcond=None)[0]) ** 2)))


def start_of(sim: Simulator, name: str) -> int:
    stage_first = {stage: sim.timeline.first_stimulus_at_or_after(s) for s, stage in sim.timeline.stages}
    return hazard_start(get_scenario(name).hazards[0], stage_first)


def emg_index(sim: Simulator) -> dict[str, int]:
    return {c.name: i for i, c in enumerate(sim.channels)}


def test_the_hazard_scenarios_are_listed_with_a_story():
    for name in HAZARDS:
        assert name in scenario_names()
        assert get_scenario(name).story and get_scenario(name).patient is not None


def test_noise_rise_truth_and_signal():
    sim, data = run("noise-rise")
    k0 = start_of(sim, "noise-rise")
    assert sim.timeline.stage_at(int(sim.timeline.stimulus_samples[k0])) == "decompression"
    idx = emg_index(sim)
    base = sim.config.noise_uv
    amps: dict[str, list[float]] = {"before": [], "after": []}
    for k in range(5, sim.n_stimuli):
        when = "before" if k < k0 else "after"
        for t in sim.truths(k):
            assert t.noise_rms_uv == pytest.approx(base * (NOISE_RISE_FACTOR if k >= k0 else 1.0))
            amps[when].append(t.amplitude_uv)
    # The AMR underneath does not change.
    assert min(amps["after"]) > 0
    assert np.median(amps["after"]) == pytest.approx(np.median(amps["before"]), rel=0.1)
    # The signal's pre-stimulus noise really rises by the factor, on every channel.
    for name, i in idx.items():
        if sim.channels[i].direction is None:
            continue
        clean = [k for k in range(5, sim.n_stimuli) if not any(t.diathermy for t in sim.truths(k))]
        before = np.median([residual_rms(sim, win(sim, data[i], k, -20, -1)) for k in clean if k < k0])
        after = np.median([residual_rms(sim, win(sim, data[i], k, -20, -1)) for k in clean if k >= k0])
        assert before == pytest.approx(base, rel=0.15), name
        assert after / before == pytest.approx(NOISE_RISE_FACTOR, rel=0.15), name


def test_stimulator_failure_artifact_and_direct_response_stop_while_stimuli_go_on():
    sim, data = run("stimulator-failure")
    k0 = start_of(sim, "stimulator-failure")
    assert 0 < k0 < sim.n_stimuli - 20
    idx = emg_index(sim)
    direct: dict[tuple[str, bool], list[np.ndarray]] = {}
    for k in range(3, sim.n_stimuli):
        truths = sim.truths(k)
        if any(t.diathermy for t in truths):
            continue  # electrocautery swamps everything; not what this test is about
        stim = sim.stimulus(k)
        s = stim.sample_index
        jump = np.abs(data[:, s: s + ms(sim, 1.0)] - data[:, s - 1: s]).max(axis=1)
        for name, i in idx.items():
            if sim.channels[i].direction not in (None, stim.direction):  # the stimulated branch's own muscle
                direct.setdefault((name, k >= k0), []).append(win(sim, data[i], k, 1.5, 6.0))
        if k < k0:
            assert jump.min() > 100, (k, jump)
            assert all(t.amplitude_uv > 0 for t in truths), k
        else:
            assert jump.max() < 40, (k, jump)
            assert all(t.amplitude_uv == 0.0 for t in truths), k
    # The direct response, averaged over sweeps (noise averages out), is there before and gone after.
    for (name, dead), segs in direct.items():
        avg = np.mean(segs, axis=0)
        avg -= np.linspace(avg[0], avg[-1], avg.size)
        if dead:
            assert np.ptp(avg) < 4.0, (name, np.ptp(avg))
        else:
            assert np.ptp(avg) > 15.0, (name, np.ptp(avg))


def test_current_spread_puts_an_early_large_response_on_the_amr_channels():
    sim, data = run("current-spread")
    k0 = start_of(sim, "current-spread")
    idx = emg_index(sim)
    for k in range(5, sim.n_stimuli):
        stim = sim.stimulus(k)
        if any(t.diathermy for t in sim.truths(k)):
            continue
        for t in sim.truths(k):
            i = idx[t.channel]
            early, window = np.ptp(win(sim, data[i], k, 3.6, 5.8)), np.ptp(win(sim, data[i], k, 6, 25))
            if k < k0:
                assert early < 30, (k, t.channel, early)
                assert t.amplitude_uv > 0
            else:
                assert early > 0.3 * SPREAD_UV and window > 0.5 * SPREAD_UV, (k, t.channel, early, window)
                assert stim.direction == sim.channels[i].direction
    # The AMR underneath is gone a few stimuli after the spread starts, and stays gone.
    gone = [t.amplitude_uv for k in range(k0 + 6, sim.n_stimuli) for t in sim.truths(k)]
    assert gone and max(gone) == 0.0


def test_reappearance_gone_after_decompression_back_before_closure():
    sim, _ = run("reappearance")
    tl = sim.timeline
    dec = tl.first_stimulus_at_or_after(tl.stage_start("decompression"))
    closure = tl.first_stimulus_at_or_after(tl.stage_start("closure"))
    back = closure - REAPPEAR_BEFORE_CLOSURE
    assert dec + 8 < back - 10
    base = np.median([t.amplitude_uv for k in range(5, dec) for t in sim.truths(k)])
    assert all(t.amplitude_uv == 0.0 for k in range(dec + 8, back) for t in sim.truths(k))
    again = [t.amplitude_uv for k in range(back + 4, closure) for t in sim.truths(k)]
    assert again and np.median(again) == pytest.approx(base, rel=0.15)


@pytest.mark.parametrize("name", HAZARDS)
def test_hazard_scenarios_are_deterministic_however_read(name):
    cfg = SimConfig(scenario=name, time_scale=0.2)
    a = Simulator(cfg, seed=4)
    whole = a.read(a.timeline.total_samples).samples
    b = Simulator(cfg, seed=4)
    parts = []
    rng = np.random.default_rng(0)
    while b.position < b.timeline.total_samples:
        parts.append(b.read(int(min(rng.integers(1, 30_000), b.timeline.total_samples - b.position))).samples)
    assert np.array_equal(whole, np.concatenate(parts, axis=1))
