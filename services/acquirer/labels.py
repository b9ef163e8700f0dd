"""Channel labels → montage, for sources that only give names (EDF, LSL).

A label names its direction explicitly (`MENT-ZYG`, `OOCUL_MAR`) or names a
muscle we know; anything else is carried along but not analysed.
"""

from __future__ import annotations

import re

from ...proto.messages import ChannelInfo, Montage

#: muscle keyword → (muscle, direction whose lateral spread it records)
KNOWN_MUSCLES: dict[str, tuple[str, str]] = {
    "ment": ("mentalis", "ZYG"),
    "mentalis": ("mentalis", "ZYG"),
    "ooris": ("orbicularis_oris", "ZYG"),
    "orbicularis_oris": ("orbicularis_oris", "ZYG"),
    "oocul": ("orbicularis_oculi", "MAR"),
    "orbicularis_oculi": ("orbicularis_oculi", "MAR"),
}
BRANCH = {"ZYG": "zygomatic", "MAR": "marginal_mandibular"}
TRIGGER_LABEL = re.compile(r"^(trig|stim|trigger)([_\- ]?(zyg|mar))?$", re.IGNORECASE)
SAMPLE_INDEX_LABELS = {"sample_index", "sampleindex"}


def safe_name(label: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.:\-]", "_", label.strip())[:64]
    return name or "CH"


def channel_info(label: str) -> ChannelInfo:
    name = safe_name(label)
    low = label.strip().lower().replace(" ", "_")
    if low in SAMPLE_INDEX_LABELS:
        return ChannelInfo(name=name, muscle="none", direction=None, kind="sample_index", unit="index")
    if TRIGGER_LABEL.match(label.strip()):
        return ChannelInfo(name=name, muscle="none", direction=None, kind="trigger", unit="V")
    direction = None
    muscle = "unknown"
    m = re.search(r"(zyg|mar)\b", low)
    for key, (mus, d) in KNOWN_MUSCLES.items():
        if low.startswith(key):
            muscle, direction = mus, d
            break
    if m:
        direction = m.group(1).upper()
    return ChannelInfo(name=name, muscle=muscle, direction=direction, kind="emg", unit="uV")


def montage_from_labels(labels: list[str], sampling_rate_hz: float) -> Montage:
    channels = [channel_info(lbl) for lbl in labels]
    seen: dict[str, int] = {}
    unique = []
    for c in channels:  # duplicate labels get a suffix rather than being refused
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        unique.append(c if n == 0 else c.model_copy(update={"name": f"{c.name}_{n}"[:64]}))
    directions = sorted({c.direction for c in unique if c.direction}, key=["ZYG", "MAR"].index)
    stimulation = [{"direction": d, "stimulated_branch": BRANCH[d]} for d in directions] or [
        {"direction": "ZYG", "stimulated_branch": "zygomatic"}
    ]
    return Montage(sampling_rate_hz=sampling_rate_hz, channels=unique, stimulation=stimulation)
