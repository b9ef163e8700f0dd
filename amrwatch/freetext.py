"""Free text that must not carry a patient identifier.

Alarm-ack notes and operator names are archived with the session and shown
on every monitor; an outcome's actor is written to the registry's audit
trail. None of them is a place for a hospital record number, which is
linked to a patient only through the pseudonym map kept outside the data
directory. A run of six or more digits looks like one (hospital numbers
are typically 6-10 digits) and is refused with the reason, never stored.
"""

from __future__ import annotations

import re

#: Digits in a row from which free text is taken to hold a hospital record number.
MIN_IDENTIFIER_DIGITS = 6
_DIGIT_RUN = re.compile(rf"\d{{{MIN_IDENTIFIER_DIGITS},}}")


def identifier_problem(field: str, value: str | None) -> str | None:
    """A one-line refusal if `value` holds a digit run that looks like a hospital number, else None."""
    if not value:
        return None
    m = _DIGIT_RUN.search(value)
    if m is None:
        return None
    return (f"{field}: holds a run of {len(m.group())} digits, which looks like a hospital record number; free text "
            f"here is archived and shown on every monitor, so runs of {MIN_IDENTIFIER_DIGITS} or more digits are "
            "refused — leave identifiers out (the session is linked to the patient through the pseudonym map)")
