"""Text annotations ↔ stimuli and stage markers (EDF+ annotations, LSL markers).

The same vocabulary is written by `amrwatch export edf`, so an exported
session replays through `--source edf:` with its stimuli and stages.
"""

from __future__ import annotations

import re

from ...proto.messages import STAGE_ORDER

#: The grammar of stimulus markers (README, "Stimulus and stage markers"). Tokens in any order, separated
#: by spaces, commas, colons, hyphens or underscores: the direction (`ZYG` / `MAR`, required), the word
#: `stim`/`stimulus` (optional), an intensity `<number> mA` and a width `<number> ms` (or `us`/`µs`).
#: Nothing else may be left over: `ZYG stim 15 mA`, `MAR 0.2ms 18mA`, `Stim ZYG` parse; `ZYG baseline
#: check` does not (it is listed as not understood, never guessed at).
_TOKEN = re.compile(
    r"(?P<dir>\b(?:zyg|mar)\b)|(?P<word>\bstim(?:ulus)?\b)|(?P<ma>\d+(?:\.\d+)?)\s*ma\b|"
    r"(?P<ms>\d+(?:\.\d+)?)\s*ms\b|(?P<us>\d+(?:\.\d+)?)\s*[uµμ]s\b|(?P<sep>[\s,:;_\-]+)",
    re.IGNORECASE,
)
#: What some readers put before a marker's text (MNE's BrainVision reader: `Comment/…`, `Stimulus/…`).
_TYPE_PREFIX = re.compile(r"^(?:comment|stimulus|response|marker|markers|annotation|event)/", re.IGNORECASE)
STAGE_RE = re.compile(r"^(?:stage(?=[\s:_\-])[\s:_\-]*)?(?P<stage>[a-z][a-z _\-]*?)[\s.]*$", re.IGNORECASE)
#: Other spellings of stages that systems write.
STAGE_SYNONYMS = {
    "decompression_completed": "decompression_complete",
    "decompression_done": "decompression_complete",
    "decompression_finished": "decompression_complete",
    "end_of_decompression": "decompression_complete",
    "dura_opening": "dural_opening",
    "dura_opened": "dural_opening",
    "csf": "csf_release",
    "cerebellar_retraction": "retraction",
    "arachnoid": "arachnoid_dissection",
    "closing": "closure",
    "start": "baseline",
}


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
    t = _TYPE_PREFIX.sub("", text.strip()).strip()
    stim = _parse_stimulus(t)
    if stim is not None:
        return "stimulus", stim
    m = STAGE_RE.match(t)
    if m:
        name = re.sub(r"[\s\-]+", "_", m.group("stage").strip().lower())
        name = STAGE_SYNONYMS.get(name, name)
        if name in STAGE_ORDER:
            return "stage", {"stage": name}
    return None


def _parse_stimulus(t: str) -> dict | None:
    pos, direction, ma, ms = 0, None, None, None
    while pos < len(t):
        m = _TOKEN.match(t, pos)
        if m is None:
            return None  # something that is not part of the grammar: not a stimulus
        pos = m.end()
        if m.group("dir"):
            if direction is not None:
                return None
            direction = m.group("dir").upper()
        elif m.group("ma"):
            ma = float(m.group("ma"))
        elif m.group("ms"):
            ms = float(m.group("ms"))
        elif m.group("us"):
            ms = float(m.group("us")) / 1000.0
    if direction is None:
        return None
    if (ma is not None and not 0.0 <= ma <= 100.0) or (ms is not None and not 0.0 <= ms <= 5.0):
        return None  # outside what a stimulus message may carry (0-100 mA, 0-5 ms): listed, not used
    return {"direction": direction, "intensity_ma": ma, "width_ms": ms}
