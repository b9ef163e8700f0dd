"""Every message that crosses a socket, as strict pydantic models.

One source of truth: services import these classes and nothing redefines a
message. Validation is strict on purpose — the bus carries patient data from
an operating room, and a message that is not exactly what this page says is
refused with the field, the allowed range and the value, never guessed at.

The envelope fields (`type`, `schema_version`, `session_id`, `seq`,
`publisher`, `instance`, `ts_utc`) are stamped by the publisher
(`amrwatch.bus.Publisher`); services build a message by giving only the body.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Literal,
    ParamSpec,
    TypeVar,
    cast,
    get_args,
)

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from .factors import BY_NAME as FACTOR_BY_NAME
from .factors import FACTOR_NAMES

SCHEMA_VERSION: Final = 1

# --------------------------------------------------------------------------- #
# Scalar building blocks


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**62)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
InstanceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,32}$")]
Text = Annotated[str, StringConstraints(max_length=1000)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Scalar = bool | int | FiniteFloat | ShortText | None
#: Free-form but bounded maps (settings, evidence, inputs): at most 64 keys of scalars.
ScalarMap = Annotated[dict[Name, Scalar], Field(max_length=64)]
#: A service's settings: scalars, or short lists of numbers (windows such as [6.0, 25.0]).
SettingValue = Scalar | Annotated[list[int | FiniteFloat], Field(max_length=16)]
SettingsMap = Annotated[dict[Name, SettingValue], Field(max_length=128)]


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


Stage = Literal[
    "baseline",
    "incision",
    "dural_opening",
    "csf_release",
    "retraction",
    "arachnoid_dissection",
    "decompression",
    "decompression_complete",
    "closure",
    "end",
]
"""Surgical stages marked by the operator (docs/domain.md). `decompression_complete` is the
surgeon's word that the decompression is done: the verdict on the AMR is given over a window
that starts there (at `closure` if it never comes), never while the surgeon is still working."""

#: The order stages normally happen in.
STAGE_ORDER: tuple[str, ...] = get_args(Stage)
#: The stages that last a while (a scripted operation gives each a duration); `decompression_complete`
#: and `end` are instants: the surgeon's word that the decompression is done, and the end of the session.
PERIOD_STAGES: tuple[str, ...] = tuple(s for s in STAGE_ORDER if s not in ("decompression_complete", "end"))
#: The stages of the operation proper: after the baseline, up to and including closure (diathermy may be used).
SURGICAL_STAGES: tuple[str, ...] = STAGE_ORDER[STAGE_ORDER.index("incision"):STAGE_ORDER.index("end")]

Direction = Literal["ZYG", "MAR"]
"""ZYG: zygomatic branch stimulated, recorded at mentalis/orbicularis oris.
MAR: marginal mandibular branch stimulated, recorded at orbicularis oculi."""

AmrStateName = Literal["present", "diminished", "disappeared", "reappeared"]
Assessment = Literal["present", "absent", "not_assessable", "rejected"]
"""What one sweep of one channel says about the AMR:

- present: a response clearly above the noise, in the AMR's latency range, after a delivered stimulus;
- absent: no response although an AMR of `detectability_fraction` x the channel's baseline would
  have been seen at this sweep's noise, and the stimulus was confirmed delivered;
- not_assessable: the sweep cannot tell (noise too high for the baseline AMR to be seen, stimulus
  not confirmed delivered, or a direct response from current spread masking the window); it never
  counts for or against a disappearance;
- rejected: not measured as a response at all (gap, NaN, saturation, diathermy...)."""
Course = Literal[
    "never_detected",
    "disappeared_before_decompression",
    "disappeared_after_decompression",
    "persisted",
]
Band = Literal["low", "intermediate", "high"]
Priority = Literal["high", "medium", "low", "info"]
DecisionKind = Literal[
    "decompression_confirmed",
    "explore_further",
    "termination_acceptable",
    "check_decompression",
    "amr_reappeared",
    "evaluating",
    "indeterminate",
    "early_disappearance",
    "amr_not_monitorable",
    "prognosis",
]
AlarmKind = Literal[
    "signal_lost",
    "sequence_gap",
    "recorder_stalled",
    "service_down",
    "input_rejected",
    "model_invalid",
    "archive_corrupt",
    "archive_fatal",
    "data_gap",
    "saturation",
    "stimulation_failure",
    "recording_quality",
    "direct_response",
    "state_unknown",
    "link_stale",
]
InputSource = Literal["operator", "scenario", "replay", "file"]
ChannelKind = Literal["emg", "sample_index", "trigger", "aux"]
AlarmPriority = Literal["high", "medium", "low"]
AlarmState = Literal["raised", "cleared"]

#: Why a sweep is `not_assessable` (its `assessment_reason`); a `rejected` sweep's reason is its reject_reason.
NOT_ASSESSABLE_REASONS: tuple[str, ...] = (
    "stimulus_unconfirmed", "direct_response", "intensity_below_baseline", "noise_too_high")
#: Why a sweep is `rejected` (its `reject_reason`): samples missing, NaN, saturated, diathermy, older than the
#: analyzer's buffer, cut by the session's end, before a late joiner's first samples, or skipped by an offline
#: driver (never expected).
REJECT_REASONS: tuple[str, ...] = (
    "gap", "nan", "saturated", "diathermy", "stale", "incomplete", "before_recording", "not_fed")

# The vocabularies as tuples, for code that checks or lists them (one spelling: the Literals above).
DIRECTIONS: tuple[str, ...] = get_args(Direction)
AMR_STATES: tuple[str, ...] = get_args(AmrStateName)
ASSESSMENTS: tuple[str, ...] = get_args(Assessment)
#: The assessments that count for the course (present and absent); the others never do.
COUNTED_ASSESSMENTS: tuple[str, ...] = ("present", "absent")
COURSES: tuple[str, ...] = get_args(Course)
BANDS: tuple[str, ...] = get_args(Band)
PRIORITIES: tuple[str, ...] = get_args(Priority)
DECISION_KINDS: tuple[str, ...] = get_args(DecisionKind)
ALARM_KINDS: tuple[str, ...] = get_args(AlarmKind)
INPUT_SOURCES: tuple[str, ...] = get_args(InputSource)

# --------------------------------------------------------------------------- #
# Base classes


class Strict(BaseModel):
    """Closed, immutable, finite: the validation every wire object shares."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False
    )


class Body(Strict):
    """The fields a message type adds to the envelope: what a service or an engine builds.

    Each message class is its body plus the envelope (`class AmrMeasurement(AmrMeasurementBody, Message)`),
    so the fields are written once. Engines return bodies (`AnalyzerEngine` → `AmrMeasurementBody` …), the
    publisher stamps the envelope; `validate_body` checks a body on its own."""

    TOPIC: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The body as keyword arguments for the message (shallow: nested models stay models)."""
        return dict(self.__dict__)


class Message(Strict):
    """The envelope every message carries."""

    TOPIC: ClassVar[str] = ""

    type: str
    schema_version: Literal[1] = Field(
        description="Bumped on any incompatible change; subscribers refuse unknown versions."
    )
    session_id: SessionId | None = Field(
        description="The session this message belongs to; null only for service-level "
        "messages (heartbeat, alarm) sent while no session runs."
    )
    seq: Count = Field(
        description="Gap-free counter per publisher instance and message type: "
        "a jump means messages were lost."
    )
    publisher: Name = Field(description="Service that sent it, e.g. 'acquirer'.")
    instance: InstanceId = Field(
        description="Random id of the publishing process; a new value means the "
        "publisher restarted and its seq starts again at 0."
    )
    ts_utc: AwareDatetime = Field(description="When the message was published (UTC, RFC 3339).")

    @field_validator("ts_utc")
    @classmethod
    def _utc_only(cls, v: _dt.datetime) -> _dt.datetime:
        if v.utcoffset() != _dt.timedelta(0):
            raise ValueError(f"must be in UTC (offset +00:00 or 'Z'); got offset {v.utcoffset()}")
        return v

    @classmethod
    def body_fields(cls) -> set[str]:
        return set(cls.model_fields) - set(Message.model_fields)


# --------------------------------------------------------------------------- #
# Session


class ChannelInfo(Strict):
    name: Name
    muscle: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")] = Field(
        description="Recorded muscle, e.g. 'mentalis', 'orbicularis_oculi'; 'none' for aux channels."
    )
    direction: Direction | None = Field(
        description="The stimulation direction whose lateral spread this channel records; "
        "null for channels that are not analysed (auxiliary, trigger, unrecognised EMG)."
    )
    kind: ChannelKind = Field(
        default="emg",
        description="emg: a muscle recording (analysed when `direction` is set); trigger: stimulus pulses; "
        "sample_index: each sample's index; aux: any other signal, carried and archived, never analysed.",
    )
    unit: Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f]{0,16}$")] = Field(
        default="uV",
        description="Physical unit of the values in the frames: 'uV' for emg channels; for the others the "
        "recording's own unit, possibly empty (a counter).",
    )
    side: Literal["left", "right"] | None = Field(default=None, description="Side of the face, when known.")
    label: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The label as the recording wrote it, when it differs from `name`."
    )
    taken_as: ShortText | None = Field(
        default=None, description="What the channel was taken as and why (label rule, montage file, ignored: reason)."
    )


class StimulationInfo(Strict):
    direction: Direction
    stimulated_branch: Literal["zygomatic", "marginal_mandibular"]


class Montage(Strict):
    sampling_rate_hz: Annotated[float, Field(ge=500.0, le=100_000.0, allow_inf_nan=False)]
    channels: Annotated[list[ChannelInfo], Field(min_length=1, max_length=256)]
    stimulation: Annotated[list[StimulationInfo], Field(min_length=1, max_length=2)]

    @model_validator(mode="after")
    def _unique(self) -> Montage:
        names = [c.name for c in self.channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"channel names must be unique; repeated: {dup}")
        return self

    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def recording_channels(self, direction: str) -> list[str]:
        return [c.name for c in self.channels if c.kind == "emg" and c.direction == direction]


class StreamFacts(Strict):
    """What a live stream said about itself when the session started (LSL), kept with the session."""

    kind: Literal["lsl"]
    name: ShortText = Field(description="The stream's name.")
    source_id: ShortText = Field(description="The outlet's source id ('' when it set none).")
    uid: ShortText = Field(description="The outlet's unique id (changes when the outlet restarts).")
    hostname: ShortText = Field(description="Host the EMG outlet runs on.")
    nominal_rate_hz: Annotated[float, Field(gt=0.0, le=100_000.0, allow_inf_nan=False)]
    channel_format: Literal["float32", "double64", "int32", "int16", "int8", "int64", "other"]
    channel_labels: Annotated[list[ShortText], Field(max_length=256)] = Field(
        description="Labels from the stream description (channels/channel/label), in stream order."
    )
    channel_units: Annotated[list[ShortText], Field(max_length=256)] = Field(
        description="Units from the description (channels/channel/unit); '' when not given (read as µV)."
    )
    stimulus_timing: Literal["markers", "trigger", "both", "none"] = Field(
        description="How stimuli are placed: marker timestamps; a trigger channel's pulses; both (the "
        "trigger gives the sample, the marker the label); none (no stimuli known)."
    )
    trigger_channels: Annotated[list[Name], Field(max_length=16)]
    marker_stream: ShortText | None = Field(description="Name of the marker stream; null when none.")
    marker_source_id: ShortText | None
    marker_hostname: ShortText | None
    clock: Literal["samples", "shared_host", "time_correction"] = Field(
        description="samples: stimuli come from samples only (trigger); shared_host: marker and EMG outlets "
        "on one host, stamps compared as sent; time_correction: outlets on different hosts, brought onto "
        "one clock by LSL's clock-offset estimate."
    )


class SessionStartBody(Body):
    """The body of `session_start` (the message: `SessionStart`)."""

    TOPIC: ClassVar[str] = "session_start"
    started_at: AwareDatetime
    source: ShortText = Field(description="'sim', 'edf:PATH', 'lsl:NAME' or 'replay:ID'.")
    scenario: Name | None
    replay_of: SessionId | None = Field(description="Set when this session replays an archived one.")
    manual: bool = Field(description="Stages and factors are entered by the operator.")
    montage: Montage
    settings: ScalarMap
    ground_truth: bool = Field(description="The source publishes `sim_truth` (simulator only).")
    stream: StreamFacts | None = Field(
        default=None, description="Live stream facts (LSL sources); null or absent for sim, files, replays."
    )


class SessionStart(SessionStartBody, Message):
    type: Literal["session_start"]
    session_id: SessionId


class SessionEndBody(Body):
    """The body of `session_end` (the message: `SessionEnd`)."""

    TOPIC: ClassVar[str] = "session_end"
    ended_at: AwareDatetime
    reason: Literal["scenario_end", "source_exhausted", "operator", "shutdown", "error"]
    n_frames: Count
    n_stimuli: Count
    n_samples: Count


class SessionEnd(SessionEndBody, Message):
    type: Literal["session_end"]
    session_id: SessionId


# --------------------------------------------------------------------------- #
# Signal


MAX_FRAME_SAMPLES = 65_536
MAX_FRAME_BYTES = 256 * MAX_FRAME_SAMPLES * 4


class EmgFrameBody(Body):
    """The body of `emg_frame` (the message: `EmgFrame`)."""

    TOPIC: ClassVar[str] = "emg_frame"
    first_sample_index: Count = Field(description="Index of the first sample since session start.")
    n_channels: Annotated[int, Field(ge=1, le=256)]
    n_samples: Annotated[int, Field(ge=1, le=MAX_FRAME_SAMPLES)]
    sampling_rate_hz: Annotated[float, Field(ge=500.0, le=100_000.0, allow_inf_nan=False)]
    dtype: Literal["<f4"] = Field(description="Sample encoding of the payload frame.")
    layout: Literal["channel_major"] = Field(
        description="Payload is n_channels consecutive blocks of n_samples values."
    )
    first_sample_device_s: FiniteFloat = Field(description="Device clock of the first sample (s).")
    first_sample_utc: AwareDatetime = Field(description="Wall clock of the first sample (UTC).")


class EmgFrame(EmgFrameBody, Message):
    """A block of samples. The samples themselves travel as the third wire
    frame (raw little-endian float32, channel-major), never as JSON."""

    type: Literal["emg_frame"]
    session_id: SessionId

    _samples: np.ndarray | None = PrivateAttr(default=None)

    @property
    def samples(self) -> np.ndarray:
        """(n_channels, n_samples) float32 µV; read-only view on the received bytes."""
        if self._samples is None:
            raise AttributeError("this EmgFrame carries no samples")
        return self._samples

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmgFrame) or self.model_dump() != other.model_dump():
            return False
        mine, theirs = self._samples, other._samples
        if mine is None or theirs is None:
            return mine is theirs
        return mine.tobytes() == theirs.tobytes()

    __hash__ = None  # type: ignore[assignment]

    def with_samples(self, samples: np.ndarray) -> EmgFrame:
        arr = np.asarray(samples, dtype="<f4")
        if arr.shape != (self.n_channels, self.n_samples):
            raise ValueError(
                f"samples must have shape (n_channels={self.n_channels}, "
                f"n_samples={self.n_samples}); got {arr.shape}"
            )
        self._samples = np.ascontiguousarray(arr)
        return self


class StimulusBody(Body):
    """The body of `stimulus` (the message: `Stimulus`)."""

    TOPIC: ClassVar[str] = "stimulus"
    stimulus_index: Count
    sample_index: Count = Field(description="Sample (since session start) at which the pulse began.")
    stim_time_s: NonNegFloat = Field(description="Seconds from session start.")
    direction: Direction
    intensity_ma: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None
    width_ms: Annotated[float, Field(ge=0.0, le=5.0, allow_inf_nan=False)] | None


class Stimulus(StimulusBody, Message):
    type: Literal["stimulus"]
    session_id: SessionId


class SimTruthBody(Body):
    """The body of `sim_truth` (the message: `SimTruth`)."""

    TOPIC: ClassVar[str] = "sim_truth"
    stimulus_index: Count
    channel: Name
    amplitude_uv: NonNegFloat
    onset_latency_ms: NonNegFloat | None
    peak_latency_ms: NonNegFloat | None
    n_phases: Annotated[int, Field(ge=0, le=16)]
    noise_rms_uv: NonNegFloat
    diathermy: bool


class SimTruth(SimTruthBody, Message):
    """Ground truth from the simulator, so the analyzer can be scored."""

    type: Literal["sim_truth"]
    session_id: SessionId


# --------------------------------------------------------------------------- #
# Operator inputs


class StageMarkerBody(Body):
    """The body of `stage` (the message: `StageMarker`)."""

    TOPIC: ClassVar[str] = "stage"
    stage: Stage
    source: InputSource
    sample_index: Count | None = Field(description="Sample at which the stage began, when known.")


class StageMarker(StageMarkerBody, Message):
    type: Literal["stage"]
    session_id: SessionId


def _bounds(name: str) -> Any:
    """The allowed range of factor `name`, from proto/factors.py (the one table)."""
    f = FACTOR_BY_NAME[name]
    if f.kind == "float":
        return Field(ge=f.min, le=f.max, allow_inf_nan=False)
    return Field(ge=f.min, le=f.max)


def _about(name: str) -> Any:
    return Field(default=None, description=FACTOR_BY_NAME[name].describe())


class FactorValues(Strict):
    """The seven patient factors; any subset (later values replace earlier ones)."""

    # Names, order and ranges are proto/factors.py's table; the predictor's model card may narrow the
    # ranges further, the contract never lets anything wilder than this through.

    duration_years: Annotated[float, _bounds("duration_years")] | None = _about("duration_years")
    cohen_grade: Annotated[int, _bounds("cohen_grade")] | None = _about("cohen_grade")
    carbamazepine: bool | None = _about("carbamazepine")
    vessels: Annotated[int, _bounds("vessels")] | None = _about("vessels")
    amr_amplitude_uv: Annotated[float, _bounds("amr_amplitude_uv")] | None = _about("amr_amplitude_uv")
    retraction_mm: Annotated[float, _bounds("retraction_mm")] | None = _about("retraction_mm")
    displacement: Annotated[int, _bounds("displacement")] | None = _about("displacement")

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


if tuple(FactorValues.model_fields) != FACTOR_NAMES:  # the table and the message name the same factors, in order
    raise RuntimeError(f"FactorValues fields {tuple(FactorValues.model_fields)} differ from proto/factors.py "
                       f"{FACTOR_NAMES}")


class FactorsBody(Body):
    """The body of `factors` (the message: `Factors`)."""

    TOPIC: ClassVar[str] = "factors"
    factors: FactorValues
    source: InputSource

    @model_validator(mode="after")
    def _not_empty(self) -> FactorsBody:
        if not self.factors.given():
            raise ValueError("factors: at least one of the seven factors must be given")
        return self


class Factors(FactorsBody, Message):
    type: Literal["factors"]
    session_id: SessionId


# --------------------------------------------------------------------------- #
# Analyzer output


class AmrMeasurementBody(Body):
    """The body of `amr_measurement` (the message: `AmrMeasurement`)."""

    TOPIC: ClassVar[str] = "amr_measurement"
    stimulus_index: Count
    stim_time_s: NonNegFloat
    channel: Name
    direction: Direction
    p2p_uv: NonNegFloat = Field(description="Peak-to-peak amplitude in the analysis window (µV).")
    onset_latency_ms: NonNegFloat | None = Field(description="Null when no response is present.")
    peak_latency_ms: NonNegFloat | None
    area_uv_ms: NonNegFloat = Field(description="Rectified area in the analysis window (µV·ms).")
    n_phases: Annotated[int, Field(ge=0, le=64)]
    noise_uv: NonNegFloat = Field(description="RMS in the pre-stimulus window (µV).")
    snr: NonNegFloat | None = Field(description="p2p / (2·√2·noise); null when noise is 0.")
    present: bool
    pct_of_baseline: NonNegFloat | None = Field(description="Null before a baseline exists.")
    rejected: bool = Field(description="Not measured as a response: saturated, diathermy, gap, NaN.")
    reject_reason: ShortText | None
    stage: Stage | None
    assessment: Assessment = Field(
        description="present | absent | not_assessable | rejected: whether this sweep counts for the course "
        "(only present and absent do)."
    )
    assessment_reason: ShortText | None = Field(
        description="Why not_assessable ('noise_too_high', 'stimulus_unconfirmed', 'direct_response', "
        "'intensity_below_baseline') or rejected (the reject_reason); null for present and absent."
    )
    detection_limit_uv: NonNegFloat | None = Field(
        description="Smallest peak-to-peak that would have counted as present at this sweep's noise "
        "(max of present_noise_factor x noise and present_floor_uv); null when not measured."
    )
    stimulus_confirmed: bool | None = Field(
        description="The stimulus was seen to reach the nerve (artifact, direct response of the stimulated "
        "branch's muscle, or the AMR itself); null when the sweep could not be read."
    )


class AmrMeasurement(AmrMeasurementBody, Message):
    type: Literal["amr_measurement"]
    session_id: SessionId


class AmrStateBody(Body):
    """The body of `amr_state` (the message: `AmrState`)."""

    TOPIC: ClassVar[str] = "amr_state"
    channel: Name
    direction: Direction
    state: AmrStateName
    previous_state: AmrStateName | None
    stage: Stage | None
    stimulus_index: Count
    pct_of_baseline: NonNegFloat | None
    since_stimulus_index: Count | None = Field(
        default=None,
        description="For `disappeared`: the first sweep of the absent run this state confirms (when the AMR "
        "went, not when it became sure); null for the other states.",
    )
    since_sample_index: Count | None = Field(default=None, description="That sweep's stimulus sample.")
    since_stage: Stage | None = Field(default=None, description="The stage that sweep was recorded in.")


class AmrState(AmrStateBody, Message):
    type: Literal["amr_state"]
    session_id: SessionId


class AmrCourseBody(Body):
    """The body of `amr_course` (the message: `AmrCourse`)."""

    TOPIC: ClassVar[str] = "amr_course"
    course: Course
    baseline_uv: NonNegFloat | None = Field(
        description="Preoperative AMR amplitude handed to the predictor (median over the baseline)."
    )
    final_pct_of_baseline: NonNegFloat | None
    disappeared_at_stage: Stage | None
    per_channel: Annotated[dict[Name, ScalarMap], Field(max_length=256)]


class AmrCourse(AmrCourseBody, Message):
    """The session's AMR course, published at `end` (and when recomputed)."""

    type: Literal["amr_course"]
    session_id: SessionId


class BaselineBody(Body):
    """The body of `baseline` (the message: `Baseline`)."""

    TOPIC: ClassVar[str] = "baseline"
    channel: Name
    direction: Direction
    baseline_uv: NonNegFloat
    n_sweeps: Count
    amr_amplitude_uv: NonNegFloat = Field(
        description="The session-level preoperative AMR amplitude (max over channels so far)."
    )


class Baseline(BaselineBody, Message):
    """The baseline amplitude once established (feeds the predictor's amr_amplitude_uv)."""

    type: Literal["baseline"]
    session_id: SessionId


# --------------------------------------------------------------------------- #
# Predictor output


class PredictionBody(Body):
    """The body of `prediction` (the message: `Prediction`)."""

    TOPIC: ClassVar[str] = "prediction"
    probability: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    band: Band
    cutoff_low: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    cutoff_high: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    model_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    synthetic: bool = Field(description="The model was trained on a synthetic cohort.")
    notice: ShortText | None = Field(description="'synthetic — not for clinical use' when synthetic.")
    inputs: ScalarMap
    extrapolated: Annotated[list[Name], Field(max_length=16)] = Field(
        description="Inputs outside the range the model was trained on (the model card's training_range): "
        "the band is not trusted where this is not empty."
    )


class Prediction(PredictionBody, Message):
    type: Literal["prediction"]
    session_id: SessionId


class DecisionBody(Body):
    """The body of `decision` (the message: `Decision`)."""

    TOPIC: ClassVar[str] = "decision"
    decision_id: Annotated[int, Field(ge=1)]
    kind: DecisionKind
    priority: Priority
    rationale: Text = Field(description="One sentence a surgeon understands.")
    evidence: ScalarMap
    supersedes: Annotated[int, Field(ge=1)] | None = Field(
        description="decision_id of the earlier decision this one replaces."
    )
    provisional: bool = Field(
        description="True for status while the surgeon is still working (kind 'evaluating', before "
        "`decompression_complete`); false for a verdict."
    )
    synthetic: bool = Field(description="The model behind this decision was trained on a synthetic cohort.")
    notice: ShortText | None = Field(description="'synthetic — not for clinical use' when synthetic.")


class Decision(DecisionBody, Message):
    type: Literal["decision"]
    session_id: SessionId


# --------------------------------------------------------------------------- #
# Service health


class AlarmBody(Body):
    """The body of `alarm` (the message: `Alarm`)."""

    TOPIC: ClassVar[str] = "alarm"
    kind: AlarmKind
    priority: AlarmPriority
    state: AlarmState
    message: Text
    source: Name = Field(description="Service that detected the condition.")
    alarm_key: ShortText = Field(description="Stable key pairing a raise with its clear.")


class Alarm(AlarmBody, Message):
    type: Literal["alarm"]


class AlarmAckBody(Body):
    """The body of `alarm_ack` (the message: `AlarmAck`)."""

    TOPIC: ClassVar[str] = "alarm_ack"
    alarm_key: ShortText = Field(description="The `alarm_key` of the alarm acknowledged.")
    operator: Name | None = Field(description="Who acknowledged it, as typed on the page; null if not given.")
    note: ShortText | None


class AlarmAck(AlarmAckBody, Message):
    """An operator acknowledged an alarm on the monitor page (it stays raised
    until its source clears it; the acknowledgement is archived)."""

    type: Literal["alarm_ack"]


class SweepDisplayBody(Body):
    """The body of `sweep_display` (the message: `SweepDisplay`)."""

    TOPIC: ClassVar[str] = "sweep_display"
    stimulus_index: Count
    channel: Name
    direction: Direction
    t0_ms: Annotated[float, Field(ge=-1000.0, le=1000.0, allow_inf_nan=False)]
    dt_ms: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)] = Field(
        description="Time between consecutive values (half a display bin: each bin gives a min and a max).")
    values: Annotated[list[FiniteFloat | None], Field(max_length=8192)] = Field(
        description="µV, rounded to resolution_uv; null where there is no data.")
    resolution_uv: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)]


class SweepDisplay(SweepDisplayBody, Message):
    """One display-ready sweep of one channel: the monitor's peak-detect decimation of the raw signal around a
    stimulus (each display bin's minimum and maximum in time order, so the drawn peak-to-peak is the raw one),
    published by the cart's monitor with `--publish-sweeps` for remote readers (the hub), who then never pull
    the 20 kHz frames. values[k] is at t0_ms + k·dt_ms from the stimulus; null where there is no data (the
    blanked stimulus artifact, a gap)."""

    type: Literal["sweep_display"]


class ReaderNoteBody(Body):
    """The body of `reader_note` (the message: `ReaderNote`)."""

    TOPIC: ClassVar[str] = "reader_note"
    reader: Name = Field(description="The remote reader: the name of its authorized CURVE key on the cart "
                         "(or 'room' for a note written in the room to the reader).")
    direction: Literal["to_room", "to_reader"] = Field(
        description="'to_room': from the remote reader; 'to_reader': from the room's monitor to the reader.")
    kind: Literal["note", "watching", "left", "link_lost", "link_restored"] = Field(
        description="A note, or the presence log: the reader started ('watching') or stopped ('left') "
        "watching the room; or the cart's own word on the link (published by the acquirer, not asked for by "
        "the reader): 'link_lost' when a watching reader has not been heard for the acquirer's "
        "`--reader-lost-s` (its view has not been live since `last_heard_utc`), 'link_restored' when it is "
        "heard again.")
    text: ShortText | None = Field(description="The note (null for presence).")
    last_heard_utc: AwareDatetime | None = Field(
        default=None, description="For 'link_lost' (and only then): the last time the cart heard from the "
        "reader, where its presence interval ends.")

    @field_validator("last_heard_utc")
    @classmethod
    def _heard_utc(cls, v: _dt.datetime | None) -> _dt.datetime | None:
        if v is not None and v.utcoffset() != _dt.timedelta(0):
            raise ValueError(f"must be in UTC (offset +00:00 or 'Z'); got offset {v.utcoffset()}")
        return v

    @model_validator(mode="after")
    def _heard_only_when_lost(self) -> ReaderNoteBody:
        if (self.kind == "link_lost") != (self.last_heard_utc is not None):
            raise ValueError("last_heard_utc: required when kind is 'link_lost' and null otherwise; got "
                             f"{self.last_heard_utc} with kind {self.kind!r}")
        return self


class ReaderNote(ReaderNoteBody, Message):
    """A remote reader (the hub, `amrwatch hub`) or the room wrote to the other side, or a reader started or
    stopped watching the room. Published by the acquirer when the reader's request reaches the control socket,
    so it is archived with the session; `reader` is the name of the reader's CURVE key on the cart (the
    authenticated identity), never a name typed by the client."""

    type: Literal["reader_note"]


class ServiceSettingsBody(Body):
    """The body of `service_settings` (the message: `ServiceSettings`)."""

    TOPIC: ClassVar[str] = "service_settings"
    service: Name = Field(description="Whose settings: 'analyzer' or 'predictor'.")
    settings: SettingsMap = Field(description="Every setting by name, as JSON values.")
    settings_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the settings as canonical UTF-8 JSON (sorted keys, no spaces, "
        "non-ASCII unescaped): equal hashes, equal settings."
    )
    platform: ScalarMap = Field(
        description="What the numbers are computed on: python, numpy, scipy, numba, onnxruntime versions, "
        "machine and cpu (float results are exact only on the same platform)."
    )

    @classmethod
    def body_for(cls, service: str, settings: dict[str, Any], platform: dict[str, Any]) -> dict[str, Any]:
        """The body of the message announcing `settings` (JSON values) of `service`."""
        return {"service": service, "settings": settings, "settings_sha256": cls.digest(settings),
                "platform": platform}

    @staticmethod
    def digest(settings: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()

    @model_validator(mode="after")
    def _hash_matches(self) -> ServiceSettingsBody:
        got = self.digest(self.settings)
        if got != self.settings_sha256:
            raise ValueError(f"settings_sha256 {self.settings_sha256} is not the SHA-256 of the settings "
                             f"({got})")
        return self


class ServiceSettings(ServiceSettingsBody, Message):
    """The settings a service analyses a session with, sent when it takes the session up.

    Archived with the session, so that an audit re-run (`amrwatch verify`,
    `amrwatch analyze` of the archive) uses the settings the session ran
    with rather than whatever the defaults are on the auditor's machine."""

    type: Literal["service_settings"]
    session_id: SessionId


class HeartbeatBody(Body):
    """The body of `heartbeat` (the message: `Heartbeat`)."""

    TOPIC: ClassVar[str] = "heartbeat"
    service: Name
    version: ShortText
    status: Literal["ok", "degraded", "starting", "stopping"]
    uptime_s: NonNegFloat
    interval_s: Annotated[float, Field(gt=0.0, le=60.0, allow_inf_nan=False)]
    active_alarms: Annotated[list[ShortText], Field(max_length=64)]
    info: ScalarMap


class Heartbeat(HeartbeatBody, Message):
    type: Literal["heartbeat"]


MESSAGE_TYPES: tuple[type[Message], ...] = (
    SessionStart,
    SessionEnd,
    EmgFrame,
    Stimulus,
    SimTruth,
    StageMarker,
    Factors,
    AmrMeasurement,
    AmrState,
    AmrCourse,
    Baseline,
    Prediction,
    Decision,
    Alarm,
    AlarmAck,
    SweepDisplay,
    ReaderNote,
    ServiceSettings,
    Heartbeat,
)
BY_TYPE: dict[str, type[Message]] = {cls.TOPIC: cls for cls in MESSAGE_TYPES}
#: Each message type's body class (the message class minus the envelope).
BODY_BY_TYPE: dict[str, type[Body]] = {
    cls.TOPIC: next(b for b in cls.__mro__ if b.__name__ == f"{cls.__name__}Body") for cls in MESSAGE_TYPES
}


def validate_body(type_: str, body: Mapping[str, Any], *, strict: bool = True) -> Body:
    """The body of a `type_` message, checked on its own (no envelope needed).

    Raises KeyError for an unknown type and pydantic's ValidationError naming each bad field
    (`codec.describe(err, BODY_BY_TYPE[type_])` words it with the allowed range). `strict=False` accepts
    what JSON cannot spell (a date as text); the wire itself is always strict."""
    return BODY_BY_TYPE[type_].model_validate(body, strict=strict)


def message_of(body: Body, **envelope: Any) -> Message:
    """The message carrying `body` with the given envelope (validated as a whole; `type` and
    `schema_version` are filled in)."""
    cls = BY_TYPE[body.TOPIC]
    return cls(type=cls.TOPIC, schema_version=SCHEMA_VERSION, **envelope, **body.fields())


_P = ParamSpec("_P")
_B = TypeVar("_B", bound=Body)


def unchecked(cls: Callable[_P, _B]) -> Callable[_P, _B]:
    """`cls`'s constructor without validation, for an engine's hot path.

    The engine builds a body per measurement; pydantic's validation costs several times what the
    engine's own bookkeeping does, and the publisher validates every message again when it stamps the
    envelope, so the analyzer would pay twice (`model_construct`, the official way round, is slower than
    validating). Type checkers see `cls`'s own signature (field names and types are checked statically);
    at run time the values are stored as given, defaults filled in (give every field, in the model's
    order, for the fast path: the JSON dump follows the stored order). Offline consumers that need a
    checked body call `validate_body(body.TOPIC, body.fields())`; tests check that the engines' bodies
    pass it unchanged. A missing or unknown field name is still refused (TypeError), as the
    constructor would."""
    model = cast("type[_B]", cls)
    names = tuple(model.model_fields)
    known = frozenset(names)
    every = set(names)
    defaults = {name: f.default for name, f in model.model_fields.items() if not f.is_required()}
    n = len(names)
    new, put_dict = model.__new__, object.__setattr__
    # BaseModel keeps these three in slots: their descriptors set them without going through __setattr__.
    slots = BaseModel.__dict__
    put_set = slots["__pydantic_fields_set__"].__set__
    put_extra = slots["__pydantic_extra__"].__set__
    put_private = slots["__pydantic_private__"].__set__

    def make(*args: _P.args, **values: _P.kwargs) -> _B:
        if args:
            raise TypeError(f"{model.__name__}: fields are given by name")
        given: dict[str, Any] = values
        if len(values) == n and values.keys() <= known:  # every field given: the fast path
            fields_set = every.copy()
        else:  # defaults to fill in, or a wrong name
            if not values.keys() <= known:
                raise TypeError(f"{model.__name__}: unknown field(s) {sorted(set(values) - known)}")
            try:  # in the model's field order, as validation stores them (the JSON dump follows it)
                given = {f: values[f] if f in values else defaults[f] for f in names}
            except KeyError as err:
                raise TypeError(f"{model.__name__}: required field {err} is missing") from None
            fields_set = set(values)
        obj = new(model)
        put_dict(obj, "__dict__", given)
        put_set(obj, fields_set)
        put_extra(obj, None)
        put_private(obj, None)
        return obj

    make.__name__ = make.__qualname__ = f"unchecked_{model.__name__}"
    return make

#: What `amrwatch events` shows by default: everything but raw signal and truth.
EVENT_TYPES: tuple[str, ...] = tuple(
    t for t in BY_TYPE if t not in ("emg_frame", "sim_truth", "heartbeat")
)


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
