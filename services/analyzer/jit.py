"""How the analyzer's per-sample loops are compiled (numba), and where the result is cached.

Measures and rejection checks walk each channel's sweep a few times. Written
as numpy expressions they took some fifty array calls per sweep, and at 16
channels of 1,400 samples each call costs about as much in overhead as in
arithmetic; as compiled loops they cost a sixth (bench/analyzer_speed.py).

Kernels are compiled eagerly, for the one signature they are called with, at
import: a service pays the compilation when it starts, never on the first
sweep of a session. The machine code is cached next to the source, or under
`NUMBA_CACHE_DIR` (the container image points it at its /tmp tmpfs); where no
cache location is writable the kernels are compiled in memory at each start
(about a second) instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def compiled(signature: str) -> Callable[[Callable[..., Any]], Any]:
    """`numba.njit` with an explicit signature, cached on disk where possible."""

    def decorate(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(signature, cache=True, nogil=True)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available" (read-only file system)
            return numba.njit(signature, cache=False, nogil=True)(fn)

    return decorate
