"""Text annotations ↔ stimuli and stage markers (EDF+ annotations, LSL markers).

The same vocabulary is written by `amrwatch export edf`, so an exported
session replays through `--source edf:` with its stimuli and stages.
"""

from __future__ import annotations

import re

from ...proto.messages import STAGE_ORDER

STIM_RE = re.compile(
    r"^(?:stim(?:ulus)?[ :_-]*)?(ZYG|MAR)(?:[ ,]+(?P<ma>[0-9.]+)\s*mA)?(?:[ ,]+(?P<ms>[0-9.]+)\s*ms)?$",
    re.IGNORECASE,
)
#: "stage decompression_complete", "Decompression complete", "stage: dural-opening", "CSF release"...
STAGE_RE = re.compile(r"^(?:stage[ :_-]+)?(?P<stage>[a-z][a-z_ -]*[a-z])$", re.IGNORECASE)


def stim_text(direction: str, intensity_ma: float | None = None, width_ms: float | None = None) -> str:
    parts = [f"stim {direction}"]
    if intensity_ma is not None:
        parts.append(f"{intensity_ma:g}mA")
    if width_ms is not None:
        parts.append(f"{width_ms:g}ms")
    return " ".join(parts)


def stage_text(stage: str) -> str:
    return f"stage {stage}"


def parse(text: str) -> tuple[str, dict] | None:
    """('stimulus', {...}) or ('stage', {...}) or None for anything else."""
    t = text.strip()
    m = STIM_RE.match(t)
    if m:
        return "stimulus", {
            "direction": m.group(1).upper(),
            "intensity_ma": float(m.group("ma")) if m.group("ma") else None,
            "width_ms": float(m.group("ms")) if m.group("ms") else None,
        }
    m = STAGE_RE.match(t)
    if m:
        stage = re.sub(r"[ _-]+", "_", m.group("stage").lower())
        if stage in STAGE_ORDER:
            return "stage", {"stage": stage}
    return None
