"""Asking the acquirer for the running session's state (`{"op": "state"}`), the client half of the Clone pattern.

A service restarted mid-session, or one that noticed it missed a stage marker
or a factors message, sends this over its DEALER to the acquirer's control
socket. Replies to `state` come back tagged (the first envelope frame is
`b"state"`), so they are told apart from `session` replies on the same socket
whatever order they arrive in. The reply's messages are decoded here; a
refused, malformed or incomplete snapshot is an `unknown` with the reason, so
that the caller can say its state is unknown instead of trusting it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .proto.codec import DecodeError, decode
from .proto.control import ControlReply
from .proto.messages import Message

TAG = b"state"


def request(session_id: str | None) -> list[bytes]:
    """The DEALER frames that ask for `session_id`'s state."""
    body = {"op": "state"} if session_id is None else {"op": "state", "session_id": session_id}
    return [TAG, b"", json.dumps(body).encode()]


def is_state_reply(parts: list[bytes]) -> bool:
    return len(parts) >= 3 and parts[0] == TAG and parts[1] == b""


@dataclass
class StateReply:
    session_id: str | None
    messages: list[Message] = field(default_factory=list)
    unknown: str | None = None
    """Why the state cannot be had (refused, malformed, incomplete); None when it can."""

    def of(self, *types: str) -> list[Message]:
        return [m for m in self.messages if m.type in types]

    @staticmethod
    def key(msg: Message) -> tuple[str, str, str, int]:
        """What identifies a message on the bus (to skip one heard both live and in the snapshot)."""
        return (msg.publisher, msg.instance, msg.type, msg.seq)


def parse(parts: list[bytes]) -> StateReply:
    """A tagged `state` reply (`is_state_reply(parts)`) as messages, or as unknown with the reason."""
    try:
        reply = ControlReply.model_validate_json(parts[2])
    except ValueError as err:
        return StateReply(None, unknown=f"the acquirer's reply to 'state' is not a ControlReply ({err})")
    if not reply.ok:
        return StateReply(reply.session_id, unknown=f"the acquirer refused 'state': {reply.error}")
    triples = parts[3:]
    if len(triples) != 3 * reply.n_messages:
        return StateReply(reply.session_id, unknown=f"the 'state' reply announces {reply.n_messages} messages but "
                                                    f"carries {len(triples)} frames")
    out: list[Message] = []
    for i in range(0, len(triples), 3):
        try:
            out.append(decode(triples[i:i + 3]))
        except DecodeError as err:
            return StateReply(reply.session_id, unknown=f"the 'state' reply carries an invalid message: {err}")
    incomplete = reply.detail.get("incomplete")
    return StateReply(reply.session_id, out,
                      unknown=f"the acquirer's snapshot is incomplete: {incomplete}" if incomplete else None)


class SentCounts:
    """Notices a stage marker or factors message lost on the bus within one heartbeat.

    A seq gap shows a loss only when the next message of the type arrives —
    for stage markers that can be the next stage, minutes later. So the
    acquirer's heartbeat says how many of each it has sent (`info.stage_sent`,
    `info.factors_sent`: its publisher's next seq); a subscriber that has seen
    fewer asks for the session's state at once."""

    def __init__(self, types: tuple[str, ...] = ("stage", "factors"), publisher: str = "acquirer") -> None:
        self.types = types
        self.publisher = publisher
        self._last: dict[tuple[str, str], int] = {}

    def seen(self, msg: Message) -> None:
        if msg.type in self.types and msg.publisher == self.publisher:
            key = (msg.instance, msg.type)
            self._last[key] = max(self._last.get(key, -1), msg.seq)

    def behind(self, heartbeat: Message) -> list[str]:
        """The types of which the heartbeat's sender has sent more than this subscriber saw (each reported once)."""
        if heartbeat.type != "heartbeat" or getattr(heartbeat, "service", None) != self.publisher:
            return []
        out = []
        for t in self.types:
            sent = heartbeat.info.get(f"{t}_sent")  # type: ignore[attr-defined]
            if not isinstance(sent, int) or isinstance(sent, bool):
                continue
            key = (heartbeat.instance, t)
            if key in self._last and self._last[key] < sent - 1:
                out.append(t)
            if key not in self._last or self._last[key] < sent - 1:
                # First word from this instance (what it sent before we listened is not ours to miss), or
                # reported now: either way caught up to here.
                self._last[key] = sent - 1
        return out
