"""The wire codec: a message is three ZeroMQ frames [topic, header, payload].

- topic: the message type in ASCII (SUB sockets filter on it by prefix);
- header: the message as UTF-8 JSON, exactly the fields of its schema;
- payload: empty, except for `emg_frame`: the samples as raw little-endian
  float32, channel-major. Samples never go through JSON, and nothing is ever
  pickled — decoding only parses JSON and reinterprets bytes as floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from .hotpath import fast_types
from .messages import BY_TYPE, MAX_FRAME_BYTES, MESSAGE_TYPES, EmgFrame, Message

MAX_TOPIC_BYTES = 64
MAX_HEADER_BYTES = 64 * 1024
#: Largest message part a socket accepts (ZMQ_MAXMSGSIZE); bigger ones drop the peer.
MAX_PART_BYTES = MAX_FRAME_BYTES
#: The types with a compiled gate (proto/hotpath.py): every type whose model the gate can mirror exactly — the
#: frames, and the analyzer's per-sweep `amr_measurement` (16 a sweep with a 16-channel montage), among others.
#: The rest (nested models, maps, lists, defaults, model validators) are pydantic's alone.
FAST = fast_types(MESSAGE_TYPES)


class DecodeError(ValueError):
    """A message that is not what proto/README.md says. `reason` is a short
    machine label (for metrics), the text says what was wrong."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


def _as_bytes(part: Any) -> memoryview:
    if hasattr(part, "buffer"):  # zmq.Frame received with copy=False
        return part.buffer
    return memoryview(part)


def encode(msg: Message) -> list[bytes]:
    header = msg.model_dump_json().encode()
    if isinstance(msg, EmgFrame):
        payload = msg.samples.tobytes()  # already '<f4' and C-contiguous
    else:
        payload = b""
    return [msg.TOPIC.encode("ascii"), header, payload]


def describe(err: ValidationError, model: type | None = None) -> str:
    """One line per problem: the field, the rule with its allowed range, the value."""
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(message)"
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        rng = _allowed_range(model, e["loc"]) if model is not None else None
        rule = e["msg"]
        if rng:
            rule = f"{rule} (allowed {rng})"
        if e["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field (not in the schema); got {shown}")
        else:
            lines.append(f"{loc}: {rule}; got {shown}")
    return "; ".join(lines)


def _allowed_range(model: Any, loc: Sequence[Any]) -> str | None:
    """Find ge/le bounds declared on the field at `loc`, for the message."""
    fields = getattr(model, "model_fields", None)
    info = None
    for part in loc:
        if fields is None or part not in fields:
            return None
        info = fields[part]
        ann = info.annotation
        sub = _model_in(ann)
        fields = getattr(sub, "model_fields", None) if sub else None
    if info is None:
        return None
    lo = hi = None
    for meta in _constraints(info):
        for attr in ("ge", "gt"):
            if getattr(meta, attr, None) is not None:
                lo = getattr(meta, attr)
        for attr in ("le", "lt"):
            if getattr(meta, attr, None) is not None:
                hi = getattr(meta, attr)
    if lo is None and hi is None:
        return None
    return f"{'-∞' if lo is None else lo} to {'∞' if hi is None else hi}"


def _model_in(ann: Any) -> Any:
    import typing

    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return ann
    for arg in typing.get_args(ann):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _constraints(info: Any) -> list[Any]:
    import typing

    out = list(info.metadata)
    stack = [info.annotation]
    while stack:
        ann = stack.pop()
        if typing.get_origin(ann) is typing.Annotated:
            for meta in ann.__metadata__:
                out.extend(getattr(meta, "metadata", None) or [meta])
            stack.append(typing.get_args(ann)[0])
        else:
            stack.extend(typing.get_args(ann))
    return out


def _head(frames: Sequence[Any]) -> tuple[str, type[Message], memoryview]:
    """The checks before the header: frame count, topic, header size."""
    if len(frames) != 3:
        raise DecodeError("frame_count", f"expected 3 frames [topic, header, payload]; got {len(frames)}")
    topic_b = bytes(_as_bytes(frames[0]))
    if len(topic_b) > MAX_TOPIC_BYTES:
        raise DecodeError("oversize", f"topic is {len(topic_b)} bytes; at most {MAX_TOPIC_BYTES} allowed")
    try:
        topic = topic_b.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("bad_topic", f"topic is not ASCII; got {topic_b[:32]!r}") from None
    cls = BY_TYPE.get(topic)
    if cls is None:
        raise DecodeError("unknown_topic", f"unknown topic {topic!r}; known: {sorted(BY_TYPE)}")
    header = _as_bytes(frames[1])
    if header.nbytes > MAX_HEADER_BYTES:
        raise DecodeError(
            "oversize", f"{topic} header is {header.nbytes} bytes; at most {MAX_HEADER_BYTES} allowed"
        )
    return topic, cls, header


def _samples(topic: str, n_channels: int, n_samples: int, payload: memoryview) -> np.ndarray:
    expected = n_channels * n_samples * 4
    if payload.nbytes != expected:
        raise DecodeError(
            "payload_size",
            f"{topic} payload is {payload.nbytes} bytes; n_channels={n_channels} × "
            f"n_samples={n_samples} × 4 = {expected} expected",
        )
    return np.frombuffer(payload, dtype="<f4").reshape(n_channels, n_samples)


def decode_reference(frames: Sequence[Any]) -> Message:
    """Validate and decode with pydantic alone: the reference `decode` is held to (tests), and the path
    that words every refusal."""
    topic, cls, header = _head(frames)
    try:
        msg = cls.model_validate_json(bytes(header))
    except ValidationError as err:
        raise DecodeError("invalid", f"{topic}: {describe(err, cls)}") from None
    if msg.type != topic:  # pragma: no cover - the Literal type field already enforces it
        raise DecodeError("invalid", f"topic {topic!r} carries a {msg.type!r} header")
    payload = _as_bytes(frames[2])
    if isinstance(msg, EmgFrame):
        msg._samples = _samples(topic, msg.n_channels, msg.n_samples, payload)
    elif payload.nbytes:
        raise DecodeError("payload_size", f"{topic} carries no payload; got {payload.nbytes} bytes")
    return msg


def decode(frames: Sequence[Any]) -> Message:
    """Validate and decode one multipart message, or raise DecodeError.

    The types in `FAST` take the compiled gate (proto/hotpath.py, a few µs);
    a header the gate is not sure of, a payload where none belongs, and every
    other type go to pydantic (`decode_reference`), which words the refusal."""
    topic, _cls, header = _head(frames)
    fast = FAST.get(topic)
    if fast is not None:
        values = fast.check(header)
        if values is not None:
            if topic == EmgFrame.TOPIC:
                samples = _samples(topic, values["n_channels"], values["n_samples"], _as_bytes(frames[2]))
                return fast.build(values, {"_samples": samples})
            if not _as_bytes(frames[2]).nbytes:
                return fast.build(values)
    return decode_reference(frames)
