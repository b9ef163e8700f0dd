"""Write/read round trip, group commit, segment rolls and resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from amrwatch.proto.codec import decode
from amrwatch.archive.writer import ArchiveClosed, ArchiveReader, ArchiveWriter, session_path
from amrwatch.archive.bodies import BodyError, Gap, decode_segment
from amrwatch.archive.segment import Kind
from amrwatch.archive.settings import ArchiveSettings

from .sessions import CountingIO, emg_frames, make_session


def test_round_trip_real_messages_and_gaps(tmp_path: Path):
    d = tmp_path / "sessions" / "S1"
    w = ArchiveWriter(d, meta={"montage": {"channels": 2}})
    sent = []
    for i in range(20):
        sent.append(emg_frames(i))
        w.append_message(sent[-1])
    gap_no = w.append_gap("acquirer", "0123abcd", 7, 9, "retransmit buffer no longer held them")
    w.commit()
    w.close()

    r = ArchiveReader(d)
    got = list(r.messages())
    assert [f for _, f in got] == sent
    for (_, frames), original in zip(got, sent):
        assert decode(frames) == decode(original)  # the codec reads back the very message
    assert r.gaps() == [(gap_no, Gap("acquirer", "0123abcd", 7, 9, "retransmit buffer no longer held them"))]
    kinds = [rec.kind_name for rec in r.records()]
    assert kinds[:3] == ["segment", "open", "checkpoint"]
    assert kinds[-2:] == ["close", "checkpoint"]
    opened = json.loads(next(rec.body for rec in r.records() if rec.kind == Kind.OPEN))
    assert opened["session_id"] == "S1" and opened["meta"] == {"montage": {"channels": 2}}
    assert [rec.record_no for rec in r.records()] == list(range(len(kinds)))
    assert r.verify() == []


def test_nothing_is_durable_before_commit(tmp_path: Path):
    w = ArchiveWriter(tmp_path / "sessions" / "S1")
    base = w.durable_record_no
    size = (w.dir / "seg-000000.amrlog").stat().st_size
    nos = [w.append_message(emg_frames(i)) for i in range(5)]
    assert w.durable_record_no == base and w.pending_records == 5
    assert (w.dir / "seg-000000.amrlog").stat().st_size == size  # buffered, not written
    assert w.commit() == nos[-1] == w.durable_record_no
    assert (w.dir / "seg-000000.amrlog").stat().st_size > size


def test_group_commit_is_one_write_and_one_fsync(tmp_path: Path):
    io = CountingIO()
    writes = []
    real_write = io.write
    io.write = lambda fd, data: writes.append(len(data)) or real_write(fd, data)
    w = ArchiveWriter(tmp_path / "sessions" / "S1", io=io)
    io.calls.clear()
    writes.clear()
    for i in range(50):
        w.append_message(emg_frames(i))
    w.commit()
    assert io.calls == [("fsync", "seg-000000.amrlog")]
    assert len(writes) == 1


def test_needs_commit_after_interval_or_size(tmp_path: Path):
    now = [100.0]
    s = ArchiveSettings(commit_interval_s=0.05, commit_bytes=8192)
    w = ArchiveWriter(tmp_path / "sessions" / "S1", s, monotonic=lambda: now[0])
    assert not w.needs_commit()
    w.append_message(emg_frames(0))
    assert not w.needs_commit()
    now[0] += 0.049
    assert not w.needs_commit()
    now[0] += 0.002
    assert w.needs_commit()
    w.commit()
    assert not w.needs_commit()
    while w.pending_bytes < 8192:
        w.append_message(emg_frames(1, n_samples=200))
    assert w.needs_commit()  # by size, with no time elapsed


def test_segments_roll_carry_the_chain_and_fsync_the_directory(tmp_path: Path):
    io = CountingIO()
    s = ArchiveSettings(segment_bytes=4096)
    w = ArchiveWriter(tmp_path / "sessions" / "S1", s, io=io)
    for i in range(40):
        w.append_message(emg_frames(i, n_samples=16))
        if i % 5 == 4:
            w.commit()
    w.close()
    segs = sorted(p.name for p in w.dir.glob("seg-*.amrlog"))
    assert len(segs) >= 4
    for name in segs:
        assert (w.dir / name).stat().st_size <= 4096
        # creation, then the file's fsync, then the directory's fsync, in that order
        i = io.calls.index(("open", name))
        assert io.calls[i + 1:i + 3] == [("fsync", name), ("fsync_dir", "S1")]
    recs = list(ArchiveReader(w.dir).records())
    prev = None
    for rec in recs:
        if rec.kind == Kind.SEGMENT:
            idx, carried = decode_segment(rec.body)
            assert idx == rec.segment
            assert carried == (prev.chain if prev else bytes(32))
            assert rec.offset == 16
        prev = rec
    assert ArchiveReader(w.dir).verify() == []


def test_a_record_larger_than_a_segment_gets_its_own(tmp_path: Path):
    w = ArchiveWriter(tmp_path / "sessions" / "S1", ArchiveSettings(segment_bytes=4096))
    small1 = w.append_message(emg_frames(0))
    big = w.append_message(emg_frames(1, n_channels=4, n_samples=400))  # ~6.5 kB
    small2 = w.append_message(emg_frames(2))
    w.close()
    recs = {r.record_no: r for r in ArchiveReader(w.dir).records()}
    assert recs[small1].segment < recs[big].segment < recs[small2].segment
    assert recs[big - 1].kind == Kind.SEGMENT  # the big one opens its segment, alone
    assert ArchiveReader(w.dir).verify() == []


def test_release_then_resume_continues_the_chain(tmp_path: Path):
    s = make_session(tmp_path, n=5)
    w = ArchiveWriter(s.dir)
    assert w.recovery is not None and w.recovery.cut is None
    more = w.append_message(emg_frames(99))
    w.close()
    r = ArchiveReader(s.dir)
    kinds = [x.kind_name for x in r.records()]
    assert "resume" in kinds and kinds.index("resume") < more
    assert [f for _, f in r.messages()] == s.frames + [emg_frames(99)]
    assert r.verify() == []
    with pytest.raises(ArchiveClosed, match="closed"):
        ArchiveWriter(s.dir)


def test_closed_writer_refuses_appends(tmp_path: Path):
    w = ArchiveWriter(tmp_path / "sessions" / "S1")
    w.close()
    with pytest.raises(ArchiveClosed):
        w.append_message(emg_frames(0))


def test_append_rejects_what_the_writer_owns_and_malformed_bodies(tmp_path: Path):
    w = ArchiveWriter(tmp_path / "sessions" / "S1", ArchiveSettings(max_record_bytes=1024))
    with pytest.raises(ValueError, match="kind must be 3 .message. or 4 .gap.; got <Kind.CHECKPOINT"):
        w.append(Kind.CHECKPOINT, b"{}")
    with pytest.raises(ValueError, match="body is 1025 bytes; max_record_bytes allows 0 to 1024"):
        w.append(Kind.MESSAGE, bytes(1025))
    with pytest.raises(BodyError, match="frame 0 claims 1000 bytes"):
        w.append(Kind.MESSAGE, (1000).to_bytes(4, "little") + b"abc")
    with pytest.raises(BodyError, match="from_seq must be <= to_seq; got from_seq=5, to_seq=4"):
        w.append_gap("acquirer", "0123abcd", 5, 4, "x")
    with pytest.raises(BodyError, match="instance must be 8-32 lowercase hex digits; got 'XYZ'"):
        w.append_gap("acquirer", "XYZ", 1, 4, "x")
    assert w.pending_records == 0  # nothing half-staged


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("segment_bytes", 100, "segment_bytes must be between 4096 and 2.14748e+09 bytes; got 100"),
        ("commit_interval_s", 2.0, "commit_interval_s must be between 0.001 and 1 s; got 2.0"),
        ("checkpoint_every_records", 0, "checkpoint_every_records must be between 1 and 1e+09 records; got 0"),
        ("max_record_bytes", 10, "max_record_bytes must be between 1024 and 1.07374e+09 bytes; got 10"),
    ],
)
def test_settings_errors_name_field_range_and_value(field, value, needle):
    with pytest.raises(ValidationError) as err:
        ArchiveSettings(**{field: value})
    assert needle in str(err.value)


def test_default_commit_interval_is_at_most_100_ms():
    assert ArchiveSettings().commit_interval_s <= 0.1


def test_session_path_refuses_ids_that_leave_the_directory(tmp_path: Path):
    assert session_path(tmp_path, "20261124T080000Z-abc123") == tmp_path / "sessions" / "20261124T080000Z-abc123"
    for bad in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(ValueError, match="session_id must be 1-64 characters"):
            session_path(tmp_path, bad)


def test_checkpoints_that_fall_on_a_segment_roll_describe_the_log_after_it(tmp_path: Path):
    """Regression: a roll staged just before a checkpoint record must not leave it one record behind."""
    w = ArchiveWriter(tmp_path / "sessions" / "S1", ArchiveSettings(segment_bytes=4096, checkpoint_every_records=1))
    for i in range(60):
        w.append_message(emg_frames(i, n_samples=16))
        w.commit()
    w.close()
    recs = list(ArchiveReader(w.dir).records())
    rolled_into = [r for r in recs if r.kind == Kind.CHECKPOINT and r.offset > 16
                   and recs[r.record_no - 1].kind == Kind.SEGMENT]
    assert rolled_into, "no checkpoint landed right after a roll; the test lost its point"
    for r in rolled_into:
        body = json.loads(r.body)
        assert body["record_count"] == r.record_no and body["chain_head"] == recs[r.record_no - 1].chain.hex()
    assert ArchiveReader(w.dir).verify() == []
