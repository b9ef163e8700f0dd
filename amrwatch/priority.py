"""The CPU priority a service process runs at (config.NICE, AMRWATCH_NICE_<SERVICE>).

Why: on the cart's two cores a measurement crosses three Python processes
(acquirer → bus → analyzer → bus → the surgeon's screen), and when the
recorder or the monitor holds a core at the moment a sweep completes, the
analyzer waits a scheduler slice before it can measure. A lower priority (a
higher nice) for those two lets the scheduler give the measurement's
processes the core first. Measured (bench/RESULTS.md, end-to-end section):
together with the collector change, p99 0.95x of before on an idle machine —
small — while on a saturated machine the recorder at nice 5 fell more than a
minute behind. So every service defaults to 0 (config.NICE) and a deployment
sets it, measured on its own cart.

Applied once, at the start of the service's process, before it makes its own
threads (the ZeroMQ I/O thread, the metrics server, the watchdog): Linux keeps
a nice value per thread, and threads inherit it from the one that makes them.
Threads the imports already started (numpy's BLAS pool) are set one by one.
"""

from __future__ import annotations

import os

from . import config


def apply(service: str) -> str | None:
    """Set this process's nice value for `service`; a sentence if it could not be set (and why), else None."""
    want = config.nice(service)
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if want == current:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, want)
        for tid in _threads():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, want)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    except PermissionError:
        return (f"AMRWATCH_NICE_{service.upper()}={want} asks for a higher CPU priority than this process may "
                f"take (it needs CAP_SYS_NICE; in compose: cap_add: [SYS_NICE]): running at nice {current}")
    return None


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: only the calling thread was set
        return []
