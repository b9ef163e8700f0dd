"""Python's cyclic garbage collector, run between messages instead of inside them.

Why: CPython starts a collection whenever enough container objects have been
allocated, so it strikes in the middle of whatever allocated last. Measured on
the end-to-end bench (2026-12-03, `python -m bench e2e`, 40 stimuli/s, each
collection timed with gc.callbacks): most collections of every service come
while it imports (a full one of 30-90 ms, scanning ~160,000 objects); during
the run the analyzer collected only a few times, but the acquirer — which
makes every frame — ran 65 young collections (0.1-0.6 ms), 7 middle ones
(1-2 ms) and a full one of 77 ms in about a minute, each holding up the frames
behind it, and a full collection anywhere scans every object the imports made.

What this does, the two usual remedies for a latency-bound Python process:

- `gc.freeze()` once the service is set up: the objects of the imports, the
  model and the settings live as long as the process; moved to the permanent
  generation, no collection scans them again (a full collection becomes as
  cheap as a young one);
- automatic collection off, and the same generational schedule (CPython's own
  thresholds) run by the service loop at a moment it has nothing waiting:
  after a batch of messages is handled and before it waits for more. A
  collection then delays at most a message that arrives during it, not the one
  being handled.

A loop that never finds itself idle (overload) still collects when the young
generation reaches `hard_limit` objects: cycles are never left to pile up.
Reference counting, which frees nearly everything, is untouched.
"""

from __future__ import annotations

import gc


class IdleCollector:
    """The generational schedule of CPython's collector, run by the caller at idle moments."""

    def __init__(self, hard_factor: int = 20) -> None:
        young, middle, old = gc.get_threshold()
        #: CPython's defaults (700, 10, 10) unless the process set others.
        self.young, self.middle, self.old = max(1, young), max(1, middle), max(1, old)
        self.hard_limit = self.young * hard_factor
        self.collections = [0, 0, 0]
        self._middle_runs = 0
        self._old_runs = 0
        self.active = False

    def start(self) -> None:
        """Freeze what exists now (call after setup) and take over the schedule."""
        gc.collect()
        gc.freeze()
        gc.disable()
        self.active = True

    def stop(self) -> None:
        if self.active:
            gc.enable()
            self.active = False

    def due(self) -> bool:
        return self.active and gc.get_count()[0] >= self.young

    def idle(self) -> int | None:
        """Nothing waits: collect if the schedule says so. Returns the generation collected, or None."""
        if not self.due():
            return None
        return self._collect()

    def busy(self) -> int | None:
        """Messages are still waiting: collect only past the hard limit (an overloaded loop)."""
        if not self.active or gc.get_count()[0] < self.hard_limit:
            return None
        return self._collect()

    def _collect(self) -> int:
        if self._middle_runs >= self.middle:
            if self._old_runs >= self.old:
                generation = 2
                self._middle_runs = self._old_runs = 0
            else:
                generation = 1
                self._middle_runs = 0
                self._old_runs += 1
        else:
            generation = 0
            self._middle_runs += 1
        gc.collect(generation)
        self.collections[generation] += 1
        return generation
