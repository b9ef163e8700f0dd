"""The recorder service's tunable numbers (the archive's own are in settings.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ...control import REQUEST_TIMEOUT_S
from ...proto.control import MAX_RETRANSMIT
from amrwatch.archive.settings import ArchiveSettings


from ...ranges import within as _within


class RecorderSettings(BaseModel):
    """When a session is closed, how lost messages are refetched, when the recorder calls itself stalled."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: After `session_end`, the session stays open this long for late analyzer and predictor events ...
    grace_s: Annotated[float, _within(0.0, 60.0, "s")] = 3.0
    #: ... or closes earlier once the analyzer's `amr_course` is in and the session was quiet this long.
    quiet_s: Annotated[float, _within(0.0, 60.0, "s")] = 1.0
    #: Refetching never holds a session open longer than this after its end: what is still
    #: missing then is recorded as a gap.
    max_grace_s: Annotated[float, _within(1.0, 600.0, "s")] = 30.0
    #: Messages asked for in one retransmit request (the acquirer answers at most 2000).
    retransmit_batch: Annotated[int, _within(1, MAX_RETRANSMIT, "messages")] = MAX_RETRANSMIT
    #: A retransmit or session request unanswered this long is sent again on a fresh socket ...
    request_timeout_s: Annotated[float, _within(0.1, 60.0, "s")] = REQUEST_TIMEOUT_S
    #: ... at most this many times for the same seqs; then they are recorded as a gap.
    request_attempts: Annotated[int, _within(1, 100, "attempts")] = 5
    #: `recorder_stalled` is raised when buffered records wait, or one commit takes, longer than this.
    stall_s: Annotated[float, _within(0.1, 60.0, "s")] = 2.0
    #: How often the acquirer is asked about a session whose `session_start` the recorder has not seen.
    session_query_s: Annotated[float, _within(0.1, 60.0, "s")] = 2.0
    #: Who the recorder is in the registry's audit trail.
    actor: str = Field(default="recorder", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    archive: ArchiveSettings = ArchiveSettings()
