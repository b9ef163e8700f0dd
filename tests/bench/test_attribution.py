"""The benchmark's bookkeeping: which frame a measurement waited for, and what the floors replay."""

from __future__ import annotations

import json

import numpy as np

from amrwatch.services.acquirer.sim import SimConfig, Simulator
from bench.floor import N_SAMPLES, Traffic
from bench.pipeline import latencies, post_samples
from bench.profiles import share, summarize


def _write(tmp_path, *, frames, stims, meas, decisions=()):
    """A probe record and a publish log for one session 'S' (times in ns)."""
    first = np.array([f for f, _, _ in frames], np.int64)
    np.savez(tmp_path / "published.npz", session=np.zeros(len(frames), np.int32), first=first,
             t_ns=np.array([t for _, t, _ in frames], np.int64), sessions=np.array(["S"], dtype=object))
    z = np.zeros(0, np.int64)
    np.savez(tmp_path / "probe.npz",
             frame_session=np.zeros(len(frames), np.int64), frame_first=first,
             frame_n=np.full(len(frames), N_SAMPLES, np.int64),
             frame_t=np.array([t for _, _, t in frames], np.int64),
             stim_session=np.zeros(len(stims), np.int64), stim_index=np.array([k for k, _ in stims], np.int64),
             stim_sample=np.array([s for _, s in stims], np.int64), stim_t=np.zeros(len(stims), np.int64),
             meas_session=np.zeros(len(meas), np.int64), meas_index=np.array([k for k, _ in meas], np.int64),
             meas_t=np.array([t for _, t in meas], np.int64),
             state_session=z, state_index=z, state_t=z,
             dec_session=np.zeros(len(decisions), np.int64), dec_t=np.array([t for t, _ in decisions], np.int64),
             dec_label=np.array([label for _, label in decisions], dtype=object))
    (tmp_path / "probe.json").write_text(json.dumps({"sessions": ["S"]}))


def test_a_measurement_is_timed_from_the_frame_holding_its_sweeps_last_sample(tmp_path) -> None:
    post = post_samples(20000.0)
    assert post == 1000  # the analyzer's default sweep ends 50 ms after the stimulus
    # Frames of 100 samples published 5 ms apart from t = 0; each reaches the probe 0.2 ms later.
    frames = [(i * 100, i * 5_000_000, i * 5_000_000 + 200_000) for i in range(200)]
    # Stimulus at sample 10_050: its sweep's last sample is 11_049, in the frame starting at 11_000 (index 110).
    stims = [(0, 10_050), (1, 12_000)]
    meas = [(0, 110 * 5_000_000 + 1_500_000), (1, 129 * 5_000_000 + 3_000_000)]
    decisions = [(129 * 5_000_000 + 4_000_000, "decompression_confirmed:window_complete"),
                 (129 * 5_000_000 + 5_000_000, "prognosis:")]  # not sweep-driven: left out
    _write(tmp_path, frames=frames, stims=stims, meas=meas, decisions=decisions)
    lat = latencies(tmp_path / "probe.npz", tmp_path / "probe.json", tmp_path / "published.npz")
    # Stimulus 1 at 12_000: last sweep sample 12_999 is in frame 129 (12_900..12_999).
    assert np.allclose(lat["measurement_ms"], [1.5, 3.0])
    assert np.allclose(lat["inbound_ms"], [0.2, 0.2])
    assert np.allclose(lat["analysis_back_ms"], [1.3, 2.8])
    assert np.allclose(lat["decision_ms"], [4.0]) and lat["decision_labels"] == ["decompression_confirmed:window_complete"]
    assert np.allclose(lat["transport_ms"], 0.2)


def test_the_floors_replay_the_simulators_stimulus_positions() -> None:
    sim = Simulator(SimConfig(scenario="calibration"))
    traffic = Traffic(channels=4, speed=4.0, seconds=5.0, tick_s=0.001, stim_hz=10.0)
    completing = traffic.completing()
    samples = sim.timeline.stimulus_samples
    expected = {}
    for k, s in enumerate(samples):
        f = (int(s) + 1000 - 1) // N_SAMPLES
        if f < traffic.n_frames:
            # ZYG stimuli are recorded on 2 channels, MAR on 1, alternating from ZYG.
            expected[f] = 2 if sim.stimulus(k).direction == "ZYG" else 1
    assert completing == expected and len(completing) > 150


def test_profile_shares_leave_out_waiting(tmp_path) -> None:
    raw = tmp_path / "svc.txt"
    raw.write_text(
        "process 1;thread 2;run (amrwatch/service.py:1);Poller.poll (zmq/sugar/poll.py:9) 70\n"
        "process 1;thread 2;run (amrwatch/service.py:1);decode (proto/codec.py:3);model_validate_json "
        "(pydantic/main.py:5) 20\n"
        "process 1;thread 2;run (amrwatch/service.py:1);Measurer.__call__ (services/analyzer/measure.py:7) 10\n")
    total, rows = summarize(raw)
    assert total == 30
    assert share(raw, "decode (") == 20 / 30
    assert dict((f, inc) for f, inc, _ in rows)["Measurer.__call__ (services/analyzer/measure.py)"] == 10 / 30
