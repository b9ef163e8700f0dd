"""Range checks for settings models: a bad value fails naming the field, the
allowed range and the value given, so a typo in a flag is never guessed at."""

from __future__ import annotations

from pydantic import AfterValidator, ValidationInfo


def within(lo: float, hi: float, unit: str = "") -> AfterValidator:
    suffix = f" {unit}" if unit else ""

    def check(value, info: ValidationInfo):
        if not (lo <= value <= hi):
            raise ValueError(f"{info.field_name} must be between {lo:g} and {hi:g}{suffix}; got {value!r}")
        return value

    return AfterValidator(check)


def pair_within(lo: float, hi: float, unit: str) -> AfterValidator:
    def check(value, info: ValidationInfo):
        a, b = value
        if not (lo <= a < b <= hi):
            raise ValueError(
                f"{info.field_name} must be (start, end) with {lo:g} <= start < end <= {hi:g} {unit}; got {value!r}"
            )
        return value

    return AfterValidator(check)
