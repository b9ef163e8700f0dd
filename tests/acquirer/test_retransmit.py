"""The retransmit buffer keeps ≥ 60 s, bounded by age and bytes, and says what it lost."""

import pytest

from amrwatch.services.acquirer.retransmit import RetransmitBuffer


def frames(i, size=10):
    return [b"emg_frame", b"{%d}" % i, b"x" * size]


def test_returns_exact_frames_in_range():
    buf = RetransmitBuffer(keep_s=60)
    for i in range(100):
        buf.add("emg_frame", i, frames(i), now=i * 0.1)
    got, missing = buf.get("emg_frame", 10, 19, limit=100)
    assert [e.seq for e in got] == list(range(10, 20)) and missing is None
    assert got[0].frames[1] == b"{10}"


def test_ages_out_and_reports_unavailable():
    buf = RetransmitBuffer(keep_s=60)
    for i in range(100):
        buf.add("emg_frame", i, frames(i), now=float(i))
    assert buf.oldest_seq("emg_frame") == 39  # 99 - 60
    got, missing = buf.get("emg_frame", 30, 45, limit=100)
    assert missing == 30 and [e.seq for e in got] == list(range(39, 46))


def test_limit_and_bytes_bound():
    buf = RetransmitBuffer(keep_s=60, max_bytes=1000)
    for i in range(100):
        buf.add("emg_frame", i, frames(i, size=40), now=0.0)
    assert buf.nbytes <= 1000
    got, _ = buf.get("emg_frame", buf.oldest_seq("emg_frame"), 99, limit=5)
    assert len(got) == 5


def test_refuses_less_than_a_minute():
    with pytest.raises(ValueError, match="at least 60 s"):
        RetransmitBuffer(keep_s=30)


def test_restarted_sequence_replaces_old_stream():
    buf = RetransmitBuffer(keep_s=60)
    for i in range(5):
        buf.add("stage", i, frames(i), now=0.0)
    buf.add("stage", 0, frames(0), now=1.0)
    assert buf.oldest_seq("stage") == 0 and len(buf.get("stage", 0, 10, 100)[0]) == 1
