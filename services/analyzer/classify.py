"""The session's AMR course, classified at `end` (docs/domain.md, "Measurements and the course").

- never_detected: no channel's AMR was ever confirmed present;
- persisted: at the end, some channel that had an AMR still has it
  (present, diminished or reappeared);
- disappeared_before / _after_decompression: every channel that had an AMR
  ends disappeared; the session's AMR is gone when the last of them went, and
  that moment is compared with the start of decompression (the first
  `decompression` or later surgical stage marker, by sample index). Without
  any such marker, decompression has not happened yet, so the AMR went before it.

Each channel's entry counts its `not_assessable` sweeps and how many of them
close the session (`not_assessable_at_end`: the state it ends in was last
confirmed that many sweeps before the end — a course that "persisted" through
a dead stimulator or a noisy electrode is not a persistence anyone saw).

The final-to-baseline percentage is the 2025 study's grading (a reduction of
≥ 86.5 % predicted complete resolution): the median of each channel's last
good sweeps over its baseline; the session figure is the largest channel's,
the one that persisted most.
"""

from __future__ import annotations

from typing import Any

from .course import ChannelCourse

#: Stages at or after which the vessel has been (or is being) moved.
DECOMPRESSION_STAGES = ("decompression", "decompression_complete", "closure")


def decompression_start(stages: list[tuple[int, str]]) -> int | None:
    starts = [s for s, name in stages if name in DECOMPRESSION_STAGES]
    return min(starts) if starts else None


def _pct(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return 100.0 * value / baseline


def classify(
    courses: list[ChannelCourse],
    baselines: dict[str, float | None],
    stages: list[tuple[int, str]],
) -> dict[str, Any]:
    """The body of an `amr_course` message."""
    per_channel: dict[str, dict[str, Any]] = {}
    finals: list[float] = []
    for c in courses:
        base = baselines.get(c.channel)
        final = c.final_uv()
        pct = _pct(final, base)
        if pct is not None:
            finals.append(pct)
        gone = c.disappeared_at if c.state == "disappeared" else None
        per_channel[c.channel] = {
            "direction": c.direction,
            "state": c.state,
            "ever_present": c.ever_present,
            "baseline_uv": base,
            "final_uv": final,
            "final_pct_of_baseline": pct,
            "reduction_pct": None if pct is None else 100.0 - pct,
            "disappeared_at_stage": gone.stage if gone else None,
            "disappeared_stimulus_index": gone.stimulus_index if gone else None,
            "n_good": c.n_good,
            "n_rejected": c.n_rejected,
            "n_not_assessable": c.n_not_assessable,
            "not_assessable_at_end": c.not_assessable_run,
        }

    with_amr = [c for c in courses if c.ever_present]
    disappeared_at_stage = None
    if not with_amr:
        course = "never_detected"
    elif any(c.state != "disappeared" for c in with_amr):
        course = "persisted"
    else:
        last = max((c.disappeared_at for c in with_amr if c.disappeared_at is not None),
                   key=lambda m: m.sample_index)
        disappeared_at_stage = last.stage
        start = decompression_start(stages)
        before = start is None or last.sample_index < start
        course = "disappeared_before_decompression" if before else "disappeared_after_decompression"

    known = [b for b in baselines.values() if b is not None]
    return {
        "course": course,
        "baseline_uv": max(known) if known else None,
        "final_pct_of_baseline": max(finals) if finals else None,
        "disappeared_at_stage": disappeared_at_stage,
        "per_channel": per_channel,
    }
