"""`amrwatch replay` of a damaged archive refuses (exit 1, what is wrong, run verify) unless --force,
which says what it skips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import free_port
from ..archive.sessions import layout, make_session

SID = "0123456789abcdef"


def replay(data: Path, *extra: str) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run([sys.executable, "-m", "amrwatch", "replay", SID, "--data", str(data), "--wait-for", "",
                           "--wait-timeout", "0.5", "--bus", f"tcp://127.0.0.1:{port}", *extra],
                          capture_output=True, text=True, timeout=60)


def test_a_flipped_byte_is_refused_and_force_says_what_it_skips(tmp_path: Path):
    s = make_session(tmp_path, SID, n=30, close=True)
    span = [x for x in layout(s.dir) if x.record_no == 10][0]
    seg = s.dir / span.file
    raw = bytearray(seg.read_bytes())
    raw[(span.start + span.end) // 2] ^= 0x01
    seg.write_bytes(bytes(raw))

    out = replay(tmp_path)
    assert out.returncode == 1, out.stderr
    assert "fails its integrity check" in out.stderr and f"amrwatch verify {SID}" in out.stderr, out.stderr
    assert "record 10" in out.stderr and "--force" in out.stderr
    assert "replaying" not in out.stderr.split("integrity check")[0]

    forced = replay(tmp_path, "--force")
    assert "--force: replaying" in forced.stderr and "skipped:" in forced.stderr, forced.stderr
    assert "unreadable record(s) [10]" in forced.stderr, forced.stderr


def test_a_truncated_archive_is_refused(tmp_path: Path):
    s = make_session(tmp_path, SID, n=30, close=True)
    seg = sorted(s.dir.glob("seg-*.amrlog"))[-1]
    raw = seg.read_bytes()
    last = [x for x in layout(s.dir) if x.file == seg.name][-4]
    seg.write_bytes(raw[:last.start])  # whole records cut off the end, as a copy that stopped short

    out = replay(tmp_path)
    assert out.returncode == 1, out.stderr
    assert "fails its integrity check" in out.stderr and f"amrwatch verify {SID}" in out.stderr, out.stderr


def test_an_intact_archive_is_not_refused(tmp_path: Path):
    make_session(tmp_path, SID, n=30, close=True)
    out = replay(tmp_path)
    assert "integrity" not in out.stderr, out.stderr
    # Past the check (the test archive holds frames only, so the replay stops at the next one).
    assert "no session_start" in out.stderr, out.stderr
