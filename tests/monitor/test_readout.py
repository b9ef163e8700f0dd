"""The words the page shows from 3 m (readout.py through SessionView): a sweep
that cannot tell is never read as absent or as a disappearance, provisional
status is never a verdict, and every synthetic decision carries its notice."""

from __future__ import annotations

import json

from amrwatch.services.monitor.timeline import ReplayIndex
from amrwatch.services.monitor.view import SessionView

from .build import FS, Stream, session_messages, session_signal

N = 12


def started(n: int = N) -> tuple[Stream, SessionView, list]:
    st = Stream()
    x, stims = session_signal(n)
    view = SessionView()
    for m in session_messages(st, x, stims):
        view.apply(m)
    return st, view, stims


def ment(st: Stream, stims, k: int, p2p: float, **kw):
    return st.measurement(k, "MENT", "ZYG", stims[k][1] / FS, p2p, **kw)


def readouts(out: list[dict]) -> list[dict]:
    return [o["readout"] for o in out if o["kind"] == "readout"]


def tile(view: SessionView, ch: str = "MENT") -> dict:
    return view.snapshot()["readout"]["channels"][ch]


def test_a_noisy_stretch_after_a_present_amr_reads_not_assessable_not_absent():
    """80 µV AMR, then noise rises so a baseline-size AMR could not be seen: the
    tile says NOT ASSESSABLE: NOISE with the stale state under it, the trend
    keeps the sweeps apart from absent ones, and a page message carries the words."""
    st, view, stims = started()
    view.apply(st.msg("baseline", channel="MENT", direction="ZYG", baseline_uv=80.0, n_sweeps=10,
                      amr_amplitude_uv=80.0))
    view.apply(ment(st, stims, 0, 80.0, pct=100.0))
    view.apply(st.msg("amr_state", channel="MENT", direction="ZYG", state="present", previous_state=None,
                      stage="baseline", stimulus_index=0, pct_of_baseline=100.0))
    assert tile(view)["word"] == "PRESENT" and tile(view)["state_line"] == "AMR state: PRESENT"
    out = []
    for k in (2, 4, 6):
        out += view.apply(ment(st, stims, k, 30.0, pct=37.5, assessment="not_assessable", reason="noise_too_high",
                               noise_uv=15.0, detection_limit_uv=90.0))
    t = tile(view)
    assert t["word"] == "NOT ASSESSABLE: NOISE" and t["tone"] == "not_assessable" and t["counts"] is False
    assert t["run"] == 3 and "3 sweeps in a row" in t["detail"]
    assert "smallest AMR visible 90 µV, baseline 80 µV" in t["detail"]
    assert t["state_line"] == "last AMR state: PRESENT — not updated while sweeps cannot tell"
    # the page was told as soon as the words changed, and not again while they stayed the same
    words = [r["channels"]["MENT"]["word"] for r in readouts(out)]
    assert words[0] == "NOT ASSESSABLE: NOISE" and len(readouts(out)) == 3  # the run count is in the words
    trend = view.snapshot()["trend"]["MENT"]
    assert trend["assessment"] == ["present", "not_assessable", "not_assessable", "not_assessable"]
    assert trend["reason"] == [None, "noise_too_high", "noise_too_high", "noise_too_high"]
    assert trend["present"] == [True, False, False, False]
    # the newest sweep of the waterfall says it could not tell, so the page draws it apart
    sweep = view.snapshot()["sweeps"]["MENT"][3]
    assert sweep["stimulus_index"] == 6
    assert sweep["m"]["assessment"] == "not_assessable" and sweep["m"]["assessment_reason"] == "noise_too_high"
    assert sweep["m"]["detection_limit_uv"] == 90.0


def test_absent_sweeps_read_absent_until_the_analyzer_says_disappeared():
    st, view, stims = started()
    view.apply(ment(st, stims, 0, 100.0, pct=100.0))
    view.apply(ment(st, stims, 2, 4.0, pct=4.0, present=False, detection_limit_uv=20.0))
    assert tile(view)["word"] == "ABSENT…" and tile(view)["tone"] == "absent"
    assert "absent 1 sweep in a row" in tile(view)["detail"] and "would have seen ≥ 20 µV" in tile(view)["detail"]
    view.apply(ment(st, stims, 4, 3.0, pct=3.0, present=False))
    assert "absent 2 sweeps in a row" in tile(view)["detail"]
    view.apply(st.msg("amr_state", channel="MENT", direction="ZYG", state="disappeared", previous_state="present",
                      stage="decompression", stimulus_index=4, pct_of_baseline=3.0))
    assert tile(view)["word"] == "DISAPPEARED" and tile(view)["state_line"] == "AMR state: DISAPPEARED"
    # a noisy sweep after the disappearance: cannot tell, and the disappearance is not re-confirmed by it
    view.apply(ment(st, stims, 6, 40.0, assessment="not_assessable", reason="noise_too_high"))
    assert tile(view)["word"] == "NOT ASSESSABLE: NOISE"
    assert tile(view)["state_line"].startswith("last AMR state: DISAPPEARED — not updated")


def test_each_reason_a_sweep_cannot_tell_has_its_own_words():
    st, view, stims = started()
    view.apply(ment(st, stims, 0, 2.0, assessment="not_assessable", reason="stimulus_unconfirmed",
                    stimulus_confirmed=False))
    t = tile(view)
    assert t["word"] == "NOT ASSESSABLE: NO STIMULUS"
    assert "stimulus not confirmed delivered" in t["detail"] and "stimulus NOT confirmed" not in t["detail"]
    view.apply(ment(st, stims, 2, 400.0, assessment="not_assessable", reason="direct_response", onset_ms=3.5))
    t = tile(view)
    assert t["word"] == "NOT ASSESSABLE: DIRECT RESPONSE" and "current spread" in t["detail"]
    assert "onset 3.5 ms" in t["detail"] and t["run"] == 1
    view.apply(ment(st, stims, 4, 9000.0, rejected=True))
    assert tile(view)["word"] == "REJECTED: DIATHERMY" and tile(view)["tone"] == "rejected"
    # a reason the monitor does not know yet still reads as not assessable, with its own words
    view.apply(ment(st, stims, 6, 1.0, assessment="not_assessable", reason="train_of_four_low"))
    assert tile(view)["word"] == "NOT ASSESSABLE" and "train of four low" in tile(view)["detail"]
    # a present sweep whose stimulus was not confirmed says so
    view.apply(ment(st, stims, 8, 90.0, stimulus_confirmed=False))
    assert tile(view)["word"] == "PRESENT" and "stimulus NOT confirmed" in tile(view)["detail"]
    # the other channels have not been measured: they say so, not a state
    assert tile(view, "OOCUL")["word"] == "NO MEASUREMENT YET"


def test_provisional_status_is_never_the_verdict_and_a_reappearance_replaces_the_verdict():
    st, view, _ = started(2)
    out = view.apply(st.decision(1, "evaluating", "info", provisional=True,
                                 rationale="Decompression under way: no verdict until it is complete."))
    d = view.snapshot()["readout"]["decision"]
    assert d["current"]["headline"] == "EVALUATING — not a verdict" and d["current"]["provisional"] is True
    assert d["verdict"] is None
    assert readouts(out)[0]["decision"]["current"]["kind"] == "evaluating"
    # kind evaluating is status even if a publisher forgot the flag
    view.apply(st.decision(2, "evaluating", "info", provisional=False, supersedes=1))
    assert view.snapshot()["readout"]["decision"]["verdict"] is None
    view.apply(st.decision(3, "decompression_confirmed", "low", supersedes=2))
    d = view.snapshot()["readout"]["decision"]
    assert d["verdict"]["headline"] == "DECOMPRESSION CONFIRMED" and d["verdict"]["final"] is True
    assert d["current"] == d["verdict"]
    # a status from another chain afterwards does not hide the verdict
    view.apply(st.decision(4, "evaluating", "info", provisional=True))
    d = view.snapshot()["readout"]["decision"]
    assert d["current"]["kind"] == "evaluating" and d["verdict"]["kind"] == "decompression_confirmed"
    view.apply(st.decision(5, "amr_reappeared", "high", supersedes=3,
                           rationale="The AMR came back after the decompression was confirmed."))
    d = view.snapshot()["readout"]["decision"]
    assert d["verdict"]["headline"] == "AMR REAPPEARED" and d["verdict"]["priority"] == "high"
    # any other kind given as provisional says so in its headline
    view.apply(st.decision(6, "check_decompression", "medium", provisional=True, supersedes=5))
    d = view.snapshot()["readout"]["decision"]
    assert d["current"]["headline"] == "CHECK DECOMPRESSION — provisional, not a verdict"
    assert d["verdict"] is None  # 3 was superseded by 5, 5 by 6: no final verdict stands


def test_every_synthetic_decision_carries_the_notice():
    st, view, _ = started(2)
    view.apply(st.decision(1, "check_decompression", "medium", notice="synthetic — not for clinical use"))
    assert view.snapshot()["readout"]["decision"]["verdict"]["notice"] == "synthetic — not for clinical use"
    view.apply(st.decision(2, "explore_further", "medium", supersedes=1, notice=None))  # flag without the text
    v = view.snapshot()["readout"]["decision"]["verdict"]
    assert v["synthetic"] is True and v["notice"] == "synthetic model — not for clinical use"
    view.apply(st.decision(3, "termination_acceptable", "low", supersedes=2, synthetic=False, notice=None))
    assert view.snapshot()["readout"]["decision"]["verdict"]["notice"] is None


def test_the_replay_shows_the_same_words_as_the_live_view_did():
    st = Stream()
    x, stims = session_signal(N)
    msgs = session_messages(st, x, stims, end=True)
    at = {m.stimulus_index: i for i, m in enumerate(msgs) if m.type == "stimulus"}
    extra = {at[0]: [ment(st, stims, 0, 80.0, pct=100.0)],
             at[2]: [ment(st, stims, 2, 20.0, assessment="not_assessable", reason="noise_too_high")],
             at[4]: [st.decision(1, "evaluating", "info", provisional=True)]}
    full = []
    for i, m in enumerate(msgs):
        full.append(m)
        full.extend(extra.get(i, []))
    live = SessionView()
    for m in full:
        live.apply(m)
    replayed = ReplayIndex(full).snapshot_at(ReplayIndex(full).duration_s)["readout"]
    want = live.snapshot()["readout"]
    assert json.dumps(replayed["channels"], sort_keys=True) == json.dumps(want["channels"], sort_keys=True)
    # the decision's time on the page is when the view received it, which replay places at its frame
    for r in (replayed, want):
        r["decision"]["current"].pop("t_s")
    assert replayed["decision"] == want["decision"]
    assert replayed["channels"]["MENT"]["word"] == "NOT ASSESSABLE: NOISE"
    assert replayed["decision"]["current"]["provisional"] is True


def test_every_not_assessable_reason_proto_names_has_its_words():
    from amrwatch.proto.messages import NOT_ASSESSABLE_REASONS
    from amrwatch.services.monitor.readout import (
        NOT_ASSESSABLE_WHY,
        NOT_ASSESSABLE_WORDS,
    )

    assert set(NOT_ASSESSABLE_WORDS) == set(NOT_ASSESSABLE_REASONS) == set(NOT_ASSESSABLE_WHY)
