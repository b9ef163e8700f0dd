"""Course state machine, baseline and session classification, driven with made-up sweeps."""

from __future__ import annotations

from amrwatch.services.analyzer.baseline import BaselineTracker
from amrwatch.services.analyzer.classify import classify
from amrwatch.services.analyzer.course import ChannelCourse, SweepMark
from amrwatch.services.analyzer.settings import AnalyzerSettings

S = AnalyzerSettings()  # K = 5 to disappear, 3 to confirm, diminished below 50 %


def feed(course: ChannelCourse, pattern: str, start: int = 0, stage: str | None = None, pct_low: float = 30.0):
    """P present (full), L present but low, A absent, R rejected; returns [(index, state)] transitions."""
    out = []
    for i, c in enumerate(pattern, start=start):
        if c == "R":
            course.rejected()
            continue
        t = course.update(SweepMark(i, i * 1000, stage), c in "PL", 100.0 if c == "P" else 10.0,
                          pct_low if c == "L" else 100.0)
        if t is not None:
            out.append((i, t.state))
    return out


def test_k_consecutive_rules():
    c = ChannelCourse("MENT", "ZYG", S)
    assert feed(c, "PP") == []
    assert feed(c, "P", start=2) == [(2, "present")]  # third present sweep confirms
    assert feed(c, "AAAAPAAAA", start=3) == []  # an interrupted absence is no disappearance
    assert feed(c, "A", start=12) == [(12, "disappeared")]  # the fifth absent in a row
    assert c.disappeared_at.stimulus_index == 8  # dated to the start of the absent run
    assert feed(c, "PPAPPP", start=13) == [(18, "reappeared")]
    assert feed(c, "LLL", start=19) == [(21, "diminished")]
    assert feed(c, "PPP", start=22) == [(24, "present")]
    assert c.ever_present and c.n_good == 25


def test_rejected_sweeps_neither_extend_nor_break_a_run():
    c = ChannelCourse("MENT", "ZYG", S)
    feed(c, "PPP")
    # Ten seconds of diathermy between absent sweeps: still only 4 good absent sweeps.
    assert feed(c, "AA" + "R" * 10 + "AA", start=3) == []
    assert feed(c, "A", start=20) == [(20, "disappeared")]
    assert c.n_rejected == 10
    c2 = ChannelCourse("MENT", "ZYG", S)
    assert feed(c2, "RRRRRRRRRR") == []  # rejected sweeps alone never change anything
    assert c2.state is None


def test_baseline_from_the_baseline_stage_then_first_n():
    b = BaselineTracker(S, ["MENT", "OOCUL"])
    for v in (100.0, 140.0, 120.0, 900.0):  # median, not mean: one outlier does not move it
        assert b.add("MENT", "baseline", v, True) is None
    est = b.add("MENT", "incision", 50.0, True)
    assert est is not None and est.baseline_uv == 130.0 and est.n_sweeps == 4
    # No baseline stage for OOCUL's sweeps: the first N good sweeps.
    for i in range(S.baseline_first_n - 1):
        assert b.add("OOCUL", None, 200.0 + i, True) is None
    est = b.add("OOCUL", None, 300.0, True)
    assert est is not None and est.n_sweeps == S.baseline_first_n
    assert b.session_amplitude() == max(130.0, est.baseline_uv)


def test_no_amr_at_baseline_means_baseline_zero():
    b = BaselineTracker(S, ["MENT"])
    for v, present in ((12.0, False), (15.0, False), (60.0, True), (11.0, False)):
        b.add("MENT", "baseline", v, present)
    est = b.add("MENT", "incision", 10.0, False)
    assert est.baseline_uv == 0.0 and est.present_fraction == 0.25


def make(pattern: str, stages: list[tuple[int, str]], channel: str = "MENT") -> ChannelCourse:
    c = ChannelCourse(channel, "ZYG", S)
    for i, ch in enumerate(pattern):
        stage = [name for s, name in stages if s <= i * 1000][-1]
        if ch == "R":
            c.rejected()
        else:
            c.update(SweepMark(i, i * 1000, stage), ch == "P", 100.0 if ch == "P" else 5.0, None)
    return c


STAGES = [(0, "baseline"), (5000, "dural_opening"), (10000, "decompression"), (20000, "closure")]


def test_classification():
    base = {"MENT": 100.0, "OOCUL": 100.0}
    after = classify([make("PPPPPPPPPPPPAAAAAAAAAAAA", STAGES)], base, STAGES)
    assert after["course"] == "disappeared_after_decompression"
    assert after["disappeared_at_stage"] == "decompression"
    assert after["per_channel"]["MENT"]["final_pct_of_baseline"] == 5.0
    assert after["per_channel"]["MENT"]["reduction_pct"] == 95.0
    early = classify([make("PPPPPPPAAAAAAAAAAAAAAAA", STAGES)], base, STAGES)
    assert early["course"] == "disappeared_before_decompression"
    assert early["disappeared_at_stage"] == "dural_opening"
    # One channel gone early, the other persists: the session's AMR persists.
    mixed = classify([make("PPPPPPPAAAAAAAAAAAAAAAA", STAGES), make("PPPPPPPPPPPPPPPPPPP", STAGES, "OOCUL")],
                     base, STAGES)
    assert mixed["course"] == "persisted" and mixed["final_pct_of_baseline"] == 100.0
    # The last channel to go decides when the AMR went.
    both = classify([make("PPPPPPPAAAAAAAAAAAAAAAA", STAGES), make("PPPPPPPPPPPPPPAAAAAAAA", STAGES, "OOCUL")],
                    base, STAGES)
    assert both["course"] == "disappeared_after_decompression"
    never = classify([make("AAAAAAAAAAAAAAAA", STAGES)], {"MENT": 0.0}, STAGES)
    assert never["course"] == "never_detected" and never["baseline_uv"] == 0.0
    # Without any decompression marker, a disappearance happened before decompression.
    nomark = classify([make("PPPPPPPPPPPPAAAAAAAAAAAA", [(0, "baseline")])], base, [(0, "baseline")])
    assert nomark["course"] == "disappeared_before_decompression"
