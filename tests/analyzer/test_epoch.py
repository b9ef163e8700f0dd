"""The ring buffer and epocher: split, late, gapped, repeated and skipped signal."""

from __future__ import annotations

import numpy as np

from amrwatch.services.analyzer.epoch import Epocher, RingBuffer


def ramp(first: int, n: int, channels: int = 2) -> np.ndarray:
    """Sample value = its own index (channel c adds c * 1e6), so reads can be checked exactly."""
    idx = np.arange(first, first + n, dtype=np.float64)
    return np.stack([idx + c * 1e6 for c in range(channels)]).astype(np.float32)


def test_frames_split_anywhere_read_back_exactly_across_the_wrap():
    buf = RingBuffer(2, capacity=100)
    pos = 0
    for n in (7, 1, 33, 50, 2, 61, 19):  # 173 samples: the ring wraps
        assert buf.write(pos, ramp(pos, n)).kind == "ok"
        pos += n
    status, x = buf.read(90, 170, np.array([1, 0]))
    assert status == "ok"
    np.testing.assert_array_equal(x, ramp(90, 80)[[1, 0]])


def test_gap_is_remembered_and_sweeps_spanning_it_are_refused():
    buf = RingBuffer(1, capacity=1000)
    buf.write(0, ramp(0, 100, 1))
    res = buf.write(150, ramp(150, 100, 1))
    assert (res.kind, res.missing) == ("gap", 50)
    assert buf.read(80, 160, np.array([0]))[0] == "gap"
    assert buf.read(0, 100, np.array([0]))[0] == "ok"
    assert buf.read(150, 250, np.array([0]))[0] == "ok"


def test_repeats_and_late_frames_are_dropped_not_written():
    buf = RingBuffer(1, capacity=1000)
    buf.write(0, ramp(0, 100, 1))
    buf.write(150, ramp(150, 50, 1))
    assert buf.write(10, ramp(10, 20, 1) * 0).kind == "duplicate"  # would overwrite good data
    assert buf.read(0, 100, np.array([0]))[1][0, 15] == 15.0
    assert buf.write(100, ramp(100, 50, 1)).kind == "out_of_order"  # fills the hole too late
    assert buf.read(90, 160, np.array([0]))[0] == "gap"
    res = buf.write(190, ramp(190, 20, 1))
    assert (res.kind, res.dropped, res.written) == ("overlap", 10, 10)
    assert buf.hwm == 210


def test_skipped_signal_is_not_a_gap_but_is_never_measured():
    buf = RingBuffer(1, capacity=1000)
    buf.write(0, ramp(0, 100, 1))
    assert buf.skip_to(500) == 400
    assert buf.write(500, ramp(500, 100, 1)).kind == "ok"
    assert buf.read(450, 550, np.array([0]))[0] == "not_fed"
    assert buf.read(500, 600, np.array([0]))[0] == "ok"


def test_stale_before_recording_and_incomplete():
    buf = RingBuffer(1, capacity=100)
    buf.write(1000, ramp(1000, 300, 1))  # a late joiner starts at 1000
    assert buf.read(900, 1010, np.array([0]))[0] == "before_recording"
    assert buf.read(1010, 1050, np.array([0]))[0] == "stale"  # overwritten since
    assert buf.read(1250, 1310, np.array([0]))[0] == "incomplete"
    assert buf.read(1220, 1300, np.array([0]))[0] == "ok"


def test_a_gap_longer_than_the_buffer():
    buf = RingBuffer(1, capacity=100)
    buf.write(0, ramp(0, 50, 1))
    res = buf.write(10_000, ramp(10_000, 50, 1))
    assert (res.kind, res.missing) == ("gap", 9_950)
    assert buf.read(9_990, 10_010, np.array([0]))[0] == "gap"
    assert buf.read(10_000, 10_050, np.array([0]))[0] == "ok"


def test_epocher_releases_a_sweep_as_soon_as_its_last_sample_is_in():
    ep = Epocher(pre_samples=400, post_samples=1000)
    ep.add(0, 5000, 0.25, "ZYG")
    ep.add(1, 3000, 0.15, "MAR")  # arrived late, ends earlier
    assert ep.complete(3999) == []
    assert [s.stimulus_index for s in ep.complete(4000)] == [1]
    assert ep.complete(5999) == []
    done = ep.complete(6000)
    assert [(s.stimulus_index, s.lo, s.hi) for s in done] == [(0, 4600, 6000)]
