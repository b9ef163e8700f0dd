"""Record bodies: bus messages as opaque frames, gaps, and the writer's own markers.

A bus message is stored exactly as it travelled (its multipart frames),
never re-encoded, so a replay publishes the same bytes and `verify` can
compare what the analysis produces now with what it produced then.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amrwatch.archive.segment import CHAIN_SIZE, SEGMENT_BODY

_LEN = struct.Struct("<I")

_PUBLISHER = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_INSTANCE = re.compile(r"^[0-9a-f]{8,32}$")
MAX_REASON = 256
MAX_SEQ = 2**62


class BodyError(ValueError):
    """A record body that does not follow FORMAT.md."""


def encode_message(frames: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """Each frame as a 4-byte little-endian length followed by its bytes."""
    if not frames:
        raise BodyError("frames: a bus message has at least one frame; got 0")
    parts: list[bytes | bytearray | memoryview] = []
    for i, f in enumerate(frames):
        n = len(memoryview(f).cast("B"))
        if n > 0xFFFFFFFF:
            raise BodyError(f"frames[{i}]: at most 4294967295 bytes per frame; got {n}")
        parts.append(_LEN.pack(n))
        parts.append(f)
    return b"".join(parts)


def decode_message(body: bytes | memoryview) -> list[bytes]:
    view = memoryview(body)
    frames: list[bytes] = []
    pos, total = 0, len(view)
    while pos < total:
        if total - pos < _LEN.size:
            raise BodyError(f"message body: {total - pos} stray bytes at offset {pos}; a frame length needs 4")
        (n,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if n > total - pos:
            raise BodyError(f"message body: frame {len(frames)} claims {n} bytes at offset {pos}; "
                            f"{total - pos} remain")
        frames.append(bytes(view[pos:pos + n]))
        pos += n
    if not frames:
        raise BodyError("message body is empty; a bus message has at least one frame")
    return frames


def canonical_json(obj: Any) -> bytes:
    """The one JSON spelling of `obj`: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def decode_json(body: bytes | memoryview, kind: str) -> dict:
    try:
        obj = json.loads(bytes(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BodyError(f"{kind} body is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise BodyError(f"{kind} body must be a JSON object; got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class Gap:
    """Messages of one publisher instance that never arrived and could not be refetched.

    Seqs count per publisher instance *and* message type, so `type` names the
    stream; a gap body without it (written before the field existed) says
    only which publisher instance lost them.
    """

    publisher: str
    instance: str
    from_seq: int
    to_seq: int
    reason: str
    type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.publisher, str) or not _PUBLISHER.match(self.publisher):
            raise BodyError(f"publisher must match {_PUBLISHER.pattern}; got {self.publisher!r}")
        if not isinstance(self.instance, str) or not _INSTANCE.match(self.instance):
            raise BodyError(f"instance must be 8-32 lowercase hex digits; got {self.instance!r}")
        if self.type is not None and (not isinstance(self.type, str) or not _PUBLISHER.match(self.type)):
            raise BodyError(f"type must match {_PUBLISHER.pattern} (a message type) or be absent; got {self.type!r}")
        for name in ("from_seq", "to_seq"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= MAX_SEQ):
                raise BodyError(f"{name} must be an integer between 0 and {MAX_SEQ}; got {v!r}")
        if self.from_seq > self.to_seq:
            raise BodyError(f"from_seq must be <= to_seq; got from_seq={self.from_seq}, to_seq={self.to_seq}")
        if not isinstance(self.reason, str) or not (1 <= len(self.reason) <= MAX_REASON):
            raise BodyError(f"reason must be 1 to {MAX_REASON} characters; got {self.reason!r}")

    @property
    def count(self) -> int:
        return self.to_seq - self.from_seq + 1

    def encode(self) -> bytes:
        obj = {"publisher": self.publisher, "instance": self.instance,
               "from_seq": self.from_seq, "to_seq": self.to_seq, "reason": self.reason}
        if self.type is not None:
            obj["type"] = self.type
        return canonical_json(obj)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Gap:
        obj = decode_json(body, "gap")
        expected = {"publisher", "instance", "from_seq", "to_seq", "reason"}
        if set(obj) not in (expected, expected | {"type"}):
            raise BodyError(f"gap body must have exactly the fields {sorted(expected)} and optionally 'type'; "
                            f"got {sorted(obj)}")
        return cls(**obj)


def encode_segment(index: int, prev_chain: bytes) -> bytes:
    return SEGMENT_BODY.pack(index, prev_chain)


def decode_segment(body: bytes | memoryview) -> tuple[int, bytes]:
    if len(body) != SEGMENT_BODY.size:
        raise BodyError(f"segment body is {len(body)} bytes; {SEGMENT_BODY.size} expected "
                        f"(4-byte index + {CHAIN_SIZE}-byte chain value)")
    idx, prev = SEGMENT_BODY.unpack(body)
    return idx, prev


@dataclass(frozen=True)
class CheckpointBody:
    """What the log itself says at a checkpoint: the chain value and count of the records before it."""

    record_count: int
    chain_head: str
    at: str
    closed: bool

    def encode(self) -> bytes:
        return canonical_json({"record_count": self.record_count, "chain_head": self.chain_head,
                               "at": self.at, "closed": self.closed})

    @classmethod
    def decode(cls, body: bytes | memoryview) -> CheckpointBody:
        obj = decode_json(body, "checkpoint")
        expected = {"record_count", "chain_head", "at", "closed"}
        if set(obj) != expected:
            raise BodyError(f"checkpoint body must have exactly the fields {sorted(expected)}; got {sorted(obj)}")
        if not isinstance(obj["record_count"], int) or isinstance(obj["record_count"], bool) or obj["record_count"] < 0:
            raise BodyError(f"checkpoint record_count must be a non-negative integer; got {obj['record_count']!r}")
        if not isinstance(obj["chain_head"], str) or not re.fullmatch(r"[0-9a-f]{64}", obj["chain_head"]):
            raise BodyError(f"checkpoint chain_head must be 64 lowercase hex digits; got {obj['chain_head']!r}")
        if not isinstance(obj["closed"], bool) or not isinstance(obj["at"], str):
            raise BodyError("checkpoint closed must be a boolean and at a string")
        return cls(**obj)


def check_message(body: bytes | bytearray | memoryview) -> int:
    """The number of frames in a message body, without copying them; BodyError if malformed."""
    view = memoryview(body)
    pos, total, n = 0, len(view), 0
    if total >= 12:  # the usual three frames [topic, header, payload], without a loop
        (a,) = _LEN.unpack_from(view, 0)
        b_at = 4 + a
        if b_at + 4 <= total:
            (b,) = _LEN.unpack_from(view, b_at)
            c_at = b_at + 4 + b
            if c_at + 4 <= total and c_at + 4 + _LEN.unpack_from(view, c_at)[0] == total:
                return 3
    while pos < total:
        if total - pos < _LEN.size:
            raise BodyError(f"message body: {total - pos} stray bytes at offset {pos}; a frame length needs 4")
        (size,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size + size
        if pos > total:
            raise BodyError(f"message body: frame {n} claims {size} bytes; only {total - pos + size} remain")
        n += 1
    if n == 0:
        raise BodyError("message body is empty; a bus message has at least one frame")
    return n
