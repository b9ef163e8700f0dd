"""The index built on several cores (ArchiveIndex.build(workers=N)) is the index one walk builds.

Forked workers index the later segments and the parts are merged in segment
order (issue #18). What could differ is what crosses a part's edge: stream
numbers (a stream first met in a later part, or met again there), the
refusals and unreadable records, a stop at bytes the walk cannot frame (in
the last part or an early one: nothing after it may be indexed), the last
`open`/`close`, record numbers and where each message is. Every one is
compared field by field with the one-process index, on archives whose
segments roll every few records so each part holds several.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from amrwatch.archive import index as index_mod
from amrwatch.archive.index import ArchiveIndex, PendingIndex, _FRAME_COLUMNS, _workers
from amrwatch.archive.integrity import list_segments
from amrwatch.archive.session import open_session
from amrwatch.archive.settings import ArchiveSettings
from amrwatch.archive.writer import ArchiveWriter

from .sessions import emg_frames
from .test_compiled_readers import _frames_with, _session_start, _write


def _state(idx: ArchiveIndex) -> dict:
    fr = idx.frames
    return {"columns": {n: list(getattr(fr, n)) for n in _FRAME_COLUMNS}, "streams": fr.streams,
            "events": idx.events, "gaps": idx.gaps, "resumes": idx.resumes, "open_meta": idx.open_meta,
            "close": idx.close, "record_count": idx.record_count, "stopped_at": idx.stopped_at,
            "unreadable": idx.unreadable, "refused": idx.refused, "at": idx._at, "maps": len(idx._maps)}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of any size (the real threshold keeps small sessions in one process)."""
    monkeypatch.setattr(index_mod, "_MIN_CHUNK_BYTES", 1)


def _left(pending: PendingIndex) -> int:
    import struct

    lo, hi = struct.unpack("<qq", os.pread(pending.ends._fd, 16, 0))
    return max(0, hi - lo + 1)


def _same(d: Path, workers: int, how: str = "race") -> dict:
    """The index built with `workers`, compared field by field with one process's. `how`: "race" — this
    process and the workers take segments as they come (as in use); "workers" — the workers take all;
    "killed" — the workers are killed at once (what they took, this process walks)."""
    assert _workers(list_segments(d), workers) == workers - 1  # the workers really were forked
    with ArchiveIndex.build(d) as one:
        if how == "race":
            many = ArchiveIndex.build(d, workers=workers)
        else:
            pending = ArchiveIndex.start(d, workers=workers)
            if how == "workers":
                pending = _wait_all_taken(pending)
            elif how == "killed":
                for w in pending.helpers:
                    os.kill(w.pid, signal.SIGKILL)
            many = pending.finish()
        with many:
            want, got = _state(one), _state(many)
            for key in want:
                assert got[key] == want[key], key
            # The merged maps serve the samples of every frame, of this process's segments and the workers'.
            for i in range(len(one.frames)):
                assert many.payload_bytes(i) == one.payload_bytes(i)
            for e in one.events:
                assert many.message_frames(e.record_no) == one.message_frames(e.record_no)
    return want


def _wait_all_taken(pending: PendingIndex) -> PendingIndex:
    deadline = time.monotonic() + 30
    while _left(pending) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert _left(pending) == 0, "the workers did not take every segment"
    return pending


@pytest.mark.parametrize("how", ["race", "workers", "killed"])
@pytest.mark.parametrize("torn", [b"", b"\xf0AMR" + bytes(30)], ids=["intact", "torn-tail"])
@pytest.mark.parametrize("workers", [2, 3])
def test_parts_merge_into_the_one_walk_index(tmp_path: Path, small_chunks: None, torn: bytes, workers: int,
                                             how: str) -> None:
    """However the segments were shared out — as they came, all to the workers, or workers killed at once
    (the segments they took are walked here) — the index is the one walk's."""
    d = _write(tmp_path, torn=torn)
    want = _same(d, workers, how)
    assert len(want["refused"]) == 3 and len(want["unreadable"]) == 1
    assert (want["stopped_at"] is None) == (not torn)


def test_a_stop_in_an_early_part_leaves_every_later_part_out(tmp_path: Path, small_chunks: None) -> None:
    d = _write(tmp_path)
    segments = list_segments(d)
    second = segments[1][1]
    data = bytearray(second.read_bytes())
    data[16] ^= 0xFF  # the magic of the segment's first record: the walk cannot frame past it
    second.write_bytes(bytes(data))
    for how in ("race", "workers"):
        want = _same(d, 4, how)
    assert want["stopped_at"] == (second.name, 16)
    assert want["maps"] == 2  # nothing of the segments after it


def test_streams_first_met_in_a_later_part_are_numbered_as_one_walk_numbers_them(tmp_path: Path,
                                                                                  small_chunks: None) -> None:
    d = tmp_path / "sessions" / "S"
    w = ArchiveWriter(d, ArchiveSettings(segment_bytes=4096), meta={"test": "streams"})
    w.append_message(_session_start())
    for i in range(60):
        instance = "0123abcd" if i < 20 or i >= 45 else ("89abcdef" if i < 35 else "fedcba98")
        w.append_message(_frames_with(i, instance=instance) if instance != "0123abcd" else emg_frames(i))
        if i % 5 == 0:
            w.commit()
    w.close("end")  # a close record, in the last part
    for how in ("race", "workers"):
        want = _same(d, 3, how)
    assert [s[1] for s in want["streams"]] == ["0123abcd", "89abcdef", "fedcba98"]


def test_a_worker_that_dies_gives_no_part(tmp_path: Path, small_chunks: None) -> None:
    """A part that never arrives is None: the caller walks those segments itself (finish's fallback)."""
    d = _write(tmp_path)
    pending = ArchiveIndex.start(d, workers=2)
    [w] = pending.helpers
    os.kill(w.pid, signal.SIGKILL)
    assert w.result() is None
    pending.stop()
    pending = _wait_all_taken(ArchiveIndex.start(d, workers=2))
    [w] = pending.helpers
    parts = w.result()
    pending.stop()
    assert parts is not None and sorted(parts) == list(range(len(list_segments(d))))


def test_open_session_builds_with_the_workers_asked(tmp_path: Path, small_chunks: None) -> None:
    d = _write(tmp_path)
    with open_session(d) as one, open_session(d, index_workers=3) as many:
        assert many.index_workers == 3
        assert _state(many.index) == _state(one.index)
        assert json.dumps(many.refused, default=str) == json.dumps(one.refused, default=str)
