"""The compiled paths of the one reader (archive/kernels.py) against plain references.

The index, the signal-order blocks and the integrity walk find records with
compiled loops since issue #18. Each is checked here against code that does
the same job one record at a time in plain Python, on archives with what
makes the job hard: segments rolling every few records (and in the middle of
a block of frames), frames lost and refetched (logged late), a gap record,
messages that are not frames, frame headers the contract refuses, a frame
that is not three bus frames, a torn tail, and bytes damaged anywhere.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest

from amrwatch.archive.index import ArchiveIndex
from amrwatch.archive.integrity import _Walk, list_segments
from amrwatch.archive.segment import RECORD_HEAD, RECORD_MAGIC, RECORD_OVERHEAD, SEGMENT_HEADER_SIZE
from amrwatch.archive.session import open_session
from amrwatch.archive.settings import ArchiveSettings
from amrwatch.archive.writer import ArchiveWriter
from amrwatch.proto.codec import encode
from amrwatch.proto.messages import EmgFrame, Montage, SessionStart

from .sessions import T0, emg_frames

_LEN = struct.Struct("<I")
TOPIC = _LEN.pack(9) + b"emg_frame"


def _frames_with(i: int, **header) -> list[bytes]:
    """Frame i with header fields replaced (the contract may refuse it)."""
    topic, head, payload = emg_frames(i)
    h = json.loads(head)
    h.update(header)
    return [topic, json.dumps(h).encode(), payload]


def _session_start() -> list[bytes]:
    montage = Montage(sampling_rate_hz=20000.0, channels=[
        {"name": "MENT", "muscle": "mentalis", "direction": "ZYG"},
        {"name": "OOCUL", "muscle": "orbicularis_oculi", "direction": "MAR"}],
        stimulation=[{"direction": "ZYG", "stimulated_branch": "zygomatic"},
                     {"direction": "MAR", "stimulated_branch": "marginal_mandibular"}])
    return encode(SessionStart(type="session_start", schema_version=1, session_id="S", seq=0, publisher="acquirer",
                               instance="0123abcd", ts_utc=T0, started_at=T0, source="sim", scenario=None,
                               replay_of=None, manual=False, montage=montage, settings={}, ground_truth=False,
                               stream=None))


def _write(root: Path, *, torn: bytes = b"", segment_bytes: int = 4096) -> Path:
    """A session that rolls a segment every few records (at the default `segment_bytes`), with late
    refetched frames, a gap, other messages, refused frames and an unreadable one; `torn`: bytes appended
    to the newest segment afterwards."""
    d = root / "sessions" / "S"
    w = ArchiveWriter(d, ArchiveSettings(segment_bytes=segment_bytes), meta={"test": "compiled"})
    w.append_message(_session_start())
    late = {12, 13, 14}  # lost on the bus, refetched after frame 20
    for i in range(40):
        if i in late or i in (30, 31):
            pass
        elif i == 25:
            w.append_message(_frames_with(i, publisher="NOT A NAME"))  # pattern refused
        elif i == 26:
            w.append_message(_frames_with(i, n_samples=9))  # payload size refused
        elif i == 27:
            w.append_message(_frames_with(i, sampling_rate_hz="fast"))  # type refused
        else:
            w.append_message(emg_frames(i))
        if i == 20:
            for j in sorted(late):
                w.append_message(emg_frames(j))
        if i == 8:
            w.append_message([b"note", b'{"type":"note","seq":0,"publisher":"x","instance":"y"}', b""])
            w.append_message([b"emg_frame", b"{}"])  # an emg_frame topic, not three frames: unreadable
        if i % 7 == 0:
            w.commit()
    w.append_gap("acquirer", "0123abcd", 30, 31, "not refetched", type_="emg_frame")
    w.release()
    if torn:
        last = list_segments(d)[-1][1]
        with open(last, "ab") as f:
            f.write(torn)
    return d


def _reference_index(d: Path) -> dict:
    """The index as a plain walk builds it: record by record, headers through pydantic."""
    frames, events, unreadable, refused = [], [], [], []
    stopped, count = None, 0
    for seg, (_i, path) in enumerate(list_segments(d)):
        data = path.read_bytes()
        pos = SEGMENT_HEADER_SIZE
        while pos < len(data):
            if len(data) - pos < 24:
                stopped = (path.name, pos)
                break
            magic, n, kind, _f, _r, no = RECORD_HEAD.unpack_from(data, pos)
            end = pos + RECORD_OVERHEAD + n
            if magic != RECORD_MAGIC or end > len(data):
                stopped = (path.name, pos)
                break
            count = no + 1
            body_at = pos + 24
            body = data[body_at:body_at + n]
            if kind == 3 and body[:13] == TOPIC:
                parts, at = [], 0
                while at + 4 <= len(body):
                    (ln,) = _LEN.unpack_from(body, at)
                    parts.append((body_at + at + 4, body[at + 4:at + 4 + ln]))
                    at += 4 + ln
                if len(parts) != 3 or at != len(body):
                    unreadable.append(no)
                else:
                    try:
                        m = EmgFrame.model_validate_json(parts[1][1])
                        if len(parts[2][1]) != 4 * m.n_channels * m.n_samples:
                            raise ValueError("payload size")
                    except ValueError:
                        refused.append(no)
                    else:
                        frames.append((no, seg, parts[2][0], m.seq, m.first_sample_index, m.n_samples,
                                       m.n_channels, m.ts_utc.timestamp()))
            elif kind == 3:
                events.append(no)
            pos = end
        if stopped:
            break
    return {"frames": frames, "events": events, "unreadable": unreadable, "refused": refused,
            "stopped_at": stopped, "record_count": count}


def _index_as_reference(idx: ArchiveIndex) -> dict:
    fr = idx.frames
    rows = list(zip(fr.record_no, fr.segment, fr.payload_offset, fr.seq, fr.first_sample, fr.n_samples,
                    fr.n_channels, fr.ts))
    return {"frames": rows, "events": [e.record_no for e in idx.events], "unreadable": sorted(idx.unreadable),
            "refused": sorted(no for no, _ in idx.refused), "stopped_at": idx.stopped_at,
            "record_count": idx.record_count}


@pytest.mark.parametrize("torn", [b"", b"\xf0AMR\x10", b"\xf0AMR" + bytes(30), bytes(100)],
                         ids=["intact", "partial-header", "header-past-end", "zeros"])
def test_index_equals_a_plain_walk(tmp_path: Path, torn: bytes) -> None:
    d = _write(tmp_path, torn=torn)
    assert len(list_segments(d)) > 5  # the segments roll every few records
    want = _reference_index(d)
    assert len(want["frames"]) == 35 and len(want["refused"]) == 3 and len(want["unreadable"]) == 1
    assert (want["stopped_at"] is None) == (not torn)
    with ArchiveIndex.build(d) as idx:
        got = _index_as_reference(idx)
        assert got == want
        assert [g.from_seq for _no, g in idx.gaps] == [30]
        assert idx.frames.streams == [("acquirer", "0123abcd", "S", 20000.0)]


def _reference_blocks(lo: list[int], hi: list[int], block: int, end_sample: int | None) -> list[tuple[int, int]]:
    """Block boundaries as the loop the compiled kernels.block_ends replaced made them."""
    out, first, n = [], 0, 0
    for i in range(len(lo)):
        mergeable = (i > first and lo[i] == hi[i - 1] and n + hi[i] - lo[i] <= block
                     and (end_sample is None or hi[i] < end_sample))
        if not mergeable and i > first:
            out.append((first, i))
            first, n = i, 0
        n += hi[i] - lo[i]
        if end_sample is not None and hi[i] >= end_sample:
            out.append((first, i + 1))
            first, n = i + 1, 0
    if first < len(lo):
        out.append((first, len(lo)))
    return out


def test_block_ends_equal_the_python_loop() -> None:
    from amrwatch.archive import kernels

    rng = np.random.default_rng(18)
    for _ in range(300):
        sizes = rng.integers(1, 12, rng.integers(0, 40))
        holes = rng.integers(0, 3, sizes.size) * (rng.random(sizes.size) < 0.2)
        lo = np.cumsum(np.r_[0, sizes[:-1] + holes[:-1]]).astype(np.int64) if sizes.size else np.zeros(0, np.int64)
        hi = lo + sizes
        block = int(rng.integers(1, 30))
        end = None if rng.random() < 0.5 or not sizes.size else int(rng.integers(0, int(hi[-1]) + 2))
        ends = kernels.block_ends(lo, hi, block, -1 if end is None else end).tolist()
        got = list(zip([0, *ends[:-1]], ends))
        assert got == _reference_blocks(lo.tolist(), hi.tolist(), block, end)


@pytest.mark.parametrize("segment_bytes", [4096, 1 << 20], ids=["rolling", "one-segment"])
def test_signal_blocks_hold_the_frames_samples(tmp_path: Path, segment_bytes: int) -> None:
    """Blocks (copied channel-major by kernels.channel_major within a segment, concatenated across a
    segment roll) hold exactly the samples of the frames they merge, in signal order — the refetched
    frames back in their place."""
    d = _write(tmp_path, segment_bytes=segment_bytes)
    with open_session(d) as one, open_session(d) as blocks:
        singles = [m for m in one.messages("signal") if m.type == "emg_frame"]
        merged = [m for m in blocks.messages("signal", block_s=1.0) if m.type == "emg_frame"]
        segs = {one.index.frames.segment[r] for r in one.signal().rows.tolist()}
    assert len(segs) > 3 if segment_bytes == 4096 else segs == {0}
    assert [m.first_sample_index for m in singles] == [i * 8 for i in range(40) if i not in (25, 26, 27, 30, 31)]
    assert len(merged) < len(singles)
    for m in merged:
        covered = [s for s in singles
                   if m.first_sample_index <= s.first_sample_index < m.first_sample_index + m.n_samples]
        assert sum(s.n_samples for s in covered) == m.n_samples
        np.testing.assert_array_equal(m._samples, np.concatenate([s._samples for s in covered], axis=1))


def _record_offsets(data: bytes) -> list[int]:
    out, pos = [], SEGMENT_HEADER_SIZE
    while pos < len(data):
        out.append(pos)
        pos += RECORD_OVERHEAD + _LEN.unpack_from(data, pos + 4)[0]
    return out


def _walk_state(d: Path, compiled: bool) -> tuple:
    w = _Walk(d, yield_records=False, compiled=compiled)
    w.want_chain(5)
    problems = [str(p) for p in w.walk()]
    tail = None if w.tail is None else (w.tail.segment, w.tail.damage, w.tail.expected_no,
                                        w.tail.valid_records_in_segment)
    return (problems, w.count, w.head, tail, w.closed_at, w.last_checkpoint, w.chains_wanted, w.kinds_wanted,
            w.last_segment_size)


def test_integrity_walk_equals_the_general_scan_on_damage(tmp_path: Path) -> None:
    """The compiled fast path names the same problems, in the same order, with the same chain head, as the
    general scan record by record, whatever bytes are changed, cut or added."""
    d = _write(tmp_path)
    files = [p for _i, p in list_segments(d)]
    original = {p: p.read_bytes() for p in files}
    assert _walk_state(d, True) == _walk_state(d, False)
    assert _walk_state(d, True)[0] == []
    rng = np.random.default_rng(180)
    seen = set()
    for trial in range(120):
        for p, b in original.items():
            p.write_bytes(b)
        p = files[int(rng.integers(len(files)))]
        data = bytearray(original[p])
        how = trial % 7
        at = int(rng.integers(len(data)))
        if how == 0:
            data[at] ^= 1 << int(rng.integers(8))  # one bit
        elif how == 1:
            data[at:at + 8] = bytes(min(8, len(data) - at))  # zeros
        elif how == 2:
            del data[at:]  # cut short
        elif how == 3:
            data[at:at] = b"\xf0AMR" + bytes(20)  # bytes inserted
        elif how == 4:
            data += b"\xf0AMR\x05"  # appended
        elif how == 5:
            data[8:12] = b"\x02\x00\x10\x00"  # segment header version
        else:  # a body byte changed and the record CRC recomputed: only the chain can tell
            offsets = _record_offsets(original[p])
            o = offsets[int(rng.integers(len(offsets)))]
            (n,) = _LEN.unpack_from(data, o + 4)
            if n:
                data[o + 24 + int(rng.integers(n))] ^= 0x40
            _LEN.pack_into(data, o + RECORD_OVERHEAD + n - 4, crc32c.crc32c(data[o:o + RECORD_OVERHEAD + n - 4]))
        p.write_bytes(bytes(data))
        fast, general = _walk_state(d, True), _walk_state(d, False)
        assert fast == general, (trial, p.name, how, at)
        seen.update(x.split(": ")[1] for x in fast[0])
    assert {"crc", "header_crc", "chain", "torn_tail", "segment_header"} <= seen
