"""Recovery at open-for-append: a torn tail is cut, anything else is refused untouched."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import crc32c
import pytest

from amrwatch.archive.writer import ArchiveReader, ArchiveWriter
from amrwatch.archive.integrity import ArchiveCorrupt, recover
from amrwatch.archive.segment import RECORD_HEADER_SIZE, Kind
from amrwatch.archive.settings import ArchiveSettings

from .sessions import FULL, emg_frames, layout, make_session, restore, snapshot


def _records(d: Path) -> list[tuple]:
    return [(r.record_no, r.kind, r.body, r.chain) for r in ArchiveReader(d).records()]


@pytest.mark.slow
def test_truncating_the_last_record_at_every_byte_offset_is_repaired(tmp_path: Path):
    s = make_session(tmp_path, n=6)
    last = layout(s.dir)[-1]
    assert last.record_no == s.message_nos[-1]
    seg = s.dir / last.file
    before = _records(s.dir)
    snap = snapshot(s.dir)
    for cut in range(last.start, last.end):
        seg.write_bytes(snap[last.file][:cut])
        rep = recover(s.dir)
        if cut == last.start:
            assert rep.cut is None  # a clean record boundary: nothing torn
        else:
            assert (rep.cut.segment, rep.cut.offset, rep.cut.bytes_cut) == (last.file, last.start, cut - last.start)
        assert seg.stat().st_size == last.start
        assert _records(s.dir) == before[:-1]  # everything before is intact
        assert recover(s.dir).cut is None  # idempotent
        w = ArchiveWriter(s.dir)
        w.append_message(emg_frames(1000))
        w.close()
        assert ArchiveReader(s.dir).verify() == [], cut
        assert [f for _, f in ArchiveReader(s.dir).messages()] == s.frames[:-1] + [emg_frames(1000)]
        restore(s.dir, snap)


@pytest.mark.slow
def test_truncating_a_freshly_rolled_segment_anywhere_is_repaired(tmp_path: Path):
    st = ArchiveSettings(segment_bytes=4096)
    s = make_session(tmp_path, n=30, commit_every=1, settings=st, n_samples=16)
    spans = layout(s.dir)
    newest = spans[-1].file
    assert newest != "seg-000000.amrlog"
    in_newest = [sp for sp in spans if sp.file == newest]
    seg_record_end = in_newest[1].end  # header, then the `segment` record
    snap = snapshot(s.dir)
    size = len(snap[newest])
    offsets = range(size) if FULL else sorted(set(range(0, size, 7)) | {0, 15, 16, seg_record_end - 1, seg_record_end})
    for cut in offsets:
        (s.dir / newest).write_bytes(snap[newest][:cut])
        survivors = [sp.record_no for sp in spans if sp.record_no is not None
                     and (sp.file != newest or sp.end <= cut)]
        rep = recover(s.dir)
        assert rep.record_count == survivors[-1] + 1
        if cut < seg_record_end:
            assert not (s.dir / newest).exists() and (cut == 0 or rep.cut.removed_file)
        w = ArchiveWriter(s.dir, st)
        w.append_message(emg_frames(500))
        w.close()
        assert ArchiveReader(s.dir).verify() == [], cut
        restore(s.dir, snap)


def test_zero_filled_tail_after_a_crash_is_a_torn_tail(tmp_path: Path):
    """After a power cut a filesystem may extend the file with zeros where unsynced data was."""
    s = make_session(tmp_path, n=4)
    last = layout(s.dir)[-1]
    seg = s.dir / last.file
    data = seg.read_bytes()
    seg.write_bytes(data[:last.start] + bytes(last.end - last.start) + bytes(4096))
    rep = recover(s.dir)
    assert rep.cut.offset == last.start and rep.cut.bytes_cut == last.end - last.start + 4096
    assert seg.read_bytes() == data[:last.start]


def test_the_cut_is_logged(tmp_path: Path, caplog):
    s = make_session(tmp_path, n=3)
    last = layout(s.dir)[-1]
    (s.dir / last.file).write_bytes((s.dir / last.file).read_bytes()[:last.end - 5])
    with caplog.at_level(logging.WARNING, logger="amrwatch.recorder.archive"):
        ArchiveWriter(s.dir).release()
    assert f"cut a torn tail of {last.file} at byte {last.start}" in caplog.text
    resume = [r for r in ArchiveReader(s.dir).records() if r.kind == Kind.RESUME]
    assert f'"offset":{last.start}' in resume[0].body.decode()  # and recorded, tamper-evident, in the log


def _flip_positions(spans, files_middle):
    for sp in spans:
        if sp.file in files_middle and sp.end <= files_middle[sp.file]:
            step = 1 if FULL else max(1, (sp.end - sp.start) // 23)
            for pos in range(sp.start, sp.end, step):
                yield sp, pos


@pytest.mark.slow
def test_single_bit_flips_in_the_middle_of_a_segment_are_corruption(tmp_path: Path):
    st = ArchiveSettings(segment_bytes=8192)
    s = make_session(tmp_path, n=40, settings=st, n_samples=16)
    spans = layout(s.dir)
    files = sorted({sp.file for sp in spans})
    assert len(files) >= 3
    # the whole of every older segment; the newest one up to (not including) its last record
    middle = {f: max(sp.end for sp in spans if sp.file == f) for f in files[:-1]}
    middle[files[-1]] = spans[-1].start
    snap = snapshot(s.dir)
    n = 0
    for sp, pos in _flip_positions(spans, middle):
        bits = range(8) if FULL else (pos % 8,)
        for bit in bits:
            data = bytearray(snap[sp.file])
            data[pos] ^= 1 << bit
            (s.dir / sp.file).write_bytes(data)
            with pytest.raises(ArchiveCorrupt) as err:
                recover(s.dir)
            if sp.record_no is None:
                assert any(p.file == sp.file and p.what == "segment_header" for p in err.value.problems)
            else:
                assert any(p.file == sp.file and p.record_no == sp.record_no for p in err.value.problems), \
                    (sp, pos, err.value.problems)
            assert (s.dir / sp.file).read_bytes() == data  # refused to touch
            (s.dir / sp.file).write_bytes(snap[sp.file])
            n += 1
    assert n > 400


def test_cutting_records_the_checkpoint_vouches_for_is_truncation(tmp_path: Path):
    s = make_session(tmp_path, n=5, close=True)
    spans = layout(s.dir)
    snap = snapshot(s.dir)
    last_two = [sp for sp in spans[-2:]]
    for cut in range(last_two[0].start, last_two[-1].end):
        (s.dir / last_two[0].file).write_bytes(snap[last_two[0].file][:cut])
        with pytest.raises(ArchiveCorrupt) as err:
            recover(s.dir)
        assert {p.what for p in err.value.problems} & {"truncated", "structure"}
        assert (s.dir / last_two[0].file).stat().st_size == cut  # untouched
    restore(s.dir, snap)


def test_truncation_behind_a_periodic_checkpoint_is_detected(tmp_path: Path):
    st = ArchiveSettings(checkpoint_every_records=4)
    s = make_session(tmp_path, n=12, settings=st, commit_every=1)
    recs = list(ArchiveReader(s.dir).records())
    last_ckpt = max(r.record_no for r in recs if r.kind == Kind.CHECKPOINT)
    assert last_ckpt > 2
    cut_at = next(r for r in recs if r.record_no == last_ckpt - 1)
    seg = s.dir / f"seg-{cut_at.segment:06d}.amrlog"
    seg.write_bytes(seg.read_bytes()[:cut_at.offset + 3])
    with pytest.raises(ArchiveCorrupt, match="truncated"):
        recover(s.dir)


def _forge_chain(path: Path, start: int, end: int) -> None:
    """Alter a record's body and recompute both CRCs: only the hash chain can tell."""
    data = bytearray(path.read_bytes())
    data[start + RECORD_HEADER_SIZE + 20] ^= 0x01
    data[end - 4:end] = struct.pack("<I", crc32c.crc32c(bytes(data[start:end - 4])))
    path.write_bytes(bytes(data))


def test_a_chain_mismatch_even_in_the_last_record_is_never_cut(tmp_path: Path):
    s = make_session(tmp_path, n=4)
    last = layout(s.dir)[-1]
    _forge_chain(s.dir / last.file, last.start, last.end)
    forged = (s.dir / last.file).read_bytes()
    with pytest.raises(ArchiveCorrupt) as err:
        recover(s.dir)
    assert [(p.what, p.record_no) for p in err.value.problems] == [("chain", last.record_no)]
    assert (s.dir / last.file).read_bytes() == forged


def test_a_missing_segment_is_corruption(tmp_path: Path):
    s = make_session(tmp_path, n=30, settings=ArchiveSettings(segment_bytes=4096), n_samples=16)
    (s.dir / "seg-000001.amrlog").unlink()
    with pytest.raises(ArchiveCorrupt, match="segment 1 is missing"):
        recover(s.dir)


def test_lost_first_checkpoint_file_is_restored_on_resume(tmp_path: Path):
    """A crash between the first commit's fsync and checkpoint.json: legitimate, and repaired."""
    w = ArchiveWriter(tmp_path / "sessions" / "S1")
    w.release()
    (w.dir / "checkpoint.json").unlink()
    assert ArchiveReader(w.dir).verify() == []
    w = ArchiveWriter(w.dir)
    assert (w.dir / "checkpoint.json").exists()
    w.append_message(emg_frames(0))
    w.close()
    assert ArchiveReader(w.dir).verify() == []


def test_a_missing_checkpoint_file_later_on_is_corruption(tmp_path: Path):
    s = make_session(tmp_path, n=3)
    (s.dir / "checkpoint.json").unlink()
    assert [p.what for p in ArchiveReader(s.dir).verify()] == ["checkpoint_missing"]
    with pytest.raises(ArchiveCorrupt, match="checkpoint.json is missing"):
        recover(s.dir)


def test_a_corrupt_session_does_not_stop_new_ones(tmp_path: Path):
    bad = make_session(tmp_path, "BAD", n=4)
    data = bytearray((bad.dir / "seg-000000.amrlog").read_bytes())
    data[100] ^= 0x10
    (bad.dir / "seg-000000.amrlog").write_bytes(data)
    with pytest.raises(ArchiveCorrupt):
        ArchiveWriter(bad.dir)
    good = ArchiveWriter(tmp_path / "sessions" / "GOOD")
    good.append_message(emg_frames(0))
    good.close()
    assert ArchiveReader(good.dir).verify() == []
