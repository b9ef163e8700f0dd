"""What the recorder does when the disk or an archive lets it down.

- A session left `recording` whose archive is corrupt (not a torn tail): the recorder marks it
  corrupt, raises `archive_corrupt`, leaves every byte as it was, and records the next session.
- The disk fills (ENOSPC, for real on a small tmpfs) or an fsync fails (EIO, injected through the
  ArchiveIO hook): `archive_fatal` alarm and exit 74, never a retry.
- An fsync that hangs for seconds: `recorder_stalled`, and recording goes on.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from amrwatch.bus import Subscriber
from amrwatch.proto.messages import Alarm
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.registry.store import Registry
from amrwatch.services.recorder.service import EXIT_ARCHIVE_FATAL

from ..archive.sessions import T0, emg_frames, layout
from .stack import sessions, start_python_module, wait_closed
from ..conftest import cannot_run_here

CORRUPT = "20261124T080000Z-c0ffee"


def _alarm(sub: Subscriber, kind: str, timeout: float = 30.0) -> Alarm:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if isinstance(msg, Alarm) and msg.kind == kind:
            return msg
    raise AssertionError(f"no {kind} alarm within {timeout} s")


def _corrupt_session(data: Path) -> dict[str, bytes]:
    with Registry.in_data_dir(data) as reg:
        reg.create_session(CORRUPT, actor="test", started_at=T0, source="sim")
    d = session_path(data, CORRUPT)
    w = ArchiveWriter(d)
    for i in range(20):
        w.append_message(emg_frames(i, n_samples=64))
        if i % 5 == 4:
            w.commit()
    w.release()
    spans = [sp for sp in layout(d) if sp.record_no == 10]
    seg = d / spans[0].file
    data_b = bytearray(seg.read_bytes())
    data_b[spans[0].start + 40] ^= 0x04  # inside record 10, far from the tail: corruption, not a torn write
    seg.write_bytes(bytes(data_b))
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_a_corrupt_session_is_flagged_left_untouched_and_the_next_one_recorded(procs, stack_env):
    data = Path(stack_env["AMRWATCH_DATA"])
    before = _corrupt_session(data)
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm",))
        time.sleep(0.5)
        procs.start("recorder")
        alarm = _alarm(sub, "archive_corrupt")
        assert alarm.priority == "high" and CORRUPT in alarm.message and "record 10" in alarm.message
        acq = procs.start("acquirer", "--speed", "20", "--time-scale", "0.03", "--wait-for", "recorder")
        assert acq.wait(timeout=60) == 0
    finally:
        ctx.destroy(linger=0)
    [new] = wait_closed(data, 1, procs=procs, skip_corrupt=True)
    rows = {r.session_id: r for r in sessions(data)}
    assert set(rows) == {CORRUPT, new.session_id}
    assert rows[CORRUPT].status == "corrupt" and "record 10" in rows[CORRUPT].status_reason
    after = {p.name: p.read_bytes() for p in session_path(data, CORRUPT).iterdir()}
    assert after == before  # not one byte touched


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        reason = "mounting a small tmpfs needs root; the injected EIO test still covers the fatal path"
        cannot_run_here(reason)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        reason = f"cannot mount a tmpfs ({r.stderr.strip()}); the injected EIO test still covers the fatal path"
        cannot_run_here(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_raises_archive_fatal_and_exits_non_zero(procs, stack_env, small_disk):
    stack_env["AMRWATCH_DATA"] = str(small_disk / "data")
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm",))
        time.sleep(0.5)
        rec = procs.start("recorder")
        procs.start("acquirer", "--speed", "5", "--time-scale", "0.1", "--sample-index-channel",
                    "--wait-for", "recorder")
        alarm = _alarm(sub, "archive_fatal", timeout=60)
        assert rec.wait(timeout=30) == EXIT_ARCHIVE_FATAL
    finally:
        ctx.destroy(linger=0)
    assert alarm.priority == "high" and "ENOSPC" in alarm.message and "Not retried" in alarm.message
    log = procs.log("recorder")
    assert log.count("ENOSPC") >= 1 and "Traceback" not in log


def test_an_fsync_error_raises_archive_fatal_and_exits_non_zero(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm",))
        time.sleep(0.5)
        rec = start_python_module(procs, "tests.recorder.faulty_recorder", "eio", "40", name="recorder")
        # --loop: the signal goes on however long the failed recorder takes to die and the new one to start
        # (under load the one short session had ended by then, and there was no recording to resume)
        procs.start("acquirer", "--speed", "5", "--time-scale", "0.1", "--loop", "--wait-for", "recorder")
        alarm = _alarm(sub, "archive_fatal", timeout=60)
        assert rec.wait(timeout=30) == EXIT_ARCHIVE_FATAL
        assert alarm.priority == "high" and "EIO" in alarm.message and alarm.state == "raised"
        log = procs.log("recorder")
        assert "Traceback" not in log and "EIO" in log
        # The supervisor restarts it: recovery on what the disk holds, and the session goes on — and the
        # alarm the dead process raised is cleared once recording has resumed (it used to stay raised).
        procs.start("recorder")
        cleared = _alarm(sub, "archive_fatal", timeout=60)
        assert cleared.state == "cleared" and cleared.alarm_key == alarm.alarm_key, cleared
        assert "resumed" in cleared.message and "EIO" in cleared.message
    finally:
        ctx.destroy(linger=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sessions(Path(stack_env["AMRWATCH_DATA"]))
        if rows and "resumed" in procs.log("recorder"):
            break
        time.sleep(0.3)
    assert "resumed" in procs.log("recorder")


def test_a_stalled_disk_raises_recorder_stalled_and_recording_goes_on(procs, stack_env):
    procs.start("bus")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm",))
        time.sleep(0.5)
        rec = start_python_module(procs, "tests.recorder.faulty_recorder", "slow", "5", "2.5", name="recorder")
        procs.start("acquirer", "--speed", "10", "--time-scale", "0.05", "--wait-for", "recorder")
        alarm = _alarm(sub, "recorder_stalled", timeout=60)
    finally:
        ctx.destroy(linger=0)
    assert alarm.priority == "high" and "stalled for 2." in alarm.message
    [row] = wait_closed(Path(stack_env["AMRWATCH_DATA"]), 1, procs=procs)
    assert rec.poll() is None and row.status == "closed"
