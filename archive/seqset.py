"""A set of sequence numbers kept as sorted, disjoint, inclusive ranges.

A stream of millions of messages with a handful of holes is a handful of
ranges, so "which seqs of this stream are archived, which are missing" stays
cheap however long the session runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class SeqSet:
    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for a, b in ranges:
            self.add_range(a, b)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._lo, seq) - 1
        return i >= 0 and seq <= self._hi[i]

    def __len__(self) -> int:
        """How many seqs are in the set (not how many ranges)."""
        return sum(b - a + 1 for a, b in zip(self._lo, self._hi))

    def __bool__(self) -> bool:
        return bool(self._lo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqSet) and self.ranges() == other.ranges()

    def __repr__(self) -> str:
        return f"SeqSet({self.ranges()!r})"

    @property
    def min(self) -> int | None:
        return self._lo[0] if self._lo else None

    @property
    def max(self) -> int | None:
        return self._hi[-1] if self._hi else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi))

    def add(self, seq: int) -> bool:
        """Add one seq; False if it was already there."""
        if seq in self:
            return False
        self.add_range(seq, seq)
        return True

    def add_range(self, a: int, b: int) -> None:
        if a > b:
            raise ValueError(f"range start must be <= end; got {a}..{b}")
        # Every range touching or overlapping [a-1, b+1] merges with it.
        i = bisect.bisect_left(self._hi, a - 1)
        j = bisect.bisect_right(self._lo, b + 1)
        if i < j:
            a = min(a, self._lo[i])
            b = max(b, self._hi[j - 1])
        self._lo[i:j] = [a]
        self._hi[i:j] = [b]

    def holes(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """The ranges of [lo, hi] that are not in the set, in order."""
        if lo > hi:
            return
        at = lo
        i = max(0, bisect.bisect_right(self._lo, lo) - 1)
        while i < len(self._lo) and self._lo[i] <= hi:
            a, b = self._lo[i], self._hi[i]
            if b >= at:
                if a > at:
                    yield at, min(a - 1, hi)
                at = max(at, b + 1)
            i += 1
        if at <= hi:
            yield at, hi

    def count_in(self, lo: int, hi: int) -> int:
        """How many seqs of [lo, hi] are in the set."""
        return (hi - lo + 1) - sum(b - a + 1 for a, b in self.holes(lo, hi)) if lo <= hi else 0
