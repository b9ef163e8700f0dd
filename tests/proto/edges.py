"""Edge values for every field of a message type, derived from its pydantic model.

For each field: the bounds the model declares and the nearest values either side of them, every choice of a
Literal and near misses, strings at and just past their length limit (ASCII, accented, astral), and the
corpus's general hostile values (None, wrong types). Shared by the gate's decode-side tests
(tests/proto/test_hotpath_types.py) and its publish-side tests (tests/bus/test_publish_gated.py)."""

from __future__ import annotations

import math
import typing
from typing import Any

from amrwatch.proto.codec import _constraints
from hypothesis import strategies as st


def _walk(annotation: Any) -> list[Any]:
    out = [annotation]
    for a in typing.get_args(annotation):
        out.extend(_walk(a))
    return out


def field_edges(cls: type, name: str) -> list[Any]:
    """Values just inside and outside the rules of field `name` of `cls` (JSON-writable)."""
    info = cls.model_fields[name]
    out: list[Any] = []
    for t in _walk(info.annotation):
        if typing.get_origin(t) is typing.Literal:
            for choice in typing.get_args(t):
                out.append(choice)
                if isinstance(choice, str):
                    out += [choice.upper(), choice + " ", choice[:-1], " " + choice]
                else:
                    out += [choice + 1, float(choice), str(choice)]
    for m in _constraints(info):
        for attr in ("ge", "gt", "le", "lt"):
            b = getattr(m, attr, None)
            if b is None:
                continue
            if isinstance(b, int) and not isinstance(b, bool):
                out += [b - 1, b, b + 1, float(b)]
            else:
                out += [b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf), -b, int(b)]
        n = getattr(m, "max_length", None)
        if n is not None:
            out += ["x" * n, "x" * (n + 1), "é" * n, "é" * (n + 1), "\U0001d11e" * n, "\U0001d11e" * (n + 1)]
        pattern = getattr(m, "pattern", None)
        if pattern is not None:
            out += ["a" * 64, "a" * 65, "0123abcd", "0123abc", "0123ABCD", "a b", "a\n", "é", "a/b", "a:b.c-d_e"]
    return out


def mangle(draw, body: bytes) -> bytes:
    """A header's bytes as they are, or with whitespace spread, one byte flipped, cut short or inserted
    (`draw` from a hypothesis composite strategy)."""
    how = draw(st.sampled_from(["as is", "as is", "as is", "spaces", "flip", "cut", "insert"]))
    if how == "spaces":
        body = body.replace(b", ", b" ,\n\t ").replace(b": ", b" :  ")
    elif how in ("flip", "cut", "insert") and body:
        i = draw(st.integers(min_value=0, max_value=len(body) - 1))
        b = draw(st.integers(min_value=0, max_value=255))
        body = (body[:i] + bytes([b]) + body[i + 1:] if how == "flip" else
                body[:i] if how == "cut" else body[:i] + bytes([b]) + body[i:])
    return body
