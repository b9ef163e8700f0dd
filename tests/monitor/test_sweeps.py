"""Display sweeps: peak-preserving decimation, cutting, gaps, and its cost."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from pydantic import ValidationError

from amrwatch.proto.messages import Montage
from amrwatch.services.monitor.settings import SweepSettings
from amrwatch.services.monitor.sweeps import SampleRing, SweepCutter, peak_decimate
from amrwatch.services.monitor.view import SessionView

from .build import CHANNELS, FS, Stream, montage, session_messages, session_signal


def test_peak_decimation_keeps_the_true_peak_to_peak_where_plain_decimation_loses_it():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 5, 2000)
    x[733] = 400.0  # a one-sample spike, between the samples a plain decimator keeps
    x[1201] = -250.0
    out = peak_decimate(x, 10)
    assert out.size == 400
    assert out.max() - out.min() == pytest.approx(x.max() - x.min())
    assert x[::10].max() - x[::10].min() < 100  # what a naive decimator would show


def test_peak_decimation_keeps_the_order_of_minimum_and_maximum():
    x = np.array([0, -5, 3, 9, 0, 0, 7, 1, -8, 0], dtype=float)  # bins of 5: min then max; max then min
    assert peak_decimate(x, 5).tolist() == [-5, 9, 7, -8]


def test_peak_decimation_ignores_nan_and_keeps_empty_bins_empty():
    x = np.array([np.nan, 2, 1, np.nan, np.nan, np.nan, 4, np.nan, -1], dtype=float)
    out = peak_decimate(x, 3)
    assert out[:2].tolist() == [2, 1]
    assert np.isnan(out[2:4]).all()
    assert out[4:].tolist() == [4, -1]
    with pytest.raises(ValueError, match="not a multiple"):
        peak_decimate(np.zeros(10), 3)


def test_ring_returns_exact_samples_across_wraparound_and_nan_for_gaps_and_aged_out_data():
    ring = SampleRing(1, 1000)
    for first in range(0, 5000, 70):
        ring.write(first, np.arange(first, first + 70, dtype=np.float32)[None, :])
    end = ring.end
    assert end == 5040
    got = ring.read([0], end - 900, end)[0]
    assert got.tolist() == list(range(end - 900, end))
    old = ring.read([0], end - 1100, end - 900)[0]
    assert np.isnan(old[:100]).all() and old[100:].tolist() == list(range(end - 1000, end - 900))
    ring.write(end + 50, np.arange(end + 50, end + 100, dtype=np.float32)[None, :])  # 50 samples lost
    after = ring.read([0], end - 10, end + 100)[0]
    assert after[:10].tolist() == list(range(end - 10, end))
    assert np.isnan(after[10:60]).all()
    assert after[60:].tolist() == list(range(end + 50, end + 100))
    ring.write(end - 200, np.zeros((1, 100), dtype=np.float32))  # a duplicate: ignored
    assert ring.read([0], end - 200, end - 100)[0].tolist() == list(range(end - 200, end - 100))


def _cut_all(x, stims, settings=None, frame_n=100):
    cutter = SweepCutter(Montage.model_validate(montage()), settings)
    sweeps = []
    pending = list(stims)
    for first in range(0, x.shape[1] - frame_n + 1, frame_n):
        sweeps += cutter.on_frame(first, x[:, first:first + frame_n].astype(np.float32))
        while pending and pending[0][1] < first + frame_n:
            k, s, d = pending.pop(0)
            sweeps += cutter.on_stimulus(k, s, s / FS, d)
    return cutter, sweeps


def test_sweeps_show_the_response_at_its_latency_and_size_on_the_right_channels():
    amps = {"MENT": [80, 160, 240, 320], "OORIS": [50, 50, 50, 50], "OOCUL": [400, 300, 200, 100]}
    x, stims = session_signal(4, amplitudes=amps, offset_uv=500.0, onset_ms=10.0)
    cutter, sweeps = _cut_all(x, stims)
    got = {(s.stimulus_index, s.channel): s for s in sweeps}
    # ZYG stimuli (0, 2) are recorded at MENT and OORIS, MAR (1, 3) at OOCUL only
    assert sorted(got) == [(0, "MENT"), (0, "OORIS"), (1, "OOCUL"), (2, "MENT"), (2, "OORIS"), (3, "OOCUL")]
    for (k, ch), sw in got.items():
        # 2 kHz bins, two values each: 55 ms → 110 bins → 220 values 0.25 ms apart, from -5 ms
        assert sw.values.size == 220 and sw.dt_ms == pytest.approx(0.25)
        assert sw.times_ms()[0] == pytest.approx(-4.875)
        assert sw.window_p2p(6, 25) == pytest.approx(amps[ch][k], abs=0.2)
        t = sw.times_ms()
        assert t[np.nanargmax(sw.values)] == pytest.approx(11.0, abs=0.5)  # onset 10 + period/4
        assert t[np.nanargmin(sw.values)] == pytest.approx(13.0, abs=0.5)
        # the 500 µV offset is removed (pre-stimulus median), the artifact blank is empty
        assert abs(np.nanmedian(sw.values[t < 0])) < 1e-6
        blank = (t >= 0) & (t < 3.0)
        assert np.isnan(sw.values[blank]).all() and not np.isnan(sw.values[~blank]).any()
    assert cutter.pending == []


def test_a_sweep_is_cut_only_once_its_last_sample_has_arrived():
    x, stims = session_signal(1)
    cutter = SweepCutter(Montage.model_validate(montage()))
    k, s, d = stims[0]
    cutter.on_frame(0, x[:, : s + 100].astype(np.float32))
    assert cutter.on_stimulus(k, s, s / FS, d) == []  # 5 ms of the 50 ms after it are there
    end = s + int(0.05 * FS)
    assert cutter.on_frame(s + 100, x[:, s + 100:end - 1].astype(np.float32)) == []
    done = cutter.on_frame(end - 1, x[:, end - 1:end + 100].astype(np.float32))
    assert {sw.channel for sw in done} == {"MENT", "OORIS"}


def test_lost_samples_show_as_a_hole_not_as_invented_signal():
    x, stims = session_signal(1, amplitudes={"MENT": [200.0], "OORIS": [200.0], "OOCUL": [0.0]})
    k, s, d = stims[0]
    cutter = SweepCutter(Montage.model_validate(montage()))
    hole = (s + int(0.012 * FS), s + int(0.016 * FS))  # 12-16 ms lost
    cutter.on_frame(0, x[:, : hole[0]].astype(np.float32))
    cutter.on_stimulus(k, s, s / FS, d)
    sweeps = cutter.on_frame(hole[1], x[:, hole[1]:].astype(np.float32))
    sw = next(sw for sw in sweeps if sw.channel == "MENT")
    t = sw.times_ms()
    assert np.isnan(sw.values[(t > 12.2) & (t < 15.8)]).all()
    assert not np.isnan(sw.values[(t > 17) | ((t > 3) & (t < 11.8))]).any()
    # the half that arrived is intact: 10-12 ms holds the positive peak (+100 µV)
    assert np.nanmax(sw.values[(t > 10) & (t < 12)]) == pytest.approx(100.0, abs=0.5)


def test_session_end_flushes_the_last_sweep_with_what_arrived():
    x, stims = session_signal(1)
    k, s, d = stims[0]
    cutter = SweepCutter(Montage.model_validate(montage()))
    cutter.on_frame(0, x[:, : s + int(0.03 * FS)].astype(np.float32))
    cutter.on_stimulus(k, s, s / FS, d)
    (a, b) = cutter.flush()
    t = a.times_ms()
    assert np.isnan(a.values[t > 30.2]).all() and a.window_p2p(6, 25) == pytest.approx(100.0, abs=0.2)
    assert cutter.pending == []


def test_decimation_factor_and_window_follow_the_settings_and_sampling_rate():
    m = Montage.model_validate(montage(fs=10_000.0))
    c = SweepCutter(m, SweepSettings(display_rate_hz=1000.0, pre_ms=10.0, post_ms=40.0))
    assert c.factor == 10 and c.pre == 100 and c.post == 400
    raw = SweepCutter(m, SweepSettings(display_rate_hz=20_000.0))  # above fs: no decimation
    assert raw.factor == 1 and raw.dt_ms == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"display_rate_hz": 50.0}, ["display_rate_hz", "100", "50"]),
        ({"analysis_window_ms": (25.0, 6.0)}, ["analysis_window_ms", "start < end", "(25.0, 6.0)"]),
        ({"analysis_window_ms": (6.0, 60.0)}, ["analysis_window_ms", "post_ms", "60"]),
        ({"keep_s": 0.05}, ["keep_s", "0.5", "0.05"]),
    ],
)
def test_bad_sweep_settings_name_the_field_range_and_value(kw, words):
    with pytest.raises(ValidationError) as err:
        SweepSettings(**kw)
    text = str(err.value)
    for w in words:
        assert w in text, text


def test_cutting_keeps_up_with_20_khz_by_4_channels_at_2_hz_many_times_over():
    """The whole bus side of the page (decode excluded): a minute of signal
    at 20 kHz × 4 channels, 5 ms frames, 2 Hz stimulation, through the view."""
    seconds = 60 if os.environ.get("AMRWATCH_FULL") else 20
    x, stims = session_signal(2 * seconds, period_s=0.5, noise_uv=3.0)
    msgs = session_messages(Stream(), x, stims)
    view = SessionView()
    t0 = time.perf_counter()
    out = [item for m in msgs for item in view.apply(m)]
    elapsed = time.perf_counter() - t0
    n_frames = sum(1 for m in msgs if m.type == "emg_frame")
    sweeps = [i for i in out if i["kind"] == "sweep"]
    assert n_frames == x.shape[1] // 100
    assert len(sweeps) == sum(2 if d == "ZYG" else 1 for _, _, d in stims)  # every stimulus, every channel
    speed = (x.shape[1] / FS) / elapsed
    print(f"\nview: {x.shape[1] / FS:.0f} s of 20 kHz x {len(CHANNELS)} channels in {elapsed:.2f} s "
          f"= {speed:.0f}x real time ({elapsed / n_frames * 1e6:.0f} µs per frame)")
    assert speed > 20, f"only {speed:.1f}x real time"
