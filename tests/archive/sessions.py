"""Helpers for the archive tests (and the recorder, registry and audit tests that build archives):
real encoded bus messages, sessions on disk, and a map from byte offsets to the record that holds them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amrwatch.proto.codec import encode
from amrwatch.proto.messages import EmgFrame
from amrwatch.archive.writer import ArchiveReader, ArchiveWriter
from amrwatch.archive.durable import ArchiveIO
from amrwatch.archive.segment import SEGMENT_HEADER_SIZE, record_size
from amrwatch.archive.settings import ArchiveSettings

FULL = os.environ.get("AMRWATCH_FULL") == "1"
T0 = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.UTC)


def emg_frames(i: int, n_channels: int = 2, n_samples: int = 8, seed: int = 0) -> list[bytes]:
    """The wire frames of a real emg_frame message (proto codec), samples from a seeded generator."""
    rng = np.random.default_rng(seed * 100_003 + i)
    msg = EmgFrame(type="emg_frame", schema_version=1, session_id="S", seq=i, publisher="acquirer",
                   instance="0123abcd", ts_utc=T0, first_sample_index=i * n_samples, n_channels=n_channels,
                   n_samples=n_samples, sampling_rate_hz=20000.0, dtype="<f4", layout="channel_major",
                   first_sample_device_s=i * n_samples / 20000.0, first_sample_utc=T0)
    msg.with_samples(rng.normal(0, 50, (n_channels, n_samples)).astype("<f4"))
    return encode(msg)


@dataclass
class Session:
    dir: Path
    frames: list[list[bytes]]  # what was appended, in order
    message_nos: list[int]


def make_session(root: Path, name: str = "S1", n: int = 10, *, close: bool = False, commit_every: int = 3,
                 settings: ArchiveSettings | None = None, n_samples: int = 8) -> Session:
    d = root / "sessions" / name
    w = ArchiveWriter(d, settings or ArchiveSettings(), meta={"test": name})
    frames, nos = [], []
    for i in range(n):
        f = emg_frames(i, n_samples=n_samples)
        nos.append(w.append_message(f))
        frames.append(f)
        if (i + 1) % commit_every == 0:
            w.commit()
    if close:
        w.close()
    else:
        w.release()
    return Session(d, frames, nos)


@dataclass(frozen=True)
class Span:
    file: str
    start: int
    end: int
    record_no: int | None  # None: the segment header


def layout(session_dir: Path) -> list[Span]:
    """Where every byte of every segment belongs (read from an intact archive)."""
    spans: list[Span] = []
    for rec in ArchiveReader(session_dir).records():
        name = f"seg-{rec.segment:06d}.amrlog"
        if rec.offset == SEGMENT_HEADER_SIZE:
            spans.append(Span(name, 0, SEGMENT_HEADER_SIZE, None))
        spans.append(Span(name, rec.offset, rec.offset + record_size(len(rec.body)), rec.record_no))
    return spans


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def restore(d: Path, snap: dict[str, bytes]) -> None:
    for p in d.iterdir():
        if p.is_file() and p.name not in snap:
            p.unlink()
    for name, data in snap.items():
        (d / name).write_bytes(data)


def copy_session(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class CountingIO(ArchiveIO):
    """The real system calls, with a log of which ones ran (to check order and that nothing is retried)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self._paths: dict[int, str] = {}
        real_open, real_fsync, real_dir = os.open, os.fsync, self.fsync_dir

        def open_(path, flags, mode=0o777):
            fd = real_open(path, flags, mode)
            self._paths[fd] = Path(path).name
            self.calls.append(("open", Path(path).name))
            return fd

        def fsync(fd):
            self.calls.append(("fsync", self._paths.get(fd, "?")))
            real_fsync(fd)

        def fsync_dir(path):
            self.calls.append(("fsync_dir", Path(path).name))
            real_dir(path)

        self.open, self.fsync, self.fsync_dir = open_, fsync, fsync_dir
