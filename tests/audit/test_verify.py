"""verify(): every single-byte change of an archived session is found and located;
checkpoint.json and its HMAC catch what the log alone cannot."""

from __future__ import annotations

import json
from pathlib import Path

import crc32c
import pytest

from amrwatch.archive.writer import ArchiveReader, ArchiveWriter
from amrwatch.archive.bodies import canonical_json
from amrwatch.archive.checkpoint import key_id
from amrwatch.archive.integrity import ArchiveCorrupt, recover
from amrwatch.archive.settings import ArchiveSettings

from ..archive.sessions import FULL, emg_frames, layout, make_session, restore, snapshot


def _small_signed_session(tmp_path: Path, key_file: Path):
    st = ArchiveSettings(segment_bytes=4096, hmac_key_file=key_file)
    d = tmp_path / "sessions" / "S1"
    w = ArchiveWriter(d, st)
    for i in range(8):
        w.append_message(emg_frames(i, n_samples=40))
    w.append_gap("acquirer", "0123abcd", 3, 3, "lost")
    w.close()
    return d, st.load_hmac_key()


@pytest.mark.slow
def test_every_single_byte_change_is_found_and_named(tmp_path: Path, key_file: Path):
    d, key = _small_signed_session(tmp_path, key_file)
    assert ArchiveReader(d).verify(key) == []
    spans = layout(d)
    assert len({sp.file for sp in spans}) >= 2
    snap = snapshot(d)
    masks = (0x01, 0x80, 0xFF) if FULL else (0x01 << 0,)
    checked = 0
    for name, data in snap.items():
        for pos in range(len(data)):
            for mask in masks if FULL else ((1 << (pos % 8)),):
                changed = bytearray(data)
                changed[pos] ^= mask
                (d / name).write_bytes(changed)
                problems = ArchiveReader(d).verify(key)
                assert problems, (name, pos)
                if name == "checkpoint.json":
                    assert any(p.file == "checkpoint.json" for p in problems)
                else:
                    sp = next(sp for sp in spans if sp.file == name and sp.start <= pos < sp.end)
                    if sp.record_no is None:
                        assert any(p.file == name and p.what == "segment_header" for p in problems)
                    else:
                        assert any(p.file == name and p.record_no == sp.record_no for p in problems), \
                            (name, pos, sp, problems)
                checked += 1
            (d / name).write_bytes(data)
    assert checked == sum(len(v) for v in snap.values()) * (3 if FULL else 1)
    assert ArchiveReader(d).verify(key) == []


def test_problems_say_where_to_look(tmp_path: Path):
    s = make_session(tmp_path, n=5, close=True)
    sp = next(x for x in layout(s.dir) if x.record_no == s.message_nos[2])
    data = bytearray((s.dir / sp.file).read_bytes())
    data[sp.start + 30] ^= 0x04
    (s.dir / sp.file).write_bytes(data)
    problems = ArchiveReader(s.dir).verify()
    assert len(problems) == 1
    assert str(problems[0]) == (f"{sp.file} record {sp.record_no} at byte {sp.start}: crc: "
                                f"record CRC-32C does not match ({sp.end - sp.start} bytes unreadable)")


def test_cutting_whole_newest_records_off_a_closed_session_is_detected(tmp_path: Path):
    s = make_session(tmp_path, n=5, close=True)
    spans = layout(s.dir)
    snap = snapshot(s.dir)
    for sp in spans[-4:]:  # cut exactly at a record boundary: the log alone looks clean
        (s.dir / sp.file).write_bytes(snap[sp.file][:sp.start])
        whats = {p.what for p in ArchiveReader(s.dir).verify()}
        assert "truncated" in whats, sp
        restore(s.dir, snap)


def _rewrite_checkpoint(d: Path, **changes) -> None:
    """What an attacker without the key can do: edit fields and recompute the CRC."""
    obj = json.loads((d / "checkpoint.json").read_bytes())
    obj.update(changes)
    part = {k: v for k, v in obj.items() if k not in ("crc32c", "hmac_sha256")}
    obj["crc32c"] = f"{crc32c.crc32c(canonical_json(part)):08x}"
    (d / "checkpoint.json").write_bytes(canonical_json(obj) + b"\n")


def test_truncation_with_a_matching_forged_checkpoint_needs_the_hmac(tmp_path: Path, key_file: Path):
    d, key = _small_signed_session(tmp_path, key_file)
    recs = list(ArchiveReader(d).records())
    keep = recs[-3]  # drop the last two records and point the checkpoint at what remains
    seg = d / f"seg-{keep.segment:06d}.amrlog"
    end_of_keep = keep.offset + 60 + len(keep.body)
    seg.write_bytes(seg.read_bytes()[:end_of_keep])
    _rewrite_checkpoint(d, record_count=keep.record_no + 1, chain_head=keep.chain.hex())
    whats = [p.what for p in ArchiveReader(d).verify(key)]
    assert "hmac" in whats
    with pytest.raises(ArchiveCorrupt, match="HMAC-SHA256 does not match"):
        recover(d, hmac_key=key)


def test_hmac_wrong_key_and_stripped_signature(tmp_path: Path, key_file: Path):
    d, key = _small_signed_session(tmp_path, key_file)
    other = b"another key of enough length!!"
    problems = ArchiveReader(d).verify(other)
    assert [p.what for p in problems] == ["hmac"]
    assert key_id(key) in problems[0].detail and key_id(other) in problems[0].detail
    obj = json.loads((d / "checkpoint.json").read_bytes())
    del obj["hmac_sha256"], obj["hmac_key_id"]
    part = {k: v for k, v in obj.items() if k != "crc32c"}
    obj["crc32c"] = f"{crc32c.crc32c(canonical_json(part)):08x}"
    (d / "checkpoint.json").write_bytes(canonical_json(obj) + b"\n")
    assert [p.what for p in ArchiveReader(d).verify()] == []  # well-formed, and unsigned
    assert [p.detail for p in ArchiveReader(d).verify(key)] == [
        "checkpoint.json is not signed but a signing key is configured"]


def test_a_checkpoint_from_another_session_is_rejected(tmp_path: Path):
    a = make_session(tmp_path, "A", n=3, close=True)
    b = make_session(tmp_path, "B", n=3, close=True)
    (b.dir / "checkpoint.json").write_bytes((a.dir / "checkpoint.json").read_bytes())
    details = " ".join(p.detail for p in ArchiveReader(b.dir).verify())
    assert "checkpoint is for session 'A', not 'B'" in details


def test_a_record_altered_with_recomputed_crc_breaks_the_chain(tmp_path: Path):
    from ..archive.test_recovery import _forge_chain

    s = make_session(tmp_path, n=6, close=True)
    sp = next(x for x in layout(s.dir) if x.record_no == s.message_nos[1])
    _forge_chain(s.dir / sp.file, sp.start, sp.end)
    problems = ArchiveReader(s.dir).verify()
    assert [(p.what, p.record_no) for p in problems] == [("chain", sp.record_no)]


def test_short_key_file_is_refused(tmp_path: Path):
    kf = tmp_path / "k"
    kf.write_bytes(b"short")
    with pytest.raises(ValueError, match="hmac_key_file: the key must be at least 16 bytes"):
        ArchiveWriter(tmp_path / "sessions" / "S1", ArchiveSettings(hmac_key_file=kf))
    with pytest.raises(ValueError, match="hmac_key_file: cannot read"):
        ArchiveSettings(hmac_key_file=tmp_path / "absent").load_hmac_key()
