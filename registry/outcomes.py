"""Follow-up outcomes as a clinician enters them: checked before anything is written.

Why a layer above `Registry.add_outcome`: the registry refuses what can never
be true (grade out of range, relief before surgery, 'cured' with spasm); this
module also knows what a person typing at a terminal means — the class can be
derived from the grade and the preoperative grade, a date in the future is a
typing error, an edit changes some fields and keeps the others — and turns
all of it into one error naming the field, the allowed values and the value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from amrwatch.registry.store import COMPLICATIONS, OUTCOME_CLASSES, TIMEPOINTS, OutcomeRow, Registry


@dataclass(frozen=True)
class FollowUpSettings:
    """Nominal day of each follow-up point after surgery (time axes and censoring)."""

    timepoint_days: dict[str, int] = field(default_factory=lambda: {"1w": 7, "3m": 91, "6m": 182, "1y": 365})

    def __post_init__(self) -> None:
        if list(self.timepoint_days) != list(TIMEPOINTS):
            raise ValueError(f"timepoint_days must give {list(TIMEPOINTS)} in that order; got {list(self.timepoint_days)}")
        days = list(self.timepoint_days.values())
        if any(not isinstance(d, int) or d < 0 for d in days) or days != sorted(set(days)):
            raise ValueError(f"timepoint_days must be increasing whole days ≥ 0; got {self.timepoint_days}")


class OutcomeInputError(ValueError):
    """An outcome that was not written; the text says which field, what is allowed and what was given."""


def derive_class(grade: int, preop_grade: int | None) -> str | None:
    """cured at grade 0; otherwise improved/unchanged/worse against the preoperative grade (None if unknown)."""
    if grade == 0:
        return "cured"
    if preop_grade is None:
        return None
    if grade < preop_grade:
        return "improved"
    return "unchanged" if grade == preop_grade else "worse"


def resolve_class(grade: int, given: str | None, preop_grade: int | None) -> tuple[str, str | None]:
    """(class to store, a note for the user or None). The grade-0 ⇔ cured rule is enforced."""
    if isinstance(grade, bool) or not isinstance(grade, int) or not 0 <= grade <= 4:
        raise OutcomeInputError(f"--cohen-grade must be a whole number from 0 (no spasm) to 4; got {grade!r}")
    if given is not None and given not in OUTCOME_CLASSES:
        raise OutcomeInputError(f"--class must be one of {', '.join(OUTCOME_CLASSES)}; got {given!r}")
    derived = derive_class(grade, preop_grade)
    if given is None:
        if derived is None:
            raise OutcomeInputError(
                f"--class is needed: Cohen grade {grade} is not 0, and the preoperative grade is not in the registry, "
                "so improved/unchanged/worse cannot be derived; give --class improved|unchanged|worse")
        return derived, None
    if (grade == 0) != (given == "cured"):
        raise OutcomeInputError(
            f"--class {given} contradicts --cohen-grade {grade}: grade 0 means no spasm, which is 'cured', "
            "and 'cured' means grade 0; correct one of them")
    if derived is not None and derived != given:
        return given, (f"note: class {given!r} kept as given, although grade {grade} against the preoperative "
                       f"grade {preop_grade} would read {derived!r}")
    return given, None


def parse_date(text: Any, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise OutcomeInputError(f"{flag} must be a date YYYY-MM-DD; got {text!r}") from None


def check_relief_date(date: dt.date, surgery: dt.date, today: dt.date) -> str:
    """The spasm-free date as stored; it lies between the operation and today."""
    if date < surgery:
        raise OutcomeInputError(f"--spasm-free-date {date} is before the operation ({surgery}); "
                                "the spasm cannot stop before surgery — check the date")
    if date > today:
        raise OutcomeInputError(f"--spasm-free-date {date} is in the future (today is {today}); check the date")
    return date.isoformat()


def parse_complications(names: list[str] | None) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for raw in names or []:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name not in COMPLICATIONS:
                raise OutcomeInputError(f"--complication must be one of {', '.join(COMPLICATIONS)}; got {name!r}")
            out[name] = True
    return dict(sorted(out.items()))


def _preop_grade(registry: Registry, session_id: str) -> int | None:
    row = registry.summary(session_id)
    return None if row is None else row.summary.get("factors", {}).get("cohen_grade")


def _surgery_date(registry: Registry, session_id: str) -> dt.date:
    """The operation's date; a replay is not an operation, so its outcomes belong to the original."""
    session = registry.get(session_id)
    if session.replay_of is not None:
        raise OutcomeInputError(f"session {session_id} is a replay of {session.replay_of}; record the outcome on "
                                f"the original operation ({session.replay_of})")
    return dt.date.fromisoformat(session.started_at[:10])


def add_outcome(registry: Registry, session_id: str, *, actor: str, timepoint: str, cohen_grade: int,
                outcome_class: str | None = None, spasm_free_date: str | None = None,
                complications: list[str] | None = None, today: dt.date | None = None) -> tuple[OutcomeRow, str | None]:
    """Check everything, then write one audited outcome row; (row, note for the user)."""
    if timepoint not in TIMEPOINTS:
        raise OutcomeInputError(f"--timepoint must be one of {'|'.join(TIMEPOINTS)}; got {timepoint!r}")
    surgery = _surgery_date(registry, session_id)  # UnknownSession first: nothing else matters then
    cls, note = resolve_class(cohen_grade, outcome_class, _preop_grade(registry, session_id))
    relief = None
    if spasm_free_date is not None:
        relief = check_relief_date(parse_date(spasm_free_date, "--spasm-free-date"), surgery,
                                   today or dt.datetime.now(dt.UTC).date())
    comp = parse_complications(complications)
    row = registry.add_outcome(session_id, actor=actor, timepoint=timepoint, cohen_grade=cohen_grade,
                               outcome_class=cls, relief_date=relief, complications=comp)
    return row, note


KEEP = object()


def edit_outcome(registry: Registry, session_id: str, *, actor: str, timepoint: str, cohen_grade: Any = KEEP,
                 outcome_class: Any = KEEP, spasm_free_date: Any = KEEP, complications: Any = KEEP,
                 today: dt.date | None = None) -> tuple[OutcomeRow, str | None]:
    """A correction: a new row superseding the current one at `timepoint`; fields not given are kept.

    `spasm_free_date=None` / `complications=[]` clear them; a new grade without a class re-derives the class.
    """
    if timepoint not in TIMEPOINTS:
        raise OutcomeInputError(f"--timepoint must be one of {'|'.join(TIMEPOINTS)}; got {timepoint!r}")
    surgery = _surgery_date(registry, session_id)
    current = [o for o in registry.outcomes(session_id) if o.timepoint == timepoint]
    if not current:
        raise OutcomeInputError(f"session {session_id} has no {timepoint} outcome to edit; add it with "
                                f"`amrwatch outcome add {session_id} --timepoint {timepoint} --cohen-grade N`")
    old = current[-1]
    if all(v is KEEP for v in (cohen_grade, outcome_class, spasm_free_date, complications)):
        raise OutcomeInputError("nothing to change: give at least one of --cohen-grade, --class, --spasm-free-date, "
                                "--no-spasm-free-date, --complication, --no-complications")
    grade = old.cohen_grade if cohen_grade is KEEP else cohen_grade
    if outcome_class is KEEP:
        given = old.outcome_class if cohen_grade is KEEP else None
    else:
        given = outcome_class
    cls, note = resolve_class(grade, given, _preop_grade(registry, session_id))
    if spasm_free_date is KEEP:
        relief = old.relief_date
    elif spasm_free_date is None:
        relief = None
    else:
        relief = check_relief_date(parse_date(spasm_free_date, "--spasm-free-date"), surgery,
                                   today or dt.datetime.now(dt.UTC).date())
    comp = old.complications if complications is KEEP else parse_complications(complications)
    if (grade, cls, relief, comp) == (old.cohen_grade, old.outcome_class, old.relief_date, old.complications):
        raise OutcomeInputError(f"the {timepoint} outcome of session {session_id} already says this; nothing written")
    row = registry.add_outcome(session_id, actor=actor, timepoint=timepoint, cohen_grade=grade, outcome_class=cls,
                               relief_date=relief, complications=comp, supersedes=old.id)
    return row, note


def outcome_dict(row: OutcomeRow) -> dict[str, Any]:
    """An outcome as `outcome list --json` prints it."""
    return {"id": row.id, "session_id": row.session_id, "timepoint": row.timepoint, "cohen_grade": row.cohen_grade,
            "class": row.outcome_class, "spasm_free_date": row.relief_date,
            "complications": sorted(row.complications), "recorded_at": row.recorded_at, "actor": row.actor,
            "supersedes": row.supersedes}


__all__ = ["FollowUpSettings", "KEEP", "OutcomeInputError", "add_outcome", "edit_outcome", "derive_class",
           "resolve_class", "parse_complications", "check_relief_date", "outcome_dict"]
