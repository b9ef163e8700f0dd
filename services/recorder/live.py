"""A session while it is being recorded: its writer and what the end of it waits for.

A session does not close at `session_end`: the analyzer's last sweeps, the
session's `amr_course` and the predictor's prognosis come after it, and
refetched messages may still be on their way. It closes once the course is
in and the bus has been quiet for a moment, or after a grace period — and
never later than `max_grace_s` after its end, when whatever is still
missing is written down as a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from amrwatch.archive.writer import ArchiveWriter
from .recorder_settings import RecorderSettings


@dataclass
class LiveSession:
    session_id: str
    writer: ArchiveWriter
    opened_at: float
    resumed: bool = False
    start: dict | None = None
    """The session's session_start header (None until it is known)."""
    acquirer_instance: str | None = None
    ended_at: float | None = None
    """Monotonic time the session's end was seen (session_end, or its acquirer gone)."""
    end_reason: str = "session_end"
    course_seen: bool = False
    last_message_at: float = 0.0
    model_known: bool = False
    records: int = 0
    gap_messages: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    summary_inputs: list = field(default_factory=list)
    """The few messages the registry's session summary is made of (session_start, factors, baseline, course,
    prediction)."""

    def append(self, frames: Sequence, type_: str, now: float) -> int:
        no = self.writer.append_message(frames)
        self.records += 1
        self.counts[type_] = self.counts.get(type_, 0) + 1
        self.last_message_at = now
        return no

    def end(self, now: float, reason: str = "session_end") -> None:
        if self.ended_at is None:
            self.ended_at = now
            self.end_reason = reason

    def settled(self, now: float, s: RecorderSettings) -> bool:
        """Has the end of the session had its grace (the late events are in)?"""
        if self.ended_at is None:
            return False
        since_end = now - self.ended_at
        if since_end >= s.grace_s:
            return True
        return self.course_seen and now - self.last_message_at >= s.quiet_s

    def overdue(self, now: float, s: RecorderSettings) -> bool:
        """Past the longest a session waits for refetched messages after its end."""
        return self.ended_at is not None and now - self.ended_at >= s.max_grace_s
