"""The hot path: a compiled check for the messages that stream (`emg_frame`).

proto/messages.py stays the one source of the schema. From each pydantic
model this module derives, once at import, a msgspec decoder with the same
closed field set, types, bounds and patterns (msgspec parses and checks a
frame's header in C, about a microsecond, where pydantic takes ten), plus the
model's own Python validators, called as they are. The bytes are the same;
only the check is faster.

It is a *gate*, never a second opinion: a header the compiled check accepts
is built into the model without running pydantic again; anything it does not
accept, for whatever reason, goes to pydantic (`codec.decode`), whose refusal
(reason, field, allowed range, value) is the one given. So the two paths
refuse the same messages for the same reasons by construction, provided the
gate never accepts what pydantic refuses — which tests/proto/test_hotpath.py
checks property-based over the hostile-input corpus, together with the
converse (what pydantic accepts, the fast path returns equal).

Where the gate is stricter than pydantic (a timestamp written in another
ISO 8601 form, say) the message simply takes the slow path: correct, slower.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import math
import re
import typing
from typing import Any, Literal

import msgspec
import numpy as np
from annotated_types import Ge, Gt, Le, Lt
from pydantic import AwareDatetime
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic.types import StringConstraints

from .messages import Message

_fromiso = _dt.datetime.fromisoformat


class Unsupported(TypeError):
    """The model uses something the gate cannot check exactly like pydantic: it gets no fast path."""


def _anchored(pattern: str) -> str:
    # pydantic's regex engine reads `$` as the end of the text; Python's re (msgspec's) also lets it match
    # before a final newline. `\Z` is the end of the text in Python's re.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    raise Unsupported(f"pattern {pattern!r} is not anchored with $")


def _meta(metadata: list[Any]) -> tuple[dict[str, Any], bool]:
    """msgspec.Meta arguments for pydantic's constraints; and whether the value must be finite."""
    kw: dict[str, Any] = {}
    finite = False
    for m in metadata:
        if isinstance(m, Ge):
            kw["ge"] = m.ge
        elif isinstance(m, Le):
            kw["le"] = m.le
        elif isinstance(m, Gt):
            kw["gt"] = m.gt
        elif isinstance(m, Lt):
            kw["lt"] = m.lt
        elif isinstance(m, StringConstraints):
            for attr in ("strip_whitespace", "to_upper", "to_lower", "ascii_only"):
                if getattr(m, attr):
                    raise Unsupported(f"StringConstraints({attr}=...)")
            if m.pattern is not None:
                kw["pattern"] = _anchored(m.pattern if isinstance(m.pattern, str) else m.pattern.pattern)
            if m.min_length is not None:
                kw["min_length"] = m.min_length
            if m.max_length is not None:
                kw["max_length"] = m.max_length
        elif type(m).__name__ == "AllowInfNan":
            finite = not m.allow_inf_nan
        else:
            raise Unsupported(f"constraint {m!r}")
    return kw, finite


class _Field:
    __slots__ = ("exact", "finite", "name", "optional", "pattern", "timestamp")

    def __init__(self, name: str, finite: bool, timestamp: bool, optional: bool, pattern: str | None,
                 exact: type | None = None) -> None:
        self.name, self.finite, self.timestamp, self.optional = name, finite, timestamp, optional
        self.pattern = pattern
        #: From Python values (the publisher's side), the one type the value may be given as: msgspec keeps a
        #: str or datetime subclass as given where pydantic stores the plain value, and reads a datetime from
        #: a str where pydantic (strict) refuses it, so anything else is left to pydantic.
        self.exact = exact


#: Values of pattern-checked fields already matched, per pattern: the envelope's session id, publisher and
#: instance repeat on every frame, and a set lookup costs a tenth of a regex match. Bounded: when full it
#: is emptied and refilled.
_MEMO_MAX = 4096


class _PatternMemo:
    __slots__ = ("match", "seen")

    def __init__(self, pattern: str) -> None:
        self.match = re.compile(pattern).match
        self.seen: set[str] = set()

    def ok(self, value: str) -> bool:
        if value in self.seen:
            return True
        if self.match(value) is None:
            return False
        if len(self.seen) >= _MEMO_MAX:
            self.seen.clear()
        self.seen.add(value)
        return True


def _timestamp_ok(v: str) -> bool:
    """The one form our publishers write (RFC 3339 in UTC with 'Z', 0 or 6 decimals), checked by position;
    `datetime.fromisoformat` then checks the digits and ranges. Any other form goes to pydantic."""
    n = len(v)
    return ((n == 20 or (n == 27 and v[19] == ".")) and v[-1] == "Z" and v[4] == "-" and v[7] == "-"
            and v[10] == "T" and v[13] == ":" and v[16] == ":" and v.isascii())


#: FieldInfo attributes that change what pydantic accepts or how it stores it: set on a FieldInfo inside a union
#: (`Annotated[float, Field(...)] | None`), the gate cannot be sure it reads them as pydantic does, so it refuses.
_FIELDINFO_UNSET = (("default", PydanticUndefined), ("default_factory", None), ("alias", None),
                    ("validation_alias", None), ("serialization_alias", None), ("discriminator", None),
                    ("exclude", None), ("validate_default", None), ("deprecated", None))


def _unwrap(name: str, annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[base, Field(...), constraint...]` as found inside an optional union (the type aliases of
    proto/messages.py: `NonNegFloat | None`, `SessionId | None`): pydantic applies the FieldInfo's constraints
    (its `.metadata`) and any bare constraint objects to `base`. Those become the gate's constraints (`_meta`
    then refuses any it does not know); a FieldInfo that sets anything else is refused."""
    base, *extras = typing.get_args(annotation)
    metadata: list[Any] = []
    for m in extras:
        if isinstance(m, FieldInfo):
            for attr, unset in _FIELDINFO_UNSET:
                if getattr(m, attr) is not unset:
                    raise Unsupported(f"{name}: Field({attr}=...) inside a union")
            metadata.extend(m.metadata)
        else:
            metadata.append(m)
    if typing.get_origin(base) is not None:
        raise Unsupported(f"{name}: Annotated[{base!r}, ...] inside a union")
    return base, metadata


def _unicode_ok(v: str) -> bool:
    """pydantic refuses a Python str holding a lone surrogate (it cannot be UTF-8); msgspec takes it. (From
    JSON neither can produce one: both refuse the escape.)"""
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _translate(name: str, annotation: Any, metadata: list[Any], finite_floats: bool,
               objects: bool = False) -> tuple[Any, _Field]:
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise Unsupported(f"{name}: union {annotation!r}")
        optional, annotation = True, rest[0]
        if typing.get_origin(annotation) is typing.Annotated:
            if metadata:
                raise Unsupported(f"{name}: constraints both on the field and inside its union")
            annotation, metadata = _unwrap(name, annotation)
    kw, finite = _meta(metadata)
    finite = finite or finite_floats
    timestamp = False
    pattern = None
    exact: type | None = None
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        if kw or len({type(a) for a in choices}) != 1 or type(choices[0]) not in (str, int):
            raise Unsupported(f"{name}: {annotation!r}")
        t: Any = annotation
        exact = type(choices[0])
    elif annotation is AwareDatetime:
        if kw:
            raise Unsupported(f"{name}: constrained datetime")
        # On the wire a string (parsed by position then fromisoformat); from Python an aware datetime.
        t, timestamp = (typing.Annotated[_dt.datetime, msgspec.Meta(tz=True)] if objects else str), True
        exact = _dt.datetime
    elif annotation in (int, float, str, bool):
        if annotation is float and not finite:
            raise Unsupported(f"{name}: float that allows inf/nan")
        if annotation is bool and kw:
            raise Unsupported(f"{name}: constrained bool")
        pattern = kw.pop("pattern", None)
        t = typing.Annotated[annotation, msgspec.Meta(**kw)] if kw else annotation
        if annotation is str:
            exact = str
    else:
        raise Unsupported(f"{name}: type {annotation!r}")
    if optional:
        t = t | None
    return t, _Field(name, finite and annotation is float, timestamp, optional, pattern, exact)


class FastType:
    """The compiled check of one message type, derived from its pydantic model."""

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        config = cls.model_config
        if not config.get("strict") or config.get("extra") != "forbid":
            raise Unsupported(f"{cls.__name__} is not strict and closed")
        finite_floats = config.get("allow_inf_nan") is False
        spec, objects = [], []
        self.fields: list[_Field] = []
        for name, info in cls.model_fields.items():
            if not info.is_required():
                raise Unsupported(f"{cls.__name__}.{name} has a default")
            t, f = _translate(name, info.annotation, list(info.metadata), finite_floats)
            spec.append((name, t))
            objects.append((name, _translate(name, info.annotation, list(info.metadata), finite_floats, True)[0]))
            self.fields.append(f)
        self.names = tuple(cls.model_fields)
        self.finite = tuple(f.name for f in self.fields if f.finite)
        self.timestamps = tuple(f.name for f in self.fields if f.timestamp)
        self.patterns = tuple((f.name, _PatternMemo(f.pattern)) for f in self.fields if f.pattern)
        self.exact = tuple((f.name, f.exact) for f in self.fields if f.exact is not None)
        decorators = cls.__pydantic_decorators__
        if decorators.validators or decorators.root_validators or decorators.model_validators:
            raise Unsupported(f"{cls.__name__} has model validators")
        self.validators: list[tuple[str, Any]] = []
        for dec in decorators.field_validators.values():
            if dec.info.mode != "after" or len(inspect.signature(dec.func).parameters) != 1:
                raise Unsupported(f"{cls.__name__}.{dec.cls_var_name}: not a one-argument 'after' validator")
            for fname in dec.info.fields:
                self.validators.append((fname, dec.func))
        self.struct = msgspec.defstruct(f"Fast{cls.__name__}", spec, forbid_unknown_fields=True)
        self._decoder = msgspec.json.Decoder(self.struct)
        self.objects = msgspec.defstruct(f"Fast{cls.__name__}Out", objects, forbid_unknown_fields=True)
        self._encoder = msgspec.json.Encoder()
        self.private = {k: v.get_default() for k, v in (cls.__private_attributes__ or {}).items()}
        self.fields_set = frozenset(self.names)

    def check(self, header: Any) -> dict[str, Any] | None:
        """The header's values if the gate is sure pydantic accepts it; None to let pydantic decide."""
        try:
            obj = self._decoder.decode(header)
        except msgspec.DecodeError:
            return None
        values = msgspec.structs.asdict(obj)
        for name, memo in self.patterns:
            v = values[name]
            if v is not None and not memo.ok(v):
                return None
        for name in self.finite:
            v = values[name]
            if v is not None and not math.isfinite(v):
                return None
        try:
            for name in self.timestamps:
                v = values[name]
                if v is not None:
                    if not _timestamp_ok(v):
                        return None
                    values[name] = _fromiso(v)
            for name, func in self.validators:
                values[name] = func(values[name])
        except ValueError:
            return None
        return values

    def encode(self, values: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
        """The header for a message about to be sent, checked by the same rules from Python values (the
        publisher's side), with the values as checked; None to let pydantic build it (and word the refusal)."""
        try:
            obj = msgspec.convert(values, self.objects)
        except (msgspec.ValidationError, UnicodeEncodeError):  # a lone surrogate where a Literal or key is read
            return None
        checked = msgspec.structs.asdict(obj)
        for name, exact in self.exact:
            v = values[name]  # as given: msgspec.convert reads a datetime from a str, pydantic (strict) refuses it
            if v is not None and (type(v) is not exact or (isinstance(v, str) and not _unicode_ok(v))):
                return None
        for name, memo in self.patterns:
            v = checked[name]
            if v is not None and not memo.ok(v):
                return None
        for name in self.finite:
            v = checked[name]
            if v is not None and not math.isfinite(v):
                return None
        try:
            for name, func in self.validators:
                checked[name] = func(checked[name])
        except ValueError:
            return None
        return self._encoder.encode(obj), checked

    def build(self, values: dict[str, Any], private: dict[str, Any] | None = None) -> Message:
        """The model instance for values that passed `check`, without validating again (pydantic's own
        `model_construct` does the same, at ten times the cost for its generality)."""
        msg = self.cls.__new__(self.cls)
        object.__setattr__(msg, "__dict__", values)
        object.__setattr__(msg, "__pydantic_fields_set__", set(self.fields_set))
        object.__setattr__(msg, "__pydantic_extra__", None)
        # pydantic leaves __pydantic_private__ None on a model without private attributes, and compares it in
        # `==`: an empty dict there would make the gate's message unequal to pydantic's.
        p: dict[str, Any] | None = None
        if self.private or private:
            p = dict(self.private)
            if private:
                p.update(private)
        object.__setattr__(msg, "__pydantic_private__", p)
        return msg


def _compile(cls: type[Message]) -> FastType | None:
    try:
        return FastType(cls)
    except Unsupported:
        return None


def fast_types(classes: typing.Iterable[type[Message]]) -> dict[str, FastType]:
    """Compiled checks for those of `classes` the gate can mirror exactly (by topic)."""
    out = {}
    for cls in classes:
        ft = _compile(cls)
        if ft is not None:
            out[cls.TOPIC] = ft
    return out


def samples_view(payload: memoryview, n_channels: int, n_samples: int) -> np.ndarray:
    return np.frombuffer(payload, dtype="<f4").reshape(n_channels, n_samples)
