"""One writer per data directory: an exclusive flock on DATA_DIR/amrwatch.lock.

Two recorders on one data directory both appended to the same session's
archive and both wrote its registry row (two record numbering sequences in
one file, a verify failure at best). The lock covers the archive's writer:
the recorder takes it for its whole life, and so does `registry synthetic`
(which fills a whole registry and must not mix with a recording); a second
one exits at once, naming the holder's pid and the lock file. Registry
writes that are not the recorder's — a clinician's `outcome add/edit`, `amrwatch
sync` — take no lock: each is one transaction (SQLite WAL with BEGIN
IMMEDIATE, PostgreSQL row locks and constraints), so an outcome can be
entered while the cart records. The kernel drops a flock when its holder dies (even kill -9),
so a stale lock file never blocks a restart. Readers (sessions, verify,
report, the monitor) take no lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

LOCK_FILE = "amrwatch.lock"
#: sysexits.h EX_TEMPFAIL: another process holds the data directory; try again once it has stopped.
EXIT_LOCKED = 75


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"data directory {path.parent} is in use by {holder} (lock file {path}); one recorder or "
                         "registry writer per data directory — stop that process or give another --data DIR")


class DataDirLock:
    """Held from `acquire()` until `release()` or the process ends."""

    def __init__(self, data_dir: Path, what: str) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "another process (pid unknown)"
            os.close(fd)
            raise DataDirLocked(self.path, holder) from None
        except OSError:
            os.close(fd)
            raise
        text = f"pid {os.getpid()} ({self.what})\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_or_exit(data_dir: Path, what: str) -> DataDirLock | int:
    """The lock, or the exit code after printing why not (for CLI commands)."""
    try:
        return DataDirLock(data_dir, what).acquire()
    except DataDirLocked as err:
        print(f"amrwatch: {err}", file=sys.stderr)
        return EXIT_LOCKED
