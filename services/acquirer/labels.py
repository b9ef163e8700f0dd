"""Channel labels → montage, for sources that only give names (EDF, LSL, other files).

Two ways to say what a channel is:

- a **montage file** (`--montage FILE`, proto/montage.py): the recording's
  owner states each channel's muscle, side and what it records; it wins;
- otherwise a **tolerant recogniser** of the spellings clinical systems
  export (`L Mentalis`, `R Orb Oris`, `O.Oculi`, `OOc`, `Ment.`, `MENT-ZYG`…),
  with the table of what it knows in the README. A label that could mean two
  muscles (`OO`, `Orb`) is not guessed.

Nothing is silent: every channel comes back with `taken_as`, one line saying
what it was taken as and why, which the acquirer logs at session start and
`amrwatch analyze` prints at the top of its output. Only channels that the
analyzer would measure need a voltage unit; any other channel is carried in
the frames with its own unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...proto.messages import ChannelInfo, Montage
from ...proto.montage import LATERAL_SPREAD_MUSCLES, MontageFile

BRANCH = {"ZYG": "zygomatic", "MAR": "marginal_mandibular"}

#: Recognised muscle spellings, tried in order on the label with its side and direction taken off and
#: with case, dots, spaces, hyphens and underscores removed. (muscle, pattern, what the README shows)
MUSCLE_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("mentalis", re.compile(r"^(ment|mentalis|mnt)$"), "Ment, Ment., Mentalis, MNT"),
    ("orbicularis_oris", re.compile(r"^((orb(icularis)?|o{1,2})oris|oor|oori)$"),
     "OOris, O.Oris, OOr, Orb Oris, OrbOris, Orbicularis oris"),
    ("orbicularis_oculi", re.compile(r"^((orb(icularis)?|o{1,2})ocul(i)?|ooc|oc)$"),
     "OOculi, O.Oculi, OOcul, OOc, Orb Oculi, OrbOculi, Orbicularis oculi"),
)
#: Spellings that name more than one muscle: never guessed.
AMBIGUOUS = re.compile(r"^(o|oo|orb|orbicularis|orbic)$")
#: Side prefixes or suffixes (`L Mentalis`, `Lt-OOc`, `Mentalis R`, `Left Ment`).
SIDE = re.compile(r"^(?P<side>left|right|lt|rt|l|r)[\s._\-]+|[\s._\-]+(?P<side2>left|right|lt|rt|l|r)$",
                  re.IGNORECASE)
#: An explicit direction written into the label (`MENT-ZYG`, `OOCUL_MAR`, `EMG1 ZYG`).
DIRECTION_SUFFIX = re.compile(r"[\s._\-]*(?P<dir>zyg|mar)$", re.IGNORECASE)
TRIGGER_LABEL = re.compile(r"^(trig|stim|trigger)([_\- ]?(zyg|mar))?$", re.IGNORECASE)
SAMPLE_INDEX_LABELS = {"sample_index", "sampleindex"}
#: Labels of auxiliary channels that are never EMG whatever their unit.
AUX_LABEL = re.compile(r"^(status|event|events|counter|count|temp|temperature|marker|markers|annotations?|"
                       r"ecg|ekg|resp|spo2|battery|accel.*|gyro.*|aux.*)$", re.IGNORECASE)
#: Physical units (lower case) that make a channel a voltage the analyzer could measure.
VOLTAGE_UNITS = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}

_SIDES = {"l": "left", "lt": "left", "left": "left", "r": "right", "rt": "right", "right": "right"}


class MontageError(ValueError):
    """A montage that cannot be used (bad file, or no channel to analyse)."""


def safe_name(label: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.:\-]", "_", label.strip())[:64]
    return name or "CH"


@dataclass(frozen=True)
class Parsed:
    side: str | None
    direction: str | None
    core: str


def parse_label(label: str) -> Parsed:
    """Split a label into side, explicit direction and the compact muscle part."""
    text = label.strip()
    side = None
    m = SIDE.search(text)
    if m and (m.group("side") or m.group("side2")):
        rest = (text[:m.start()] + text[m.end():]).strip()
        if rest:  # a bare "L" is not a side with nothing after it
            side = _SIDES[(m.group("side") or m.group("side2")).lower()]
            text = rest
    direction = None
    d = DIRECTION_SUFFIX.search(text)
    if d and d.start() > 0:
        direction = d.group("dir").upper()
        text = text[:d.start()]
    core = re.sub(r"[\s._\-]", "", text).lower()
    return Parsed(side, direction, core)


def recognise(label: str, unit: str = "uV") -> ChannelInfo:
    """One channel by the label rules; `taken_as` says what and why."""
    name = safe_name(label)
    raw = label.strip()
    low = raw.lower().replace(" ", "_")
    extra = {"label": raw[:64] if raw != name else None}
    if low in SAMPLE_INDEX_LABELS:
        return ChannelInfo(name=name, muscle="none", direction=None, kind="sample_index", unit="index",
                           taken_as="sample index (label)", **extra)
    if TRIGGER_LABEL.match(raw):
        return ChannelInfo(name=name, muscle="none", direction=None, kind="trigger", unit=_unit(unit, "V"),
                           taken_as="stimulus trigger (label)", **extra)
    if AUX_LABEL.match(raw):
        return ChannelInfo(name=name, muscle="none", direction=None, kind="aux", unit=_unit(unit),
                           taken_as="auxiliary: carried and archived, not analysed (label)", **extra)
    if unit.strip().lower() not in VOLTAGE_UNITS:
        return ChannelInfo(name=name, muscle="none", direction=None, kind="aux", unit=_unit(unit),
                           taken_as=f"auxiliary: unit {unit.strip()!r} is not a voltage; carried, not analysed",
                           **extra)
    p = parse_label(raw)
    if AMBIGUOUS.match(p.core):
        return ChannelInfo(name=name, muscle="unknown", direction=None, kind="emg", unit="uV", side=p.side,
                           taken_as=f"ignored: {raw!r} could be orbicularis oris or oculi; name it in a --montage "
                           "file", **extra)
    for muscle, pattern, _ in MUSCLE_RULES:
        if pattern.match(p.core):
            direction = p.direction or next(d for d, ms in LATERAL_SPREAD_MUSCLES.items() if muscle in ms)
            how = "explicit direction in the label" if p.direction else "usual pairing"
            side = f", {p.side}" if p.side else ""
            return ChannelInfo(name=name, muscle=muscle, direction=direction, kind="emg", unit="uV", side=p.side,
                               taken_as=f"{muscle.replace('_', ' ')}{side}: records {direction} lateral spread "
                               f"(label rule, {how})", **extra)
    if p.direction:
        return ChannelInfo(name=name, muscle="unknown", direction=p.direction, kind="emg", unit="uV", side=p.side,
                           taken_as=f"EMG of an unnamed muscle: records {p.direction} lateral spread (explicit "
                           "direction in the label)", **extra)
    return ChannelInfo(name=name, muscle="unknown", direction=None, kind="emg", unit="uV", side=p.side,
                       taken_as=f"ignored: label {raw!r} names no muscle amrwatch knows; name it in a --montage "
                       "file", **extra)


def _unit(unit: str, default: str = "") -> str:
    u = re.sub(r"[\x00-\x1f]", "", unit.strip())[:16]
    return u or default


def from_file(label: str, spec, unit: str) -> ChannelInfo:
    """One channel as the montage file states it."""
    name = safe_name(label)
    raw = label.strip()
    extra = {"label": raw[:64] if raw != name else None}
    if spec.kind == "sample_index":
        return ChannelInfo(name=name, muscle="none", direction=None, kind="sample_index", unit="index",
                           taken_as="sample index (montage file)", **extra)
    if spec.kind == "trigger":
        what = f"stimulus trigger for {spec.direction}" if spec.direction else "stimulus trigger"
        return ChannelInfo(name=name, muscle="none", direction=None, kind="trigger", unit=_unit(unit, "V"),
                           taken_as=f"{what} (montage file)", **extra)
    if spec.kind == "aux":
        return ChannelInfo(name=name, muscle="none", direction=None, kind="aux", unit=_unit(unit),
                           taken_as="auxiliary: carried and archived, not analysed (montage file)", **extra)
    direction = spec.recorded_direction()
    muscle = spec.muscle if spec.muscle and spec.muscle != "other" else "unknown"
    if direction is not None and unit.strip().lower() not in VOLTAGE_UNITS:
        raise MontageError(f"channel {raw!r}: the montage file has it record {direction} lateral spread, but its "
                           f"unit is {unit.strip()!r}; an analysed channel must be in uV, mV or V")
    side = f", {spec.side}" if spec.side else ""
    what = (f"records {direction} lateral spread" if direction else "not analysed (records: none)")
    return ChannelInfo(name=name, muscle=muscle, direction=direction, kind="emg",
                       unit="uV" if unit.strip().lower() in VOLTAGE_UNITS else _unit(unit),
                       side=spec.side, taken_as=f"{muscle.replace('_', ' ')}{side}: {what} (montage file)", **extra)


def load_montage_file(path: str | Path) -> MontageFile:
    """A montage file (YAML or JSON) → MontageFile; errors name the file and the field."""
    import json

    from pydantic import ValidationError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise MontageError(f"--montage: cannot read {str(p)!r} ({err.strerror or err})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error is reported with the file name
        raise MontageError(f"--montage: {str(p)!r} is not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {err}") from None
    try:
        return MontageFile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise MontageError(f"--montage {str(p)!r}: {where}: {first['msg']} (got {first.get('input')!r}); "
                           "see proto/schemas/montage_file.json") from None


def montage_from_labels(labels: list[str], sampling_rate_hz: float, *, units: list[str] | None = None,
                        montage: MontageFile | None = None, require_analysed: bool = False) -> Montage:
    """The session montage for a recording's channels (in order), by montage file or label rules."""
    units = units or ["uV"] * len(labels)
    if montage is not None:
        listed = {c.label.strip() for c in montage.channels}
        missing = sorted(listed - {lbl.strip() for lbl in labels})
        if missing:
            raise MontageError(f"--montage lists {missing}, which the recording does not have; its channels are "
                               f"{[lbl.strip() for lbl in labels]}")
    channels = []
    for lbl, unit in zip(labels, units):
        spec = montage.find(lbl) if montage is not None else None
        if spec is not None:
            channels.append(from_file(lbl, spec, unit))
        elif montage is not None and montage.unlisted == "ignore":
            kind = "emg" if unit.strip().lower() in VOLTAGE_UNITS else "aux"
            channels.append(ChannelInfo(name=safe_name(lbl), muscle="unknown" if kind == "emg" else "none",
                                        direction=None, kind=kind, unit="uV" if kind == "emg" else _unit(unit),
                                        label=lbl.strip()[:64] if lbl.strip() != safe_name(lbl) else None,
                                        taken_as="ignored: not listed in the montage file (unlisted: ignore)"))
        else:
            channels.append(recognise(lbl, unit))
    seen: dict[str, int] = {}
    unique = []
    for c in channels:  # duplicate labels get a suffix rather than being refused
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        unique.append(c if n == 0 else c.model_copy(update={"name": f"{c.name}_{n}"[:64]}))
    directions = sorted({c.direction for c in unique if c.direction}, key=["ZYG", "MAR"].index)
    if require_analysed and not directions:
        listing = "; ".join(f"{c.label or c.name}: {c.taken_as}" for c in unique)
        raise MontageError(
            f"no channel of this recording can be analysed ({listing}). Name the channels in a montage file "
            "(--montage FILE; see the README, 'Montage') or relabel them (e.g. MENT, OORIS, OOCUL, or add -ZYG / -MAR)")
    stimulation = [{"direction": d, "stimulated_branch": BRANCH[d]} for d in directions] or [
        {"direction": "ZYG", "stimulated_branch": "zygomatic"}
    ]
    return Montage(sampling_rate_hz=sampling_rate_hz, channels=unique, stimulation=stimulation)


def describe_channels(montage: Montage) -> list[str]:
    """One line per channel: what it was taken as and why (logged at session start, printed by analyze)."""
    width = max(len(c.label or c.name) for c in montage.channels)
    return [f"channel {c.label or c.name:<{width}}  {c.taken_as or _default_taken_as(c)}" for c in montage.channels]


def _default_taken_as(c: ChannelInfo) -> str:
    if c.kind == "emg" and c.direction:
        return f"{c.muscle.replace('_', ' ')}: records {c.direction} lateral spread"
    if c.kind == "emg":
        return "EMG, not analysed"
    return f"{c.kind.replace('_', ' ')} ({c.unit or 'no unit'}), not analysed"
