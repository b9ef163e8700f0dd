"""`amrwatch acquirer`, plus a note of when each emg_frame was published.

The same Acquirer and command line; one callback on `Publisher.on_sent`
(the hook the retransmit buffer uses too) appends (session, first sample,
CLOCK_MONOTONIC ns) to preallocated arrays, written as .npz to
$BENCH_PUBLISH_LOG when the process exits. This is the "acquirer publishes
the frame" instant of the end-to-end latency.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from amrwatch import cli
from amrwatch.services.acquirer import service as acquirer

CAPACITY = 4_000_000


class PublishLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.session = np.zeros(CAPACITY, np.int32)
        self.first = np.zeros(CAPACITY, np.int64)
        self.t_ns = np.zeros(CAPACITY, np.int64)
        self.n = 0
        self.sessions: dict[str, int] = {}

    def __call__(self, msg, _frames) -> None:
        if msg.type != "emg_frame" or self.n >= CAPACITY:
            return
        t = time.monotonic_ns()
        i = self.n
        self.session[i] = self.sessions.setdefault(msg.session_id, len(self.sessions))
        self.first[i] = msg.first_sample_index
        self.t_ns[i] = t
        self.n = i + 1

    def save(self) -> None:
        names = sorted(self.sessions, key=self.sessions.get)
        np.savez(self.path, session=self.session[: self.n], first=self.first[: self.n], t_ns=self.t_ns[: self.n],
                 sessions=np.array(names, dtype=object))


def main(argv: list[str]) -> int:
    log = PublishLog(os.environ["BENCH_PUBLISH_LOG"])
    plain_init = acquirer.Acquirer.__init__

    def init(self, *a, **kw) -> None:
        plain_init(self, *a, **kw)
        self.pub.on_sent.append(log)

    acquirer.Acquirer.__init__ = init
    try:
        return cli.main(["acquirer", *argv])
    finally:
        log.save()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
