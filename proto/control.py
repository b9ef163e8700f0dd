"""Requests and replies on the acquirer's control socket (REQ → ROUTER).

The acquirer owns the session, so operator inputs (stage markers, patient
factors) and the recorder's retransmit requests go to it over an acknowledged
request/reply channel instead of fire-and-forget PUB/SUB.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from .messages import Count, FactorValues, Name, ScalarMap, SessionId, ShortText, Stage, Strict, Text

#: Most messages one retransmit reply may carry (the recorder asks again for the rest).
MAX_RETRANSMIT = 2000
#: Most messages one `state` reply may carry (the acquirer's snapshot is bounded below this).
MAX_STATE = 1000


class MarkRequest(Strict):
    op: Literal["mark"]
    stage: Stage
    operator: Name | None = None


class FactorsRequest(Strict):
    op: Literal["factors"]
    factors: FactorValues
    operator: Name | None = None


class SessionRequest(Strict):
    """Ask for the running session's `session_start` (late joiners, restarts)."""

    op: Literal["session"]


class RetransmitRequest(Strict):
    """Ask for messages `from_seq..to_seq` (inclusive) of one type from the
    acquirer's retransmit buffer; the reply carries the original wire frames."""

    op: Literal["retransmit"]
    session_id: SessionId
    instance: Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]
    type: Name
    from_seq: Count
    to_seq: Count


class StateRequest(Strict):
    """Ask for the running session's state-bearing messages (the Clone pattern's snapshot): every
    stage marker and factors message, the latest baseline, amr_state (per channel), amr_course,
    prediction and service_settings, and every decision, as first sent and in the order the
    acquirer received them. A service restarted mid-session (or one that missed a stage or
    factors message) rebuilds its state from them instead of starting from scratch."""

    op: Literal["state"]
    session_id: SessionId | None = Field(
        default=None, description="The session asked about; refused if it is not the running one."
    )


class AckRequest(Strict):
    """A remote reader acknowledges an alarm of the room. Published by the acquirer as `alarm_ack` with
    `operator` = the reader's CURVE key name (the authenticated peer, never a typed name). Needs CURVE."""

    op: Literal["ack"]
    alarm_key: ShortText
    note: ShortText | None = None


class NoteRequest(Strict):
    """A remote reader writes to the room (`kind` 'note'), or logs its presence ('watching' when it starts
    following the room, 'left' when it stops). Published by the acquirer as `reader_note`, attributed to the
    reader's CURVE key name. Needs CURVE."""

    op: Literal["note"]
    kind: Literal["note", "watching", "left"] = "note"
    text: ShortText | None = None


class StreamsRequest(Strict):
    """Which seq streams the acquirer can retransmit from: its own, and the other publishers' events it keeps.
    The reply's one extra frame is a JSON list of {publisher, instance, type, last_seq, oldest_seq}
    (`oldest_seq` null when none is held any more). A remote reader (the hub) compares it with what it holds
    to find what it never saw: a stream whose only messages went by while its link was down."""

    op: Literal["streams"]


ControlRequest = Annotated[
    MarkRequest | FactorsRequest | SessionRequest | RetransmitRequest | StateRequest | AckRequest | NoteRequest | StreamsRequest,
    Field(discriminator="op"),
]
CONTROL_REQUEST = TypeAdapter(ControlRequest)


class ControlReply(Strict):
    """First frame of every reply. For `session`, `retransmit` and `state` the
    messages follow as [topic, header, payload] triples."""

    ok: bool
    error: Text | None = None
    session_id: SessionId | None = None
    seq: Count | None = None
    n_messages: Count = 0
    detail: ScalarMap = {}


#: What the cart's archive read-out serves (`archive_read`): the events a remote reader (the hub) follows —
#: never `emg_frame` (WAN-sized; the hub does not follow frames), heartbeats (not archived) or display sweeps.
ARCHIVE_READ_TYPES = ("session_start", "session_end", "stimulus", "stage", "factors", "baseline", "amr_state",
                      "amr_course", "prediction", "decision", "alarm", "alarm_ack", "reader_note",
                      "service_settings")
#: Most messages one `archive_read` reply carries (the reader asks again from `resume_from_seq`).
MAX_ARCHIVE_READ = 2000


class ArchiveReadRequest(Strict):
    """Ask the cart's archive read-out (the recorder, its own endpoint) for messages `from_seq..to_seq`
    (inclusive) of one (instance, type) stream of an archived session — the live one included, as far as it
    is durably committed. For what has aged out of the acquirer's retransmit buffer. The reply carries the
    original wire frames, exactly as archived."""

    op: Literal["archive_read"]
    session_id: SessionId
    instance: Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]
    type: Literal[ARCHIVE_READ_TYPES]  # type: ignore[valid-type]
    from_seq: Count
    to_seq: Count


ARCHIVE_READ_REQUEST = TypeAdapter(ArchiveReadRequest)


#: Most bytes of messages one retransmit reply may carry (at least one message is always carried); a cut
#: reply says so in `detail` (`truncated_by`, `resume_from_seq`).
MAX_REPLY_BYTES = 1024 * 1024


def describe_archive_read(err) -> str:
    """`codec.describe` for an `archive_read` request: the field, the allowed range or values, the value."""
    from .codec import describe

    return describe(err, ArchiveReadRequest)


def describe_request(err) -> str:
    """`codec.describe` for a control request: the field's path without the union's tag (not
    `factors.factors.cohen_grade`) and the allowed range with both bounds, from the request's own model."""
    from pydantic import ValidationError

    from .codec import describe

    by_op = {"mark": MarkRequest, "factors": FactorsRequest, "session": SessionRequest,
             "retransmit": RetransmitRequest, "state": StateRequest, "ack": AckRequest, "note": NoteRequest,
             "streams": StreamsRequest}
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        model = by_op.get(loc[0]) if loc and isinstance(loc[0], str) else None
        if model is not None:
            loc = loc[1:]
        one = ValidationError.from_exception_data(err.title, [{**e, "loc": loc}])  # type: ignore[typeddict-item]
        lines.append(describe(one, model))
    return "; ".join(lines)
