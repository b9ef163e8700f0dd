"""Appending a session to its log: group commit, segment rolls, checkpoints.

The writer is the only code that writes a session directory. Its promise to
the service is `durable_record_no`: every record up to it has been written
and fsynced; the service acknowledges nothing beyond it. A failed write or
fsync is never retried (after a failed fsync the kernel may already have
dropped the dirty pages, so a retry that "succeeds" proves nothing): the
writer raises `ArchiveFatal` and refuses any further call.

Not thread-safe: one owner calls append/commit/close.
"""

from __future__ import annotations

import datetime as dt
import errno as _errno
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from amrwatch.archive.bodies import CheckpointBody, Gap, canonical_json, check_message, decode_message, encode_message, encode_segment
from amrwatch.archive.checkpoint import CHECKPOINT_FILE, Checkpoint, write_checkpoint
from amrwatch.archive.durable import ArchiveIO
from amrwatch.archive.integrity import (
    ArchiveCorrupt,
    ArchiveError,
    Problem,
    RecoveryReport,
    Record,
    analyse,
    iter_records,
    list_segments,
    recover,
)
from amrwatch.archive.segment import (
    GENESIS,
    SEGMENT_BODY,
    SEGMENT_HEADER_SIZE,
    Kind,
    append_record,
    record_size,
    segment_header,
    segment_name,
)
from amrwatch.archive.settings import ArchiveSettings

__all__ = [
    "ArchiveClosed",
    "ArchiveCorrupt",
    "ArchiveError",
    "ArchiveFatal",
    "Problem",
    "ArchiveReader",
    "ArchiveWriter",
    "Record",
    "session_path",
]

SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_EMPTY_SEGMENT = SEGMENT_HEADER_SIZE + record_size(SEGMENT_BODY.size)


class ArchiveFatal(ArchiveError):
    """A write or fsync failed. The writer is unusable; the process must stop."""

    def __init__(self, message: str, errno: int | None):
        super().__init__(message)
        self.errno = errno


class ArchiveClosed(ArchiveError):
    """The session was closed; its log takes no more records."""


def utc_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise ValueError(f"session_id must be 1-64 characters of A-Z a-z 0-9 _ -; got {session_id!r}")
    return session_id


def session_path(data_dir: Path, session_id: str) -> Path:
    """DATA_DIR/sessions/<session_id>; the id is checked so it cannot walk out of the directory."""
    return Path(data_dir) / "sessions" / check_session_id(session_id)


@dataclass
class _Chunk:
    segment: int
    new: bool
    buf: bytearray
    last_record_no: int = -1


class ArchiveWriter:
    """Appends records to one session's log; see FORMAT.md for the bytes."""

    def __init__(
        self,
        session_dir: Path,
        settings: ArchiveSettings | None = None,
        *,
        meta: dict | None = None,
        io: ArchiveIO | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.dir = Path(session_dir)
        self.session_id = check_session_id(self.dir.name)
        self.settings = settings or ArchiveSettings()
        self._key = self.settings.load_hmac_key()
        self._io = io or ArchiveIO()
        self._clock = clock
        self._mono = monotonic
        self._fd: int | None = None
        self._failed: ArchiveFatal | None = None
        self._closed = False
        self._chunks: list[_Chunk] = []
        self._pending_bytes = 0
        self._pending_records = 0
        self._oldest_pending: float | None = None
        self._durable = -1
        self._next = 0
        self._head = GENESIS
        self._seg_index = -1
        self._seg_size = 0
        self._since_ckpt = 0
        self._last_ckpt = monotonic()
        self._sidecar: Checkpoint | None = None
        self.recovery: RecoveryReport | None = None
        meta = dict(meta or {})
        canonical_json(meta)  # fails early on anything JSON cannot hold

        try:
            self._io.make_dirs(self.dir)
        except OSError as err:
            self._fail(err, f"creating {self.dir}")
        if list_segments(self.dir) or (self.dir / CHECKPOINT_FILE).exists():
            try:
                report = recover(self.dir, hmac_key=self._key, io=self._io)
            except OSError as err:
                self._fail(err, "recovering the session")
            self.recovery = report
            if report.closed:
                raise ArchiveClosed(f"session {self.session_id} was closed; its archive takes no more records")
            self._resume(report, meta)
        else:
            self._start_segment(0)
            self._stage(Kind.OPEN, self._open_body(meta))
            self._stage_checkpoint(closed=False)
        self.commit()

    # ------------------------------------------------------------------ state

    @property
    def durable_record_no(self) -> int:
        """Highest record number written and fsynced; -1 before the first commit."""
        return self._durable

    @property
    def next_record_no(self) -> int:
        return self._next

    @property
    def pending_records(self) -> int:
        return self._pending_records

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def segment_index(self) -> int:
        return self._seg_index

    @property
    def chain_head(self) -> bytes:
        """Chain value of the newest record appended (durable or not)."""
        return self._head

    @property
    def closed(self) -> bool:
        return self._closed

    def needs_commit(self) -> bool:
        """True when buffered records have waited commit_interval_s or fill commit_bytes."""
        if not self._pending_records:
            return False
        return (self._pending_bytes >= self.settings.commit_bytes
                or self._mono() - (self._oldest_pending or 0.0) >= self.settings.commit_interval_s)

    # ---------------------------------------------------------------- appends

    def append(self, kind: Kind | int, body: bytes | bytearray | memoryview) -> int:
        """Buffer one `message` or `gap` record; returns its record number (durable after `commit`)."""
        self._usable()
        if kind not in (Kind.MESSAGE, Kind.GAP):
            raise ValueError(f"kind must be {int(Kind.MESSAGE)} (message) or {int(Kind.GAP)} (gap); got {kind!r} "
                             "(segment, open, checkpoint, resume and close records are written by the writer itself)")
        n = len(memoryview(body).cast("B"))
        if n > self.settings.max_record_bytes:
            raise ValueError(f"body is {n} bytes; max_record_bytes allows 0 to {self.settings.max_record_bytes}")
        if kind == Kind.MESSAGE:
            check_message(body)
        else:
            Gap.decode(body)
        return self._stage(Kind(kind), body)

    def append_message(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        """One bus message, as the multipart frames it travelled in."""
        return self.append(Kind.MESSAGE, encode_message(frames))

    def append_gap(self, publisher: str, instance: str, from_seq: int, to_seq: int, reason: str,
                   type_: str | None = None) -> int:
        """Messages from_seq..to_seq of one publisher instance (and message type, whose seqs they are)
        that never arrived and could not be refetched."""
        return self.append(Kind.GAP, Gap(publisher, instance, from_seq, to_seq, reason, type_).encode())

    # ---------------------------------------------------------------- commits

    def commit(self) -> int:
        """Write and fsync everything buffered (one write per segment touched); returns durable_record_no.

        Takes a checkpoint first when one is due, so it rides in the same fsync.
        """
        self._usable()
        if self._since_ckpt and (self._since_ckpt >= self.settings.checkpoint_every_records
                                 or self._mono() - self._last_ckpt >= self.settings.checkpoint_interval_s):
            self._stage_checkpoint(closed=False)
        io = self._io
        try:
            for chunk in self._chunks:
                if chunk.new:
                    if self._fd is not None:
                        fd, self._fd = self._fd, None
                        io.close(fd)
                    path = self.dir / segment_name(chunk.segment)
                    self._fd = io.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
                    io.write_all(self._fd, chunk.buf)
                    io.fsync(self._fd)
                    io.fsync_dir(self.dir)
                else:
                    assert self._fd is not None
                    io.write_all(self._fd, chunk.buf)
                    io.fsync(self._fd)
                self._durable = chunk.last_record_no
        except OSError as err:
            self._fail(err, f"writing {segment_name(self._seg_index)}")
        self._chunks = []
        self._pending_bytes = 0
        self._pending_records = 0
        self._oldest_pending = None
        if self._sidecar is not None:
            cp, self._sidecar = self._sidecar, None
            try:
                write_checkpoint(self.dir, cp, self._key, io)
            except OSError as err:
                self._fail(err, f"writing {CHECKPOINT_FILE}")
        return self._durable

    def close(self, reason: str = "end", **info: object) -> int:
        """Write the `close` record and a final checkpoint; the session takes nothing more."""
        self._usable()
        body = {"at": utc_iso(self._clock()), "reason": reason}
        body.update(info)
        self._stage(Kind.CLOSE, canonical_json(body))
        self._stage_checkpoint(closed=True)
        durable = self.commit()
        self._closed = True
        self._close_fd()
        return durable

    def release(self) -> int:
        """Commit and let go of the file without closing the session (it can be reopened and resumed)."""
        durable = self.commit()
        self._close_fd()
        self._closed = True
        return durable

    # --------------------------------------------------------------- internals

    def _usable(self) -> None:
        if self._failed is not None:
            raise ArchiveFatal(f"archive writer for {self.session_id} already failed ({self._failed}); "
                               "it takes no further calls", self._failed.errno)
        if self._closed:
            raise ArchiveClosed(f"archive writer for {self.session_id} was closed")

    def _fail(self, err: OSError, doing: str) -> NoReturn:
        self._close_fd(quiet=True)
        name = _errno.errorcode.get(err.errno or 0, str(err.errno))
        fatal = ArchiveFatal(
            f"archive {self.session_id}: {doing} failed with {name} ({err.strerror or err}); records after "
            f"{self._durable} are not durable. Not retried: stop the recorder (alarm archive_fatal, non-zero exit) "
            "so the supervisor restarts it and recovery cuts the unfinished tail", err.errno)
        self._failed = fatal
        raise fatal from err

    def _close_fd(self, quiet: bool = False) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self._io.close(fd)
        except OSError:
            if not quiet:
                raise

    def _open_body(self, meta: dict) -> bytes:
        return canonical_json({"session_id": self.session_id, "format": 1,
                               "created_at": utc_iso(self._clock()), "meta": meta})

    def _resume(self, report: RecoveryReport, meta: dict) -> None:
        self._next = report.record_count
        self._head = report.chain_head
        self._durable = report.record_count - 1
        if report.last_segment is None:
            self._start_segment(0)
        else:
            self._seg_index = report.last_segment
            self._seg_size = report.last_segment_size
            path = self.dir / segment_name(report.last_segment)
            try:
                self._fd = self._io.open(path, os.O_WRONLY | os.O_APPEND)
            except OSError as err:
                self._fail(err, f"opening {path.name}")
        if report.checkpoint_missing and report.last_checkpoint is not None:
            # The crash fell between the first checkpoint's fsync and its sidecar: restore the sidecar
            # before anything is appended, so the log never runs ahead of a missing checkpoint.json.
            no, chain = report.last_checkpoint
            self._sidecar = Checkpoint(self.session_id, no + 1, chain.hex(), False, utc_iso(self._clock()))
        if self._next < 2:
            self._stage(Kind.OPEN, self._open_body(meta))
        else:
            self._stage(Kind.RESUME, canonical_json({"at": utc_iso(self._clock()), "recovery": report.as_dict()}))
        self._stage_checkpoint(closed=False)

    def _start_segment(self, index: int) -> None:
        self._chunks.append(_Chunk(index, True, bytearray(segment_header(index))))
        self._seg_index = index
        self._seg_size = SEGMENT_HEADER_SIZE
        self._pending_bytes += SEGMENT_HEADER_SIZE
        self._stage(Kind.SEGMENT, encode_segment(index, self._head), roll=False)

    def _would_roll(self, body_len: int) -> bool:
        return (self._seg_size + record_size(body_len) > self.settings.segment_bytes
                and self._seg_size > _EMPTY_SEGMENT)

    def _stage(self, kind: Kind, body, roll: bool = True) -> int:
        size = record_size(len(body))
        if roll and self._would_roll(len(body)):
            self._start_segment(self._seg_index + 1)
        if not self._chunks or self._chunks[-1].segment != self._seg_index:
            self._chunks.append(_Chunk(self._seg_index, False, bytearray()))
        chunk = self._chunks[-1]
        no = self._next
        self._head = append_record(chunk.buf, no, int(kind), body, self._head)
        chunk.last_record_no = no
        self._next = no + 1
        self._seg_size += size
        self._pending_bytes += size
        self._pending_records += 1
        if self._oldest_pending is None:
            self._oldest_pending = self._mono()
        if kind != Kind.CHECKPOINT:
            self._since_ckpt += 1
        return no

    def _stage_checkpoint(self, closed: bool) -> None:
        at = utc_iso(self._clock())
        body = CheckpointBody(self._next, self._head.hex(), at, closed).encode()
        if self._would_roll(len(body)):
            # The roll adds a `segment` record first; the checkpoint must describe the log after it.
            self._start_segment(self._seg_index + 1)
            body = CheckpointBody(self._next, self._head.hex(), at, closed).encode()
        no = self._stage(Kind.CHECKPOINT, body, roll=False)
        self._sidecar = Checkpoint(self.session_id, no + 1, self._head.hex(), closed, utc_iso(self._clock()))
        self._since_ckpt = 0
        self._last_ckpt = self._mono()


class ArchiveReader:
    """Reads a session back; never writes."""

    def __init__(self, session_dir: Path):
        self.dir = Path(session_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"no archived session at {self.dir}")

    def records(self, *, allow_torn_tail: bool = False) -> Iterator[Record]:
        """Every record in order (CRCs and chain checked on the way); ArchiveCorrupt at the first problem."""
        return iter_records(self.dir, allow_torn_tail=allow_torn_tail)

    def messages(self) -> Iterator[tuple[int, list[bytes]]]:
        """(record_no, frames) of every archived bus message, in log order, CRCs and chain checked on the way.
        To read a session (decoded, in the order a tool needs) use archive.session.open_session."""
        for rec in self.records():
            if rec.kind == Kind.MESSAGE:
                yield rec.record_no, decode_message(rec.body)

    def gaps(self) -> list[tuple[int, Gap]]:
        return [(r.record_no, Gap.decode(r.body)) for r in self.records() if r.kind == Kind.GAP]

    def verify(self, hmac_key: bytes | None = None) -> list[Problem]:
        """Every problem found (empty list: intact). With `hmac_key`, checkpoint.json must be signed with it."""
        return analyse(self.dir, hmac_key).problems

