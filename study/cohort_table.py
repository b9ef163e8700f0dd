"""The registry as one table: a row per patient, the factors, the AMR course,
the prediction made in the operating room, and the follow-up.

Why one builder for the CSV and the report: `amrwatch export cohort` writes
what `amrwatch train --csv` reads, and `amrwatch report` analyses the same
rows, so a model retrained on the export and the report's figures describe
the same patients.

Who is a patient here: closed sessions with a classified AMR course (a
session still recording has none; a corrupt one is listed as excluded),
never a replay (it repeats an operation already counted), and one operation
per patient token — a re-operation of a patient already in the table is
excluded and counted. A postoperative recording linked to an operation
(`amrwatch outcome link-recording`) is not a patient of its own either: it
is that operation's `followup_amr_<timepoint>` column.

Per channel and direction (issue #17): the final percent of baseline and the
baseline of each recording site — a stimulation direction and the muscle the
montage says the channel records, `final_pct_ZYG_mentalis`,
`final_pct_ZYG_orbicularis_oris`, `final_pct_MAR_orbicularis_oculi` and the
matching `baseline_uv_*` — and of each direction, `final_pct_ZYG`,
`final_pct_MAR`: the largest over the direction's channels (the one that
kept most, as the session's `final_pct_of_baseline` is the largest over all
channels). Where two channels record the same site (both sides, say) the one
that kept most is taken, with its own baseline. Empty when the summary has no
per-channel figures (stored before they were kept), when no channel records
the site, or when its baseline was never established.

What leaves the registry: the random session id and clinical values only.
No patient token, no date: the spasm-free date becomes `days_to_relief`
(days after surgery), and follow-up is `followup_days`, the nominal day of
the last follow-up point recorded.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amrwatch.proto.codec import DecodeError
from amrwatch.study.cohortcsv import COHORT_COLUMNS, ELIGIBLE_COLUMN, INELIGIBLE_COURSES, LABEL, UNLABELLED_COURSES
from amrwatch.services.predictor.features import BY_NAME, FEATURE_NAMES
from amrwatch.archive.session import NoSuchSession, open_session
from amrwatch.archive.integrity import ArchiveError
from amrwatch.proto.montage import LATERAL_SPREAD_MUSCLES
from amrwatch.registry.outcomes import FollowUpSettings
from amrwatch.registry.store import COMPLICATIONS, RECORDING_TIMEPOINTS, TIMEPOINTS, OutcomeRow, Registry, SessionRow
from amrwatch.registry.summary import SUMMARY_TOPICS, SummaryError, summarize

OUTCOME_COLUMNS: tuple[str, ...] = (
    *(f"{what}_{tp}" for tp in TIMEPOINTS for what in ("grade", "class")),
    "days_to_relief",
    "relief_dated_by",
    "followup_days",
    "complications",
)
#: Per follow-up point: was the AMR present in the postoperative recording linked to the operation
#: (`amrwatch outcome link-recording`)? 1 its course persisted, 0 it did not, empty: no linked recording
#: with a course.
FOLLOWUP_RECORDING_COLUMNS: tuple[str, ...] = tuple(f"followup_amr_{tp}" for tp in RECORDING_TIMEPOINTS)
EXTRA_COLUMNS: tuple[str, ...] = (ELIGIBLE_COLUMN, "predicted_band", "prediction_model_sha256", "prediction_synthetic")
#: The recording sites with a column of their own: (direction, muscle) as docs/domain.md pairs them.
RECORDING_SITES: tuple[tuple[str, str], ...] = tuple((d, m) for d, ms in LATERAL_SPREAD_MUSCLES.items() for m in ms)
DIRECTIONS: tuple[str, ...] = tuple(LATERAL_SPREAD_MUSCLES)
#: Per site and per direction: the final percent of baseline (and the site's baseline, µV).
PER_CHANNEL_KEYS: tuple[str, ...] = (*(f"{d}_{m}" for d, m in RECORDING_SITES), *DIRECTIONS)
PER_CHANNEL_COLUMNS: tuple[str, ...] = (*(f"final_pct_{k}" for k in PER_CHANNEL_KEYS),
                                        *(f"baseline_uv_{d}_{m}" for d, m in RECORDING_SITES))
#: The export's columns: the trainer's layout first, then context, per channel, then follow-up.
CSV_COLUMNS: tuple[str, ...] = (*COHORT_COLUMNS, *EXTRA_COLUMNS, *PER_CHANNEL_COLUMNS, *OUTCOME_COLUMNS,
                                *FOLLOWUP_RECORDING_COLUMNS)
SYNTHETIC_SOURCE = "synthetic"


@dataclass(frozen=True)
class CohortRow:
    session_id: str
    factors: dict[str, Any]
    """The seven factors by name; None where the registry has no value."""
    course: str | None
    final_pct_of_baseline: float | None
    predicted_probability: float | None
    predicted_band: str | None
    prediction_model_sha256: str | None
    prediction_synthetic: bool | None
    grades: dict[str, int | None]
    classes: dict[str, str | None]
    days_to_relief: int | None
    relief_dated_by: str | None
    """'spasm_free_date', or 'first_cured_followup' when only a visit without spasm dates the relief."""
    followup_days: int | None
    complications: tuple[str, ...]
    synthetic: bool
    final_pct: dict[str, float | None] = field(default_factory=dict)
    """Per PER_CHANNEL_KEYS (site 'ZYG_mentalis' or direction 'ZYG'): the final percent of baseline; None (or
    absent) when the summary has none for it."""
    baseline_uv: dict[str, float | None] = field(default_factory=dict)
    """Per site ('ZYG_mentalis'): the baseline amplitude of the channel whose final percent is taken."""
    followup_amr: dict[str, int | None] = field(default_factory=dict)
    """Per RECORDING_TIMEPOINTS: 1 the AMR persisted through the linked postoperative recording, 0 it did not,
    None (or absent) no linked recording with an AMR course."""

    @property
    def label(self) -> int | None:
        """1 persisted, 0 disappeared, None when the course carries no label."""
        if self.course is None or self.course in UNLABELLED_COURSES:
            return None
        return int(self.course == "persisted")

    @property
    def eligible(self) -> bool | None:
        """In the decision model's population: the AMR was present when decompression started."""
        if self.course is None:
            return None
        return self.course not in UNLABELLED_COURSES and self.course not in INELIGIBLE_COURSES

    @property
    def complete(self) -> bool:
        return all(self.factors.get(n) is not None for n in FEATURE_NAMES)


@dataclass
class Cohort:
    rows: list[CohortRow]
    excluded: list[tuple[str, str]] = field(default_factory=list)
    """(session id, reason) for every registry session not in `rows`."""
    from_archive: int = 0
    """Rows whose summary was re-derived from the archive (no summary row stored)."""
    synthetic_settings: dict[str, Any] | None = None

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.rows)

    def labelled(self) -> list[CohortRow]:
        return [r for r in self.rows if r.label is not None]


def summary_from_archive(data_dir: Path, session_id: str) -> dict | None:
    """Re-derive a summary from the session's archive (archive.open_session, in log order); None if there
    is no archive."""
    try:
        session = open_session(data_dir, session_id)
    except NoSuchSession:
        return None
    with session:
        return summarize(session.messages("log", types=SUMMARY_TOPICS), session_id=session_id)


def _outcome_fields(session: SessionRow, outcomes: list[OutcomeRow], follow_up: FollowUpSettings) -> dict[str, Any]:
    by_tp = {o.timepoint: o for o in outcomes}
    days = follow_up.timepoint_days
    grades = {tp: (by_tp[tp].cohen_grade if tp in by_tp else None) for tp in TIMEPOINTS}
    classes = {tp: (by_tp[tp].outcome_class if tp in by_tp else None) for tp in TIMEPOINTS}
    surgery = dt.date.fromisoformat(session.started_at[:10])
    dated = [o for o in sorted(outcomes, key=lambda o: o.id) if o.relief_date]
    relief, dated_by = None, None
    if dated:
        relief = (dt.date.fromisoformat(dated[-1].relief_date) - surgery).days
        dated_by = "spasm_free_date"
    else:
        cured = [days[tp] for tp in TIMEPOINTS if grades[tp] == 0]
        if cured:
            relief, dated_by = cured[0], "first_cured_followup"
    seen = [days[tp] for tp in TIMEPOINTS if tp in by_tp]
    comps: set[str] = set()
    for o in outcomes:
        comps.update(o.complications)
    return {"grades": grades, "classes": classes, "days_to_relief": relief, "relief_dated_by": dated_by,
            "followup_days": max(seen) if seen else None,
            "complications": tuple(c for c in COMPLICATIONS if c in comps)}


def per_channel_figures(per_channel: dict[str, dict] | None) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(final % by site and direction, baseline µV by site) from a summary's `per_channel` (see the module
    docstring for the rule); every key of PER_CHANNEL_KEYS is present, None where there is no figure."""
    final: dict[str, float | None] = dict.fromkeys(PER_CHANNEL_KEYS)
    base: dict[str, float | None] = {f"{d}_{m}": None for d, m in RECORDING_SITES}
    for ch in (per_channel or {}).values():
        pct = ch.get("final_pct_of_baseline")
        if pct is None:
            continue
        d, m = ch.get("direction"), ch.get("muscle")
        if d in final and (final[d] is None or pct > final[d]):
            final[d] = pct
        site = f"{d}_{m}"
        if site in base and (final[site] is None or pct > final[site]):
            final[site], base[site] = pct, ch.get("baseline_uv")
    return final, base


def _followup_amr(links: dict[str, str], summaries: dict) -> dict[str, int | None]:
    """AMR present (1) or not (0) in each linked postoperative recording, from its stored summary's course.
    A recording whose summary is missing, or without a course, is None: unknown, never 'absent'."""
    out: dict[str, int | None] = {}
    for tp in RECORDING_TIMEPOINTS:
        row = summaries.get(links[tp]) if tp in links else None
        course = row.summary.get("course") if row is not None else None
        out[tp] = None if course is None else int(course == "persisted")
    return out


def build_cohort(registry: Registry, data_dir: Path | None = None,
                 follow_up: FollowUpSettings | None = None) -> Cohort:
    """Every eligible session of the registry as a CohortRow (see the module docstring for who is eligible)."""
    follow_up = follow_up or FollowUpSettings()
    summaries = registry.current_summaries()
    outcomes = registry.current_outcomes()
    cohort = Cohort(rows=[])
    patients: set[str] = set()
    links = registry.followup_recordings()
    recordings = {f.recording_session_id: f for f in links}
    linked: dict[str, dict[str, str]] = {}
    for f in links:
        linked.setdefault(f.operation_session_id, {})[f.timepoint] = f.recording_session_id
    for s in registry.list():
        if s.session_id in recordings:
            f = recordings[s.session_id]
            cohort.excluded.append((s.session_id, f"{f.timepoint} follow-up recording of operation "
                                    f"{f.operation_session_id}, not an operation"))
            continue
        if s.replay_of is not None:
            cohort.excluded.append((s.session_id, f"replay of an archived session: {s.replay_of}"))
            continue
        if s.status != "closed":
            cohort.excluded.append((s.session_id, f"status {s.status}"))
            continue
        if s.patient_token is not None and s.patient_token in patients:
            cohort.excluded.append((s.session_id, "re-operation of a patient already in the table"))
            continue
        row = summaries.get(s.session_id)
        summary = row.summary if row is not None else None
        if summary is None and data_dir is not None:
            try:
                summary = summary_from_archive(data_dir, s.session_id)
            except (ArchiveError, DecodeError, SummaryError, OSError) as err:
                cohort.excluded.append((s.session_id, f"no summary and the archive cannot be read: {err}"))
                continue
            if summary is not None:
                cohort.from_archive += 1
        if summary is None:
            cohort.excluded.append((s.session_id, "no summary stored and no archive"))
            continue
        if summary.get("course") is None:
            cohort.excluded.append((s.session_id, "no AMR course (the analyzer did not classify the session)"))
            continue
        if s.patient_token is not None:
            patients.add(s.patient_token)
        synthetic = s.source == SYNTHETIC_SOURCE
        if synthetic and cohort.synthetic_settings is None:
            cohort.synthetic_settings = s.settings.get("synthetic_registry")
        pred = summary.get("prediction") or {}
        factors = summary.get("factors", {})
        final_pct, baseline_uv = per_channel_figures(summary.get("per_channel"))
        cohort.rows.append(CohortRow(
            session_id=s.session_id,
            factors={n: factors.get(n) for n in FEATURE_NAMES},
            course=summary.get("course"),
            final_pct_of_baseline=summary.get("final_pct_of_baseline"),
            predicted_probability=pred.get("probability"),
            predicted_band=pred.get("band"),
            prediction_model_sha256=pred.get("model_sha256"),
            prediction_synthetic=pred.get("synthetic"),
            synthetic=synthetic,
            final_pct=final_pct,
            baseline_uv=baseline_uv,
            followup_amr=_followup_amr(linked.get(s.session_id, {}), summaries),
            **_outcome_fields(s, outcomes.get(s.session_id, []), follow_up),
        ))
    return cohort


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def csv_text(cohort: Cohort) -> str:
    """The cohort as CSV text (UTF-8, header + one line per row, '\\n' line ends)."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in cohort.rows:
        cells: dict[str, Any] = {"session_id": r.session_id, LABEL: r.label, "course": r.course,
                                 ELIGIBLE_COLUMN: r.eligible,
                                 "final_pct_of_baseline": r.final_pct_of_baseline,
                                 "predicted_probability": r.predicted_probability,
                                 "predicted_band": r.predicted_band,
                                 "prediction_model_sha256": r.prediction_model_sha256,
                                 "prediction_synthetic": r.prediction_synthetic,
                                 "days_to_relief": r.days_to_relief, "relief_dated_by": r.relief_dated_by,
                                 "followup_days": r.followup_days, "complications": ";".join(r.complications)}
        for name in FEATURE_NAMES:
            v = r.factors[name]
            cells[name] = (float(v) if BY_NAME[name].kind == "float" else v) if v is not None else None
        for k in PER_CHANNEL_KEYS:
            cells[f"final_pct_{k}"] = r.final_pct.get(k)
        for d, m in RECORDING_SITES:
            cells[f"baseline_uv_{d}_{m}"] = r.baseline_uv.get(f"{d}_{m}")
        for tp in RECORDING_TIMEPOINTS:
            cells[f"followup_amr_{tp}"] = r.followup_amr.get(tp)
        for tp in TIMEPOINTS:
            cells[f"grade_{tp}"] = r.grades[tp]
            cells[f"class_{tp}"] = r.classes[tp]
        w.writerow([_cell(cells[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_csv(cohort: Cohort, path: Path) -> str:
    """Write the export atomically (temporary file, fsync, rename); returns its SHA-256."""
    import os

    text = csv_text(cohort).encode("utf-8")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(text).hexdigest()
