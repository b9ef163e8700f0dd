"""`python -m tests.recorder.faulty_recorder eio N` / `slow N SECONDS`: the real recorder with a disk
that fails or stalls after N good fsyncs.

No device here fails or stalls on demand, so the fault is injected through
the archive's ArchiveIO hook; every other call (and the first N fsyncs) is real.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from amrwatch.service import setup_logging
from amrwatch.archive.durable import ArchiveIO
from amrwatch.services.recorder.service import Recorder


def faulty_fsync(mode: str, n: int, seconds: float):
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > n:
            if mode == "eio":
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            if calls["n"] == n + 1:
                time.sleep(seconds)  # one fsync that takes this long
        os.fsync(fd)

    return fsync


def main() -> int:
    setup_logging("recorder")
    mode, n = sys.argv[1], int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    return Recorder(io=ArchiveIO(fsync=faulty_fsync(mode, n, seconds))).run()


if __name__ == "__main__":
    sys.exit(main())
