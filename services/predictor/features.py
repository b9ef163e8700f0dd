"""The seven factors of the persistence model as the model sees them: order, card entries, checks.

The factors themselves — names, kinds, units, ranges, words — are proto's one
table (proto/factors.py); this module adds what only the model needs: the
input vector's order (the table's), the increment each odds ratio is reported
for, the model card's feature entries, and the checks the trainer, the CSV
reader and the runtime share, so a factor cannot mean one thing in training
and another at the bedside. An institution that needs other ranges changes
them in proto/factors.py and retrains; the card records the ranges the model
was fitted with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...proto.factors import FACTORS
from ...proto.factors import Kind as Kind

Value = float | int | bool


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    unit: str
    low: float
    high: float
    label: str
    per: float = 1.0
    """Increment the odds ratio is reported for (per 100 µV reads better than per µV)."""
    per_label: str = ""
    levels: str = ""

    def spec(self) -> dict:
        """The feature as the model card records it."""
        out = {
            "name": self.name,
            "type": self.kind,
            "unit": self.unit,
            "min": self.low,
            "max": self.high,
            "label": self.label,
            "odds_ratio_per": self.per,
            "odds_ratio_label": self.per_label,
        }
        if self.levels:
            out["levels"] = self.levels
        return out


#: The increment each odds ratio is reported for, and how the report words it.
_ODDS_RATIO: dict[str, tuple[float, str]] = {
    "duration_years": (1.0, "per year"),
    "cohen_grade": (1.0, "per grade"),
    "carbamazepine": (1.0, "yes vs no"),
    "vessels": (1.0, "per vessel"),
    "amr_amplitude_uv": (100.0, "per 100 µV"),
    "retraction_mm": (1.0, "per mm"),
    "displacement": (1.0, "per grade"),
}

#: The model's input vector, in this order (proto's FACTORS order). Never reorder: the ONNX graph and
#: every card depend on it (the card records it and the runtime compares).
FEATURES: tuple[Feature, ...] = tuple(
    Feature(f.name, f.kind, f.unit, f.min, f.max, f.label, per=_ODDS_RATIO[f.name][0],
            per_label=_ODDS_RATIO[f.name][1], levels=f.levels)
    for f in FACTORS
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


class FactorError(ValueError):
    """One or more factors refused; `problems` lists one message per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_value(name: str, value: object) -> Value:
    """Return the value in its canonical type, or raise FactorError naming field, range and value."""
    feat = BY_NAME.get(name)
    if feat is None:
        raise FactorError([f"unknown factor {name!r}; the model takes {', '.join(FEATURE_NAMES)}"])
    rng = f"[{_fmt(feat.low)}, {_fmt(feat.high)}] ({feat.unit})"
    if feat.kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise FactorError([f"field {name} must be true or false ({feat.unit}); got {value!r}"])
    if value is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FactorError([f"field {name} must be a number in {rng}; got {value!r}"])
    x = float(value)
    if not math.isfinite(x):
        raise FactorError([f"field {name} must be in {rng}; got {value!r}"])
    if feat.kind == "int" and x != int(x):
        raise FactorError([f"field {name} must be a whole number in {rng}; got {value!r}"])
    if not feat.low <= x <= feat.high:
        raise FactorError([f"field {name} must be in {rng}; got {_fmt(x)}"])
    return int(x) if feat.kind == "int" else x


def validate(factors: Mapping[str, object], *, complete: bool = True) -> dict[str, Value]:
    """Check every given factor; with `complete`, all seven must be present.

    All problems are collected, so one error message lists every bad field.
    """
    problems: list[str] = []
    out: dict[str, Value] = {}
    for name, value in factors.items():
        if value is None and name in BY_NAME:
            continue  # not known yet: reported below when all are required
        try:
            out[name] = check_value(name, value)
        except FactorError as err:
            problems.extend(err.problems)
    if complete:
        for name in FEATURE_NAMES:
            if factors.get(name) is None:
                feat = BY_NAME[name]
                problems.append(f"field {name} is missing ({feat.label}, {feat.unit})")
    if problems:
        raise FactorError(problems)
    return out


def to_vector(factors: Mapping[str, object]) -> np.ndarray:
    """The validated factors as the model's float32 input row, shape (1, 7)."""
    v = validate(factors, complete=True)
    return np.array([[float(v[n]) for n in FEATURE_NAMES]], dtype=np.float32)


def row_dict(row: Sequence[float]) -> dict[str, Value]:
    """Inverse of `to_vector` for one row: named, in canonical types."""
    if len(row) != len(FEATURES):
        raise ValueError(f"a factor row has {len(FEATURES)} values; got {len(row)}")
    out: dict[str, Value] = {}
    for feat, x in zip(FEATURES, row):
        if feat.kind == "bool":
            out[feat.name] = bool(x)
        elif feat.kind == "int":
            out[feat.name] = int(round(float(x)))
        else:
            out[feat.name] = float(x)
    return out


class FactorCollector:
    """A session's factors as they arrive (operator, scenario, analyzer baseline).

    Later values replace earlier ones; a refused value leaves the previous one
    in place and raises, so the caller can report it and nothing is guessed.
    """

    def __init__(self) -> None:
        self._values: dict[str, Value] = {}

    def update(self, values: Mapping[str, object]) -> bool:
        """Apply the non-null values; True when any factor changed. All-or-nothing."""
        checked = validate(values, complete=False)
        changed = any(self._values.get(k, object()) != v for k, v in checked.items())
        self._values.update(checked)
        return changed

    def discard(self, name: str) -> None:
        """Forget a factor (e.g. an amplitude found not to be one)."""
        self._values.pop(name, None)

    @property
    def values(self) -> dict[str, Value]:
        return dict(self._values)

    def missing(self) -> list[str]:
        return [n for n in FEATURE_NAMES if n not in self._values]

    def complete(self) -> dict[str, Value] | None:
        """All seven factors, or None while any is missing."""
        return None if self.missing() else {n: self._values[n] for n in FEATURE_NAMES}
