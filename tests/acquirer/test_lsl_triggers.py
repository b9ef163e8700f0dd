"""The trigger detector every source shares (triggers.py): same stimuli however the signal is cut."""

from __future__ import annotations

import numpy as np
import pytest

from amrwatch.services.acquirer.triggers import TriggerDetector, TriggerSettings, label_direction

FS = 20_000.0


def line(n=40_000, pulses=(1000, 11_000, 21_003), width=4, level=5.0, noise=0.01, seed=0):
    x = np.random.default_rng(seed).normal(0, noise, n)
    for p in pulses:
        x[p:p + width] += level
    return x


def feed(det, x, sizes):
    out, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out += det.feed(x[i:i + n], i)
        i += n
        k += 1
    return out


@pytest.mark.parametrize("sizes", [[40_000], [100], [1], [7, 13, 1, 250], [3]])
def test_the_same_edges_however_the_signal_is_cut(sizes):
    got = feed(TriggerDetector("TRIG_ZYG", FS, ["ZYG", "MAR"]), line(), sizes)
    assert [(s.sample_index, s.direction) for s in got] == [(1000, "ZYG"), (11_000, "ZYG"), (21_003, "ZYG")]


def test_a_quiet_line_never_triggers_and_the_first_pulse_arms_it():
    x = line(pulses=())
    x *= 4  # 0.04 V RMS of noise (about 0.35 V peak to peak): below the 0.5-unit swing
    assert feed(TriggerDetector("TRIG", FS, ["ZYG"]), x, [100]) == []
    y = line(pulses=(30_000,))
    got = feed(TriggerDetector("TRIG", FS, ["ZYG"]), y, [100])
    assert [s.sample_index for s in got] == [30_000]


def test_glitches_bounces_and_a_pulse_already_high_are_not_stimuli():
    x = line(pulses=(1000, 11_000, 21_000), width=6)
    x[5000] += 5.0  # one-sample glitch
    x[11_010:11_014] += 5.0  # the 11_000 pulse bouncing 0.5 ms later
    x[:3] += 5.0  # the signal starts inside a pulse: its edge is not known
    det = TriggerDetector("TRIG_MAR", FS, ["ZYG"], TriggerSettings(min_width_ms=0.15))
    got = feed(det, x, [100])
    assert [(s.sample_index, s.direction) for s in got] == [(1000, "MAR"), (11_000, "MAR"), (21_000, "MAR")]
    assert det.n_glitches == 1


def test_after_a_gap_a_pulse_cut_by_it_is_dropped():
    x = line(pulses=(1000, 11_000))
    det = TriggerDetector("TRIG", FS, ["ZYG", "MAR"])
    got = det.feed(x[:11_002], 0)  # the stream breaks inside the second pulse
    det.reset()
    got += det.feed(x[11_002:], 50_000)  # resumes (index jumped) still high: not a new edge
    got += det.feed(line(n=2000, pulses=(500,)), 60_000)
    assert [(s.sample_index, s.direction) for s in got] == [(1000, "ZYG"), (11_000, "MAR"), (60_500, "ZYG")]


def test_fixed_threshold_and_directions_from_labels():
    x = line(level=0.3)  # a 0.3 V line: below the auto swing, found with a fixed threshold
    assert feed(TriggerDetector("TRIG", FS, ["ZYG"]), x, [100]) == []
    got = feed(TriggerDetector("STIM", FS, ["ZYG", "MAR"], TriggerSettings(threshold=0.15)), x, [100])
    assert [s.direction for s in got] == ["ZYG", "MAR", "ZYG"]  # a plain label alternates the montage's
    assert [label_direction(x) for x in ("TRIG_ZYG", "stim-mar", "TRIG", "trigger MAR")] == ["ZYG", "MAR", None,
                                                                                          "MAR"]
    with pytest.raises(ValueError, match="min_gap_ms must be between 0 and 50 ms; got 80"):
        TriggerSettings(min_gap_ms=80)
