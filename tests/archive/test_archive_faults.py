"""Disk full and fsync failure: ArchiveFatal, nothing acknowledged that was not durable, never retried.

ENOSPC is produced for real on a 64 KiB tmpfs when this process may mount one
(root); EIO cannot be produced on demand here (no device-mapper), so it is
injected through the writer's ArchiveIO hook while every other call stays real.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from amrwatch.archive.writer import ArchiveFatal, ArchiveReader, ArchiveWriter
from amrwatch.archive.integrity import recover
from amrwatch.archive.settings import ArchiveSettings

from .sessions import CountingIO, emg_frames
from ..conftest import cannot_run_here


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        reason = "mounting a 64 KiB tmpfs needs root; ENOSPC is still covered by the injected-write test"
        cannot_run_here(reason)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        reason = f"cannot mount a 64 KiB tmpfs ({r.stderr.strip()}); ENOSPC is still covered by the injected-write test"
        cannot_run_here(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_disk_full_is_fatal_and_acknowledged_records_survive(tiny_fs: Path, tmp_path: Path):
    d = tiny_fs / "sessions" / "S1"
    w = ArchiveWriter(d, ArchiveSettings(segment_bytes=16 * 1024))
    acked = w.durable_record_no
    sent: dict[int, list[bytes]] = {}
    with pytest.raises(ArchiveFatal) as err:
        for i in range(10_000):
            frames = emg_frames(i, n_samples=64)
            sent[w.append_message(frames)] = frames
            if i % 2:
                acked = w.commit()
    assert err.value.errno == errno.ENOSPC
    assert "ENOSPC" in str(err.value) and "Not retried" in str(err.value)
    assert w.durable_record_no == acked
    assert max(sent) > acked  # something was appended and never acknowledged
    with pytest.raises(ArchiveFatal, match="already failed"):
        w.append_message(emg_frames(0))
    with pytest.raises(ArchiveFatal):
        w.commit()
    # the supervisor restarts the recorder: recovery on what the disk holds
    copy = shutil.copytree(d, tmp_path / "after" / "sessions" / "S1")
    rep = recover(copy)
    assert rep.record_count > acked
    got = dict(ArchiveReader(copy).messages())
    for no, frames in sent.items():
        if no <= acked:
            assert got[no] == frames
    assert ArchiveReader(copy).verify() == []


class FaultyIO(CountingIO):
    """Real calls, except that the next call of one kind fails with the given errno."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: dict[str, int] = {}
        for name in ("fsync", "fsync_dir", "write"):
            real = getattr(self, name)
            setattr(self, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def call(*args):
            code = self.armed.pop(name, None)
            if code is not None:
                self.calls.append((name + "!", ""))
                if name == "write":  # all but the last 10 bytes reach the file, then the disk is full
                    fd, data = args
                    real(fd, bytes(data[:len(data) - 10]))
                raise OSError(code, os.strerror(code))
            return real(*args)
        return call

    def fail_next(self, name: str, code: int) -> None:
        self.armed[name] = code


def _writer(tmp_path: Path, **settings) -> tuple[ArchiveWriter, FaultyIO]:
    io = FaultyIO()
    return ArchiveWriter(tmp_path / "sessions" / "S1", ArchiveSettings(**settings), io=io), io


def test_fsync_eio_is_fatal_not_retried_and_not_acknowledged(tmp_path: Path):
    w, io = _writer(tmp_path)
    for i in range(5):
        w.append_message(emg_frames(i))
    acked = w.commit()
    for i in range(5, 10):
        w.append_message(emg_frames(i))
    io.fail_next("fsync", errno.EIO)
    with pytest.raises(ArchiveFatal) as err:
        w.commit()
    assert err.value.errno == errno.EIO and "EIO" in str(err.value)
    assert w.durable_record_no == acked
    n_calls = len(io.calls)
    for call in (w.commit, lambda: w.append_message(emg_frames(0)), w.close):
        with pytest.raises(ArchiveFatal):
            call()
    assert io.calls[n_calls:] == []  # no retry of any kind


def test_directory_fsync_failure_on_a_new_segment_keeps_its_records_unacknowledged(tmp_path: Path):
    w, io = _writer(tmp_path, segment_bytes=4096)
    w.append_message(emg_frames(0))
    acked = w.commit()
    first_new = None
    while first_new is None:
        no = w.append_message(emg_frames(1, n_samples=32))
        if w.segment_index == 1:
            first_new = no
    io.fail_next("fsync_dir", errno.EIO)
    with pytest.raises(ArchiveFatal, match="EIO"):
        w.commit()
    assert acked <= w.durable_record_no < first_new - 1  # the segment record precedes first_new
    assert ("fsync_dir!", "") in io.calls


def test_checkpoint_file_fsync_failure_is_fatal(tmp_path: Path):
    w, io = _writer(tmp_path, checkpoint_every_records=3)
    for i in range(3):
        w.append_message(emg_frames(i))
    real_calls = len(io.calls)
    # first fsync: the log (succeeds); second: checkpoint.json.tmp (fails)
    orig = io.fsync

    calls = []

    def fsync_then_fail(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return orig(fd)

    io.fsync = fsync_then_fail
    with pytest.raises(ArchiveFatal, match="writing checkpoint.json failed with EIO"):
        w.commit()
    assert len(io.calls) > real_calls
    assert (w.dir / "checkpoint.json.tmp").exists()  # left behind by the failed write ...
    assert [p.what for p in ArchiveReader(w.dir).verify()] == []  # ... ignored; the old checkpoint still holds


def test_partial_write_then_enospc_leaves_a_tail_that_recovery_cuts(tmp_path: Path):
    w, io = _writer(tmp_path)
    sent = {}
    for i in range(4):
        f = emg_frames(i)
        sent[w.append_message(f)] = f
    acked = w.commit()
    for i in range(4, 8):
        w.append_message(emg_frames(i))
    io.fail_next("write", errno.ENOSPC)
    with pytest.raises(ArchiveFatal, match="ENOSPC"):
        w.commit()
    assert w.durable_record_no == acked
    assert [p.what for p in ArchiveReader(w.dir).verify()] == ["torn_tail"]
    rep = recover(w.dir)
    assert rep.cut is not None and rep.cut.bytes_cut < 2000
    assert rep.record_count == acked + 4  # three more records had reached the file whole; the fourth is cut
    msgs = dict(ArchiveReader(w.dir).messages())
    assert {k: msgs[k] for k in sent} == sent
