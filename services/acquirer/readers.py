"""Which remote readers watch the running session, and whether the cart still hears them (socket-free).

The presence log (issue #19) says which reader watched which room from when to when. A reader says
`watching` and `left` itself, but a reader cut off by the network cannot say anything: without the cart's
own word its interval would stay open across the outage, and the record would claim a supervision that did
not happen. So the cart watches the link from its side: a watching reader sends a control request at least
every `PROBE_EVERY_S` (the hub's `streams` probe, proto/README.md "Remote readers"); a watching reader not
heard for `lost_after_s` is declared lost (`reader_note` kind `link_lost`, its interval ending at the last
time it was heard), and heard again it is restored (`link_restored`, a new interval from then). The cart's
clock decides both, so the record does not depend on the reader's network or its clock.

Why a threshold of three probes by default: one probe lost to a 2 % loss WAN, or a request retried after the
hub's 5 s timeout, must not split the record; three in a row missing is an outage a supervisor would want
written down.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: How often a watching reader is expected to send a request (the hub's `streams` probe, services/hub).
PROBE_EVERY_S = 10.0
#: The acquirer's `--reader-lost-s` default and bounds: below two probe periods a healthy reader would flap.
DEFAULT_LOST_AFTER_S = 30.0
MIN_LOST_AFTER_S = 2 * PROBE_EVERY_S
MAX_LOST_AFTER_S = 600.0


def check_lost_after(value: float) -> float:
    if not MIN_LOST_AFTER_S <= value <= MAX_LOST_AFTER_S:
        raise ValueError(f"--reader-lost-s must be {MIN_LOST_AFTER_S:g} to {MAX_LOST_AFTER_S:g} seconds "
                         f"(at least two of the readers' {PROBE_EVERY_S:g} s probes); got {value!r}")
    return value


@dataclass
class _Reader:
    heard: float  # monotonic
    heard_utc: dt.datetime
    lost: bool = False


class ReaderWatch:
    """The watching readers of one session, by their CURVE key name."""

    def __init__(self, lost_after_s: float = DEFAULT_LOST_AFTER_S) -> None:
        self.lost_after_s = check_lost_after(lost_after_s)
        self._readers: dict[str, _Reader] = {}

    def reset(self) -> None:
        """A new session: readers announce themselves again (the hub does on every session_start)."""
        self._readers.clear()

    def watching(self, reader: str, now: float, now_utc: dt.datetime) -> None:
        self._readers[reader] = _Reader(now, now_utc)

    def left(self, reader: str) -> None:
        self._readers.pop(reader, None)

    def heard(self, reader: str | None, now: float, now_utc: dt.datetime) -> bool:
        """Any request from `reader`. True when it had been declared lost: it is restored now."""
        r = self._readers.get(reader) if reader else None
        if r is None:
            return False
        was_lost = r.lost
        r.heard, r.heard_utc, r.lost = now, now_utc, False
        return was_lost

    def newly_lost(self, now: float) -> list[tuple[str, dt.datetime]]:
        """Readers silent for longer than `lost_after_s` and not yet declared lost, with when last heard."""
        out = []
        for name, r in self._readers.items():
            if not r.lost and now - r.heard > self.lost_after_s:
                r.lost = True
                out.append((name, r.heard_utc))
        return out

    @property
    def watching_now(self) -> list[str]:
        return sorted(n for n, r in self._readers.items() if not r.lost)
