"""An institution's registry table (`amrwatch export cohort`) read for training.

Why so strict: a model fitted on a half-read or silently coerced file looks
exactly like a good one. Every bad cell is reported with its line number,
column and reason, all of them in one error, and nothing is returned (so
nothing is fitted) while any remains.

Layout: a header line, then one row per session. The reader needs
`REQUIRED_COLUMNS` in any order; `COHORT_COLUMNS` is the full layout the
exporter writes (extra columns, e.g. follow-up outcomes, may follow and are
ignored here). Rows whose `course` is `never_detected` carry no label (an
AMR that never appeared cannot persist) and are skipped, with the reason
kept in `CohortTable.skipped`. Rows outside the decision model's population
— `course` `disappeared_before_decompression`, or `eligible` = no — are
skipped the same way and counted: the model is consulted only when the AMR is
still present as decompression starts, so its label is defined there.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amrwatch.proto.factors import BY_NAME
from amrwatch.services.predictor.features import FEATURE_NAMES

LABEL = "amr_persisted"
REQUIRED_COLUMNS: tuple[str, ...] = ("session_id", *FEATURE_NAMES, LABEL)
#: The exporter's column order; the last three are context for the report.
COHORT_COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "course",
    "final_pct_of_baseline",
    "predicted_probability",
)
#: `course` values with no persistence label.
UNLABELLED_COURSES = frozenset({"never_detected"})
#: `course` values outside the decision model's population (the AMR was gone before decompression).
INELIGIBLE_COURSES = frozenset({"disappeared_before_decompression"})
ELIGIBLE_COLUMN = "eligible"

_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
MAX_LISTED = 200


@dataclass(frozen=True)
class RowProblem:
    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


class CohortCsvError(ValueError):
    """The file cannot be used; `problems` lists every bad cell or line."""

    def __init__(self, path: str, problems: list[RowProblem]) -> None:
        self.path = path
        self.problems = problems
        shown = [f"  {p}" for p in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
        super().__init__(
            f"{path}: {len(problems)} problem(s); nothing was fitted. "
            "Fix them (or re-export with `amrwatch export cohort`) and run again:\n" + "\n".join(shown)
        )


@dataclass
class CohortTable:
    session_ids: list[str]
    X: np.ndarray
    """(n, 7) float, columns in FEATURE_NAMES order."""
    y: np.ndarray
    """(n,) int 0/1: the AMR persisted."""
    path: str
    sha256: str
    lines: list[int] = field(default_factory=list)
    skipped: list[RowProblem] = field(default_factory=list)
    never_detected: int = 0
    ineligible: int = 0
    """Labelled rows outside the model's population (AMR gone before decompression), skipped."""


def _cell(name: str, text: str) -> tuple[float | None, str | None]:
    """(value as float, None) or (None, reason)."""
    t = text.strip()
    if t == "":
        return None, "missing value"
    if name == LABEL:
        if t in ("0", "1"):
            return float(t), None
        return None, f"must be 0 (AMR disappeared) or 1 (AMR persisted); got {t!r}"
    feat = BY_NAME[name]
    rng = f"[{feat.min:g}, {feat.max:g}] ({feat.unit})"
    if feat.kind == "bool":
        low = t.lower()
        if low in _TRUE:
            return 1.0, None
        if low in _FALSE:
            return 0.0, None
        return None, f"must be yes/no, true/false or 1/0; got {t!r}"
    try:
        x = float(t)
    except ValueError:
        return None, f"must be a number in {rng}; got {t!r}"
    if not math.isfinite(x):
        return None, f"must be a number in {rng}; got {t!r}"
    if feat.kind == "int" and x != int(x):
        return None, f"must be a whole number in {rng}; got {t!r}"
    if not feat.min <= x <= feat.max:
        return None, f"must be in {rng}; got {t}"
    return x, None


def parse_cohort(text: str, path: str = "<text>") -> CohortTable:
    """Parse the CSV text; raise CohortCsvError listing every problem."""
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[RowProblem] = []
    try:
        header = next(reader)
    except StopIteration:
        raise CohortCsvError(path, [RowProblem(1, "", "the file is empty; expected a header line")]) from None
    except csv.Error as err:
        raise CohortCsvError(path, [RowProblem(1, "", f"unreadable header: {err}")]) from None
    names = [h.strip() for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen and n in REQUIRED_COLUMNS:
            problems.append(RowProblem(1, n, f"column appears twice (positions {seen[n] + 1} and {i + 1})"))
        seen.setdefault(n, i)
    for n in REQUIRED_COLUMNS:
        if n not in seen:
            problems.append(RowProblem(1, n, f"required column is missing; the header must contain {', '.join(REQUIRED_COLUMNS)}"))
    if problems:
        raise CohortCsvError(path, problems)
    course_col = seen.get("course")
    elig_col = seen.get(ELIGIBLE_COLUMN)
    never = inelig = 0

    ids: list[str] = []
    rows: list[list[float]] = []
    labels: list[int] = []
    lines: list[int] = []
    skipped: list[RowProblem] = []
    first_line_of: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append(RowProblem(reader.line_num, "", f"malformed CSV: {err}"))
            break
        line = reader.line_num
        if not record or all(not c.strip() for c in record):
            continue
        if len(record) != len(names):
            problems.append(RowProblem(start, "", f"has {len(record)} fields; the header has {len(names)}"))
            continue
        sid = record[seen["session_id"]].strip()
        if course_col is not None and record[course_col].strip() in UNLABELLED_COURSES:
            skipped.append(RowProblem(start, "course", f"session {sid or '?'}: {record[course_col].strip()} (no persistence label)"))
            never += 1
            continue
        if course_col is not None and record[course_col].strip() in INELIGIBLE_COURSES:
            skipped.append(RowProblem(start, "course", f"session {sid or '?'}: {record[course_col].strip()} "
                                      "(outside the model's population: no AMR when decompression started)"))
            inelig += 1
            continue
        if elig_col is not None:
            e = record[elig_col].strip().lower()
            if e in _FALSE:
                skipped.append(RowProblem(start, ELIGIBLE_COLUMN, f"session {sid or '?'}: not eligible "
                                          "(no AMR when decompression started)"))
                inelig += 1
                continue
            if e not in _TRUE:
                problems.append(RowProblem(start, ELIGIBLE_COLUMN, f"must be yes/no, true/false or 1/0; got {e!r}"))
                continue
        row_ok = True
        if not sid:
            problems.append(RowProblem(start, "session_id", "missing value"))
            row_ok = False
        elif sid in first_line_of:
            problems.append(RowProblem(start, "session_id", f"duplicate session {sid!r} (first on line {first_line_of[sid]})"))
            row_ok = False
        else:
            first_line_of[sid] = start
        values: list[float] = []
        for name in (*FEATURE_NAMES, LABEL):
            x, reason = _cell(name, record[seen[name]])
            if reason is not None:
                problems.append(RowProblem(start, name, reason))
                row_ok = False
            else:
                values.append(x)
        if row_ok:
            ids.append(sid)
            rows.append(values[:-1])
            labels.append(int(values[-1]))
            lines.append(start)
    if problems:
        raise CohortCsvError(path, problems)
    if not rows:
        raise CohortCsvError(path, [RowProblem(line, "", "no labelled rows after the header")])
    return CohortTable(
        session_ids=ids,
        X=np.array(rows, dtype=float),
        y=np.array(labels, dtype=int),
        path=path,
        sha256=sha,
        lines=lines,
        skipped=skipped,
        never_detected=never,
        ineligible=inelig,
    )


def read_cohort(path: str | Path) -> CohortTable:
    """Read and parse an exported cohort file (UTF-8, optional BOM)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise CohortCsvError(str(p), [RowProblem(0, "", f"cannot read the file: {err.strerror or err}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad_line = raw[: err.start].count(b"\n") + 1
        raise CohortCsvError(str(p), [RowProblem(bad_line, "", f"not UTF-8 text (byte {err.start}); save the file as UTF-8")]) from None
    table = parse_cohort(text, str(p))
    table.sha256 = hashlib.sha256(raw).hexdigest()
    return table
