"""The few system calls durability rests on, behind one replaceable object.

Everything the archive writes goes through an `ArchiveIO`, so a test can
make exactly one `fsync` fail with EIO (which no real device here will do on
demand) while every other call is the real one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ArchiveIO:
    open: Callable[..., int] = field(default=os.open)
    write: Callable[[int, bytes | memoryview], int] = field(default=os.write)
    fsync: Callable[[int], None] = field(default=os.fsync)
    close: Callable[[int], None] = field(default=os.close)
    replace: Callable[[str | os.PathLike, str | os.PathLike], None] = field(default=os.replace)
    fsync_dir: Callable[[str | os.PathLike], None] = field(default=_fsync_dir)

    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """os.write may write less than asked (a disk filling up); finish or raise."""
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                n = self.write(fd, view[done:])
                if n <= 0:
                    raise OSError(f"write returned {n} with {len(view) - done} bytes still to write")
                done += n

    def write_atomically(self, path: Path, data: bytes) -> None:
        """tmp file + fsync + rename + directory fsync: the file is either the old or the new one.

        The tmp file is always a new file of ours (O_CREAT|O_EXCL|O_NOFOLLOW): a symlink planted under its
        name in the data directory is removed, never written through (a stale tmp from a crash likewise)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            os.unlink(tmp)  # removes a link itself, not what it points to
        except FileNotFoundError:
            pass
        fd = self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            self.write_all(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.replace(tmp, path)
        self.fsync_dir(path.parent)

    def make_dirs(self, path: Path) -> None:
        """Create `path` and its missing parents, fsyncing each parent so the new entries survive a crash."""
        missing = []
        p = Path(path)
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o750)
            except FileExistsError:
                pass
            self.fsync_dir(d.parent)
