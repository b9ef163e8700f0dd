"""What a session contributes to the cohort: its factors, AMR course and prediction.

Why a summary at all: the cohort table and the report need, per operation,
a dozen numbers that are scattered over thousands of archived messages. The
recorder derives them once at session close (`summarize`) and stores them in
the registry (`Registry.set_summary`, audited; a correction is a new row);
`amrwatch export cohort` falls back to re-deriving them from the archive when
no summary row exists. The same pure function serves both, so a summary is
always what the archive says.

Per channel (issue #17): each recording channel's stimulation direction,
muscle (from the session's montage), baseline amplitude and final percent of
baseline, as the analyzer's `amr_course` `per_channel` content gives them —
the figures Pan et al. (Neurosurg Focus 2025) graded per muscle. Optional:
summaries stored before it, and sessions without a course, have none, and
still load.

Which value wins for a factor: the last one given, except the preoperative
AMR amplitude, where the analyzer's measured baseline replaces values from a
scenario or file, and only an amplitude the operator typed in replaces the
analyzer's (the operator may know the baseline was taken under partial
neuromuscular block).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amrwatch.proto.messages import (
    AmrCourse,
    AmrStateName,
    Baseline,
    Course,
    Direction,
    Factors,
    FactorValues,
    Message,
    Prediction,
    SessionStart,
    Stage,
)
from amrwatch.proto.messages import Name as ChannelName

#: Message types a summary is derived from (the archive fallback decodes only these).
SUMMARY_TOPICS: frozenset[str] = frozenset({"session_start", "factors", "baseline", "amr_course", "prediction"})

FactorSource = Literal["operator", "scenario", "replay", "file", "analyzer"]
#: Higher wins for the AMR amplitude, whatever the order of arrival.
_AMPLITUDE_PRIORITY = {"operator": 3, "analyzer": 2, "scenario": 1, "replay": 1, "file": 1}

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class SummaryError(ValueError):
    """A summary that cannot be stored or derived; the text names the field."""


class PredictionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: Probability
    band: Literal["low", "intermediate", "high"]
    cutoff_low: Probability
    cutoff_high: Probability
    model_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    synthetic: bool


#: Sanity ranges of the per-channel figures: wide enough for any real recording (a summary that fails them
#: is not stored, so the session would leave the cohort), narrow enough to refuse a unit error.
MAX_BASELINE_UV = 100_000.0
MAX_FINAL_PCT = 100_000.0


class ChannelFigures(BaseModel):
    """One recording channel's figures at the end of the session (the analyzer's `amr_course` per_channel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Direction
    muscle: Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")] | None = None
    """From the session's montage ('mentalis', 'orbicularis_oris', 'orbicularis_oculi', 'other'); None when
    the summary was derived without the session_start message."""
    state: AmrStateName | None = None
    """The channel's last AMR state; None: its AMR was never confirmed present."""
    baseline_uv: Annotated[float, Field(ge=0.0, le=MAX_BASELINE_UV, allow_inf_nan=False)] | None = None
    final_pct_of_baseline: Annotated[float, Field(ge=0.0, le=MAX_FINAL_PCT, allow_inf_nan=False)] | None = None


class SessionSummary(BaseModel):
    """One session's row in the cohort (before follow-up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: FactorValues = Field(default_factory=FactorValues)
    factor_sources: dict[str, FactorSource] = Field(default_factory=dict)
    course: Course | None = None
    baseline_uv: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    final_pct_of_baseline: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    disappeared_at_stage: Stage | None = None
    prediction: PredictionSummary | None = None
    per_channel: Annotated[dict[ChannelName, ChannelFigures], Field(max_length=256)] | None = None
    """By channel name; None (or absent) in summaries stored before it was kept, and without a course."""
    derived_from: Literal["messages", "synthetic", "manual"] = "messages"


def check_summary(summary: Any) -> dict:
    """The summary validated and in canonical JSON-able form; SummaryError names every bad field."""
    if isinstance(summary, SessionSummary):
        model = summary
    else:
        if not isinstance(summary, dict):
            raise SummaryError(f"summary must be a JSON object (dict); got {type(summary).__name__}")
        try:
            model = SessionSummary.model_validate(summary)
        except ValidationError as err:
            problems = []
            for e in err.errors(include_url=False):
                loc = ".".join(str(x) for x in e["loc"]) or "(summary)"
                problems.append(f"summary.{loc}: {e['msg']}; got {e.get('input')!r}")
            raise SummaryError("; ".join(problems)) from None
    unknown = set(model.factor_sources) - set(FactorValues.model_fields)
    if unknown:
        raise SummaryError(f"summary.factor_sources names unknown factors {sorted(unknown)}; "
                           f"the factors are {list(FactorValues.model_fields)}")
    out = model.model_dump(mode="json")
    out["factors"] = {k: v for k, v in out["factors"].items() if v is not None}  # only what was given
    return out


def summarize(messages: Iterable[Message], session_id: str | None = None) -> dict:
    """The summary of one session from its decoded messages, in archive order.

    Messages of other sessions are ignored when `session_id` is given; without
    it, all messages carrying a session id must carry the same one.
    """
    factors: dict[str, Any] = {}
    sources: dict[str, str] = {}
    course: AmrCourse | None = None
    prediction: Prediction | None = None
    muscles: dict[str, str] = {}
    seen_session = session_id
    for msg in messages:
        if msg.session_id is None:
            continue
        if seen_session is None:
            seen_session = msg.session_id
        elif msg.session_id != seen_session:
            if session_id is not None:
                continue
            raise SummaryError(f"messages of two sessions ({seen_session!r} and {msg.session_id!r}) were given; "
                               "summarize one session at a time or pass session_id")
        if isinstance(msg, Factors):
            for name, value in msg.factors.given().items():
                _offer(factors, sources, name, value, msg.source)
        elif isinstance(msg, Baseline):
            _offer(factors, sources, "amr_amplitude_uv", msg.amr_amplitude_uv, "analyzer")
        elif isinstance(msg, AmrCourse):
            course = msg
        elif isinstance(msg, Prediction):
            prediction = msg
        elif isinstance(msg, SessionStart):
            muscles = {c.name: c.muscle for c in msg.montage.channels}
    out: dict[str, Any] = {"factors": factors, "factor_sources": sources, "derived_from": "messages"}
    if course is not None:
        out.update(course=course.course, baseline_uv=course.baseline_uv,
                   final_pct_of_baseline=course.final_pct_of_baseline,
                   disappeared_at_stage=course.disappeared_at_stage,
                   per_channel=_per_channel(course, muscles))
    if prediction is not None:
        out["prediction"] = {k: getattr(prediction, k) for k in PredictionSummary.model_fields}
    return check_summary(out)


def _per_channel(course: AmrCourse, muscles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The analyzer's per-channel content, the figures the cohort needs (check_summary validates them)."""
    out: dict[str, dict[str, Any]] = {}
    for name, c in course.per_channel.items():
        out[name] = {"direction": c.get("direction"), "muscle": muscles.get(name), "state": c.get("state"),
                     "baseline_uv": c.get("baseline_uv"), "final_pct_of_baseline": c.get("final_pct_of_baseline")}
    return out


def _offer(factors: dict, sources: dict, name: str, value: Any, source: str) -> None:
    if name == "amr_amplitude_uv" and name in sources:
        if _AMPLITUDE_PRIORITY[source] < _AMPLITUDE_PRIORITY[sources[name]]:
            return
    factors[name] = value
    sources[name] = source
