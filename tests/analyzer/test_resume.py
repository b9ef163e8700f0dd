"""An analyzer restarted mid-session takes the session up from what it published (AnalyzerEngine.resume).

The engine is run over the first part of a simulated session, "killed", and a
new engine is resumed from the messages the first one published (as the
acquirer's snapshot holds them) and fed the rest, the sweeps during the
outage lost. Its course must be the uninterrupted run's; without the
published state it must say nothing rather than a baseline or a course.
"""

from __future__ import annotations

import pytest

from amrwatch.services.analyzer.baseline import BaselineTracker
from amrwatch.services.analyzer.course import ChannelCourse
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.analyzer.settings import AnalyzerSettings

from .streams import Session, feed, of_type, simulate

FRAME = 100


def run(engine: AnalyzerEngine, s: Session, lo: int, hi: int, *, end: bool) -> list:
    """Frames, stages and stimuli of samples [lo, hi) in the acquirer's order."""
    out: list = []
    for pos in range(lo, hi, FRAME):
        stop = min(hi, pos + FRAME)
        for idx, stage in s.stages:
            if pos <= idx < stop:
                out += engine.on_stage(stage, idx)
        out += engine.on_frame(pos, s.samples[:, pos:stop], s.fs)
        for k, idx, d in s.stimuli:
            if pos <= idx < stop:
                out += engine.on_stimulus(k, idx, idx / s.fs, d)
    if end:
        out += engine.on_end()
    return out


def published_state(outputs: list, s: Session, upto: int):
    stages = [(idx, st) for idx, st in s.stages if idx < upto]
    baselines = {f["channel"]: (f["baseline_uv"], f["n_sweeps"]) for f in of_type(outputs, "baseline")}
    states = {f["channel"]: (f["state"], f["stimulus_index"], f["stage"], f["since_stimulus_index"],
                             f["since_sample_index"], f["since_stage"]) for f in of_type(outputs, "amr_state")}
    return stages, baselines, states


@pytest.fixture(scope="module")
def session() -> Session:
    return simulate(seed=3, scenario="disappears-after-decompression", time_scale=0.2)


def after(s: Session, stage: str, seconds: float) -> int:
    start = next(idx for idx, st in s.stages if st == stage)
    return start + int(seconds * s.fs)


@pytest.fixture(scope="module")
def whole(session) -> list:
    return feed(AnalyzerEngine(session.montage), session, [FRAME])


def confirmed_at(s: Session, whole: list) -> int:
    """Half a second after the last channel's disappearance was published."""
    gone = [f for f in of_type(whole, "amr_state") if f["state"] == "disappeared"]
    last_gone = max(f["stimulus_index"] for f in gone)
    return next(idx for k, idx, _ in s.stimuli if k == last_gone) + int(0.5 * s.fs)


def test_restart_after_confirmation_keeps_baseline_state_and_course(session, whole):
    s = session
    (course,) = of_type(whole, "amr_course")
    assert course["course"] == "disappeared_after_decompression"
    kill_at = confirmed_at(s, whole)
    first = AnalyzerEngine(s.montage)
    before = run(first, s, 0, kill_at, end=False)
    assert {f["channel"] for f in of_type(before, "amr_state") if f["state"] == "disappeared"}
    restart_at = (kill_at + int(2.0 * s.fs)) // FRAME * FRAME  # 2 s of sweeps lost while it restarted
    second = AnalyzerEngine(s.montage)
    unknown = second.resume(*published_state(before, s, restart_at))
    assert unknown == [] and not second.course_unknown
    rest = run(second, s, restart_at, s.samples.shape[1], end=True)
    assert of_type(rest, "baseline") == []  # the baselines are taken back, not made again
    assert all(f["state"] != "present" or f["previous_state"] is not None for f in of_type(rest, "amr_state"))
    (resumed,) = of_type(rest, "amr_course")
    for key in ("course", "baseline_uv", "disappeared_at_stage"):
        assert resumed[key] == course[key], key
    for ch, pc in course["per_channel"].items():
        got = resumed["per_channel"][ch]
        for key in ("state", "ever_present", "baseline_uv", "disappeared_at_stage"):
            assert got[key] == pc[key], (ch, key)
    # Measurements after the restart are judged against the session's baseline, as before.
    tail = {(f["stimulus_index"], f["channel"]): f for f in of_type(whole, "amr_measurement")}
    for f in of_type(rest, "amr_measurement"):
        assert f["pct_of_baseline"] == tail[(f["stimulus_index"], f["channel"])]["pct_of_baseline"]


def test_restart_without_state_publishes_no_baseline_and_no_course(session, whole):
    s = session
    restart_at = confirmed_at(s, whole) // FRAME * FRAME
    e = AnalyzerEngine(s.montage)
    unknown = e.resume([], {}, {}, known=False)
    assert unknown == sorted(e.courses) and e.course_unknown
    rest = run(e, s, restart_at, s.samples.shape[1], end=True)
    assert of_type(rest, "baseline") == []
    assert all(f["pct_of_baseline"] is None for f in of_type(rest, "amr_measurement"))
    assert len(of_type(rest, "amr_measurement")) > 20
    # The engine still classifies (the service withholds the message while course_unknown): it would be the
    # wrong, confident answer the restart used to publish.
    assert of_type(rest, "amr_course")[0]["course"] == "never_detected"


def test_restart_past_the_baseline_stage_without_a_published_baseline_is_unknown(session):
    s = session
    restart_at = after(s, "incision", 1.0) // FRAME * FRAME
    e = AnalyzerEngine(s.montage)
    unknown = e.resume([(idx, st) for idx, st in s.stages if idx < restart_at], {}, {})
    assert unknown == sorted(e.courses) and e.course_unknown
    assert of_type(run(e, s, restart_at, s.samples.shape[1], end=True), "baseline") == []


def test_restart_within_the_baseline_stage_goes_on_collecting(session):
    s = session
    restart_at = after(s, "baseline", 0.5) // FRAME * FRAME
    e = AnalyzerEngine(s.montage)
    assert e.resume([(idx, st) for idx, st in s.stages if idx < restart_at], {}, {}) == []
    bases = of_type(run(e, s, restart_at, s.samples.shape[1], end=True), "baseline")
    assert {f["channel"] for f in bases} == set(e.courses) and all(f["baseline_uv"] > 0 for f in bases)


def test_resume_methods_check_what_they_are_given():
    settings = AnalyzerSettings()
    b = BaselineTracker(settings, ["MENT"])
    with pytest.raises(ValueError, match="ORIS"):
        b.resume("ORIS", 10.0)
    with pytest.raises(ValueError, match=">= 0"):
        b.resume("MENT", -1.0)
    b.resume("MENT", None)
    assert b.add("MENT", "closure", 50.0, True) is None and b.finish("MENT") is None and b.value("MENT") is None
    c = ChannelCourse("MENT", "ZYG", settings)
    with pytest.raises(ValueError, match="gone"):
        c.resume("gone")
