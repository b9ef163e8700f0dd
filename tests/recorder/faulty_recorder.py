"""`python -m tests.recorder.faulty_recorder N`: the real recorder whose (N+1)-th fsync fails with EIO.

No device here fails on demand, so the failure is injected through the
archive's ArchiveIO hook; every other call (and the first N fsyncs) is real.
"""

from __future__ import annotations

import errno
import os
import sys

from amrwatch.service import setup_logging
from amrwatch.services.recorder.durable import ArchiveIO
from amrwatch.services.recorder.service import Recorder


def failing_after(n: int):
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    return fsync


def main() -> int:
    setup_logging("recorder")
    return Recorder(io=ArchiveIO(fsync=failing_after(int(sys.argv[1])))).run()


if __name__ == "__main__":
    sys.exit(main())
