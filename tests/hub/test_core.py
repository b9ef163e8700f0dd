"""The hub's pure per-room core: exactly once by seq, what to ask for, gaps, staleness."""

from __future__ import annotations

import pytest
from amrwatch.services.hub.core import Request, Room


def ev(type_: str, seq: int, instance: str = "aaaaaaaa", **body) -> dict:
    return {"type": type_, "seq": seq, "instance": instance, "publisher": "acquirer", "session_id": "s1",
            "ts_utc": f"2026-12-03T08:00:{seq % 60:02d}Z", **body}


def test_each_event_is_taken_once_and_holes_become_requests():
    r = Room("OR-1")
    assert [r.take(ev("stimulus", s), 0.0) for s in (0, 1, 4, 1, 5)] == [True, True, True, False, True]
    assert r.events == 4 and r.duplicates == 1
    plan = r.backfill_plan()
    assert [(q.type, q.from_seq, q.to_seq) for q in plan] == [("stimulus", 2, 3)]
    assert r.take(ev("stimulus", 3), 1.0, via="backfill") and r.backfilled == 1
    assert [(q.from_seq, q.to_seq) for q in r.backfill_plan()] == [(2, 2)]
    r.take(ev("stimulus", 2), 1.0, via="backfill")
    assert r.backfill_plan() == [] and r.streams[("aaaaaaaa", "stimulus")].next_seq == 6


def test_what_the_cart_no_longer_holds_is_a_gap_and_is_not_asked_again():
    r = Room("OR-1")
    r.take(ev("stage", 0, stage="baseline"), 0.0)
    r.take(ev("stage", 9, stage="decompression"), 0.0)
    (req,) = r.backfill_plan()
    gap = r.unavailable(req, 1, 5, "aged out")
    assert (gap.from_seq, gap.to_seq, gap.n) == (1, 5, 5)
    assert [(q.from_seq, q.to_seq) for q in r.backfill_plan()] == [(6, 8)]
    assert r.unavailable(req, 1, 5, "aged out") is None  # recorded once
    assert r.tile(0.0)["gap_messages"] == 5 and r.stage == "decompression"


def test_streams_the_hub_never_heard_of_are_asked_for_from_zero():
    r = Room("OR-1")
    r.take(ev("stimulus", 0), 0.0)
    plan = r.plan_streams([
        {"publisher": "acquirer", "instance": "aaaaaaaa", "type": "stimulus", "last_seq": 3, "oldest_seq": 0},
        {"publisher": "analyzer", "instance": "bbbbbbbb", "type": "baseline", "last_seq": 2, "oldest_seq": 0},
        {"publisher": "acquirer", "instance": "aaaaaaaa", "type": "emg_frame", "last_seq": 99, "oldest_seq": 0},
    ])
    assert {(q.instance, q.type, q.from_seq, q.to_seq) for q in plan} == {
        ("aaaaaaaa", "stimulus", 1, 3), ("bbbbbbbb", "baseline", 0, 2)}  # never frames
    assert isinstance(plan[0], Request) and plan[0].body("s1")["op"] == "retransmit"


def test_staleness_raises_and_clears_once_each():
    r = Room("OR-1", stale_after_s=2.0)
    assert r.check_stale(0.0) == "raised"  # nothing heard yet: never shown as live
    r.heard(1.0)
    assert r.check_stale(1.5) == "cleared"
    assert r.check_stale(2.9) is None
    assert r.check_stale(3.5) == "raised" and r.check_stale(4.0) is None
    tile = r.tile(4.0)
    assert tile["stale"] and tile["alarms"][0]["kind"] == "link_stale" and "3.0 s" in tile["alarms"][0]["message"]
    r.heard(5.0)
    assert r.check_stale(5.1) == "cleared" and not r.tile(5.1)["stale"]


def test_tile_orders_alarms_by_priority_and_follows_state():
    r = Room("OR-1", stale_after_s=5.0)
    r.take(ev("alarm", 0, kind="data_gap", priority="low", state="raised", message="m", source="x",
              alarm_key="k1"), 0.0)
    r.take(ev("alarm", 1, kind="signal_lost", priority="high", state="raised", message="m", source="x",
              alarm_key="k2"), 0.0)
    r.take(ev("amr_state", 0, instance="cccccccc", channel="MENT", direction="ZYG", state="disappeared"), 0.0)
    r.take(ev("decision", 0, instance="dddddddd", decision_id=1, kind="decompression_confirmed", priority="info",
              rationale="r", provisional=False, synthetic=True, notice="synthetic — not for clinical use"), 0.0)
    t = r.tile(0.1)
    assert [a["priority"] for a in t["alarms"]] == ["high", "low"]
    assert t["amr"]["MENT"]["state"] == "disappeared" and t["decision"]["kind"] == "decompression_confirmed"
    r.take(ev("alarm", 2, kind="signal_lost", priority="high", state="cleared", message="m", source="x",
              alarm_key="k2"), 0.2)
    assert [a["alarm_key"] for a in r.tile(0.3)["alarms"]] == ["k1"]


def test_a_stale_threshold_out_of_range_is_refused_with_the_range():
    with pytest.raises(ValueError, match="between 0.5 and 3600 s; got 0.1"):
        Room("OR-1", stale_after_s=0.1)
