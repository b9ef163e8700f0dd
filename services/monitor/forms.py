"""Operator inputs from the page, checked before anything is published.

The page sends what the operator typed, as text; this module turns it into a
proto `FactorValues` (or a stage name) or refuses it with one line per
field: which factor, the allowed range with its unit, and what was typed.
The form's labels, units, steps and ranges come from proto's one factor
table (proto/factors.py), so the page and the contract cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from ...freetext import identifier_problem
from ...proto.codec import describe
from ...proto.factors import FACTORS
from ...proto.messages import STAGE_ORDER, FactorValues, validate_body


class FormError(ValueError):
    """Refused input; `problems` has one line per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class FactorField:
    name: str
    label: str
    kind: str  # "float" | "int" | "bool"
    unit: str
    min: float | None
    max: float | None
    step: float | None
    help: str


def factor_fields() -> list[FactorField]:
    """The seven factors in the order the form shows them (proto's order)."""
    return [FactorField(f.name, f.title, f.kind, f.unit_shown, None if f.kind == "bool" else f.min,
                        None if f.kind == "bool" else f.max, f.step, f.hint) for f in FACTORS]


def form_spec() -> list[dict]:
    return [asdict(f) for f in factor_fields()]


def _range_text(f: FactorField) -> str:
    unit = f" {f.unit}" if f.unit else ""
    fmt = (lambda v: f"{v:g}") if f.kind == "float" else (lambda v: f"{int(v)}")
    return f"between {fmt(f.min)} and {fmt(f.max)}{unit}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    s = str(value).strip()
    return s or None


def parse_factors(form: Mapping[str, Any]) -> FactorValues:
    """What the operator typed → FactorValues; empty fields are 'not given'."""
    fields = {f.name: f for f in factor_fields()}
    problems: list[str] = []
    unknown = sorted(set(form) - set(fields))
    if unknown:
        problems.append(f"unknown field(s) {unknown}; the factors are {list(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        raw = _text(form.get(name))
        if raw is None:
            continue
        who = f"{f.label} ({name})"
        if f.kind == "bool":
            v = raw.lower()
            if v in ("yes", "y", "true", "1"):
                values[name] = True
            elif v in ("no", "n", "false", "0"):
                values[name] = False
            else:
                problems.append(f"{who}: must be yes or no; got {raw!r}")
            continue
        try:
            number = float(raw.replace(",", "."))
        except ValueError:
            problems.append(f"{who}: must be a number {_range_text(f)}; got {raw!r}")
            continue
        if not math.isfinite(number):
            problems.append(f"{who}: must be a finite number {_range_text(f)}; got {raw!r}")
            continue
        if f.kind == "int":
            if number != int(number):
                problems.append(f"{who}: must be a whole number {_range_text(f)}; got {raw!r}")
                continue
            number = int(number)
        if not (f.min <= number <= f.max):
            problems.append(f"{who}: must be {_range_text(f)}; got {raw!r}")
            continue
        values[name] = number
    if problems:
        raise FormError(problems)
    if not values:
        raise FormError(["enter at least one of the seven factors; empty fields are left unchanged"])
    try:
        return FactorValues(**values)
    except ValidationError as err:  # the contract's own check, should the ranges above ever be wider
        raise FormError([describe(err, FactorValues)]) from None


def parse_stage(value: Any) -> str:
    if not isinstance(value, str) or value not in STAGE_ORDER:
        raise FormError([f"stage: must be one of {', '.join(STAGE_ORDER)}; got {value!r}"])
    return value


def parse_ack(body: Mapping[str, Any]) -> dict:
    """The body of an `alarm_ack`: alarm_key, operator (optional), note (optional)."""
    from ...proto.messages import AlarmAck

    problems = []
    key = body.get("alarm_key")
    if not isinstance(key, str) or not key or len(key) > 256:
        problems.append(f"alarm_key: must be the key of a raised alarm (1-256 characters); got {key!r}")
    operator = _text(body.get("operator"))
    note = _text(body.get("note"))
    for field, value in (("operator", operator), ("note", note)):
        problem = identifier_problem(field, value)
        if problem:
            problems.append(problem)
    out = {"alarm_key": key, "operator": operator, "note": note}
    if not problems:
        try:
            validate_body("alarm_ack", out)
        except ValidationError as err:
            problems.append(describe(err, AlarmAck))
    if problems:
        raise FormError(problems)
    return out


def parse_note(body: Mapping[str, Any]) -> dict:
    """A note from the room to its remote readers (published as `reader_note`, direction `to_reader`)."""
    text = _text(body.get("text"))
    problems = []
    if not text or len(text) > 256:
        problems.append(f"text: the note, 1-256 characters; got {str(body.get('text'))[:40]!r}")
    problem = identifier_problem("text", text)
    if problem:
        problems.append(problem)
    if problems:
        raise FormError(problems)
    return {"text": text}
