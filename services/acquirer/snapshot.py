"""The running session's state-bearing messages: the snapshot of the ZeroMQ guide's Clone pattern.

PUB/SUB has no memory: a service restarted mid-session (kill -9, watchdog,
OOM) comes back knowing only what it hears from then on — no baseline, no
stages, no decisions — and used to start the session over, publishing a 0 µV
baseline and `never_detected`. The acquirer owns the session, so it also keeps
what a (re)joining service needs to take the session up where it was, and
serves it on the control socket (`{"op": "state"}`):

- every `stage` marker and every `factors` message, in order;
- the latest `baseline` and `amr_state` of each channel (per publisher);
- the latest `amr_course` and `prediction` (per publisher);
- the `service_settings` of each publisher instance (a restarted service can
  tell whether the session ran with other settings before);
- every `decision` (the newest one of each chain is the active one).

Each as the frames it travelled in (so the reply is the original wire
message, like `retransmit`) and in the order the acquirer saw it. It is low
rate — tens of messages a session, never frames — and bounded. When the
acquirer itself missed one of them (a seq gap on the bus) or had to drop one
to stay bounded, the snapshot says so (`incomplete`), so that the service
asking reports its state as unknown rather than trusting a partial one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...proto.messages import Message

#: The types a snapshot holds.
STATE_TYPES = ("stage", "factors", "baseline", "amr_state", "amr_course", "prediction", "decision",
               "service_settings")
#: Kept one by one, in order (stage markers, factors: later values add to earlier ones; decisions: chains).
EVERY = ("stage", "factors", "decision")
#: Only the latest of each channel (per publisher) matters.
PER_CHANNEL = ("baseline", "amr_state")
#: Only the latest (per publisher) matters.
LATEST = ("amr_course", "prediction")
#: The latest per publisher instance.
PER_INSTANCE = ("service_settings",)
#: Most messages kept of each EVERY type; beyond it the oldest go and the snapshot is incomplete
#: (decisions drop superseded ones first, which a rebuild does not need).
MAX_EVERY = 256
#: Most channels per publisher kept for a PER_CHANNEL type.
MAX_CHANNELS = 256


@dataclass(frozen=True)
class Kept:
    order: int
    type: str
    publisher: str
    instance: str
    seq: int
    frames: tuple[bytes, bytes, bytes]

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


def _bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


class SessionSnapshot:
    """One session's state-bearing messages (pure: no sockets, no clock)."""

    def __init__(self, session_id: str, *, max_every: int = MAX_EVERY) -> None:
        self.session_id = session_id
        self.max_every = max_every
        self._kept: dict[tuple, Kept] = {}
        self._order = 0
        self._superseded: set[int] = set()
        self.incomplete: list[str] = []
        """Why the snapshot may lack a message (what a consumer must then treat as unknown)."""

    def add(self, msg: Message, frames: list) -> bool:
        """Keep `msg` (sent in `frames`) if it bears state of this session; True if kept."""
        t = msg.type
        if t not in STATE_TYPES or msg.session_id != self.session_id:
            return False
        if t in EVERY:
            key: tuple = (t, msg.publisher, msg.instance, msg.seq)
        elif t in PER_CHANNEL:
            key = (t, msg.publisher, msg.channel)  # type: ignore[attr-defined]
            if key not in self._kept and sum(1 for k in self._kept if k[:2] == key[:2]) >= MAX_CHANNELS:
                self._note(f"more than {MAX_CHANNELS} channels of {msg.publisher} {t}: the rest not kept")
                return False
        elif t in PER_INSTANCE:
            key = (t, msg.publisher, msg.instance)
        else:
            key = (t, msg.publisher)
        self._order += 1
        self._kept.pop(key, None)  # a newer one of a PER_CHANNEL/LATEST key moves to the end
        self._kept[key] = Kept(self._order, t, msg.publisher, msg.instance, msg.seq,
                               (_bytes(frames[0]), _bytes(frames[1]), _bytes(frames[2])))
        if t == "decision" and getattr(msg, "supersedes", None) is not None:
            self._superseded.add(msg.supersedes)  # type: ignore[attr-defined]
        if t in EVERY or t in PER_INSTANCE:
            self._bound(t, msg)
        return True

    def _bound(self, t: str, msg: Message) -> None:
        keys = [k for k in self._kept if k[0] == t]
        if len(keys) <= self.max_every:
            return
        victim = keys[0]
        if t == "decision":
            # A superseded decision is history; the active one of each chain and the highest id are state.
            for k in keys:
                if self._decision_id(k) in self._superseded:
                    victim = k
                    break
            else:
                self._note(f"more than {self.max_every} decisions in force: the oldest not kept")
        else:
            self._note(f"more than {self.max_every} {t} messages: the oldest not kept")
        del self._kept[victim]

    def _decision_id(self, key: tuple) -> int | None:
        try:
            return int(json.loads(self._kept[key].frames[1])["decision_id"])
        except (ValueError, KeyError, TypeError):
            return None

    def note_gap(self, publisher: str, type_: str, expected: int, got: int) -> None:
        """The acquirer missed seq expected..got-1 of `publisher`'s `type_` on the bus."""
        if type_ in STATE_TYPES:
            self._note(f"{publisher} {type_} seq {expected}..{got - 1} lost before the acquirer")

    def _note(self, text: str) -> None:
        if text not in self.incomplete and len(self.incomplete) < 16:
            self.incomplete.append(text)

    def messages(self) -> list[Kept]:
        """What a (re)joining service is given, in the order the acquirer saw it."""
        return sorted(self._kept.values(), key=lambda k: k.order)

    def __len__(self) -> int:
        return len(self._kept)
