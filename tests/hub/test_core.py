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
    (gap,) = r.unavailable(req, 1, 5, "aged out")
    assert (gap.from_seq, gap.to_seq, gap.n) == (1, 5, 5)
    assert [(q.from_seq, q.to_seq) for q in r.backfill_plan()] == [(6, 8)]
    assert r.unavailable(req, 1, 5, "aged out") == []  # recorded once
    assert r.tile(0.0)["gap_messages"] == 5 and r.stage == "decompression"


def test_seqs_held_inside_an_unavailable_range_are_not_counted_as_lost():
    """The cart says 1..8 are gone, but the hub already holds 3 and 6 (they came live): the record of loss is
    the runs it does not hold — 1..2, 4..5, 7..8, six messages — never the whole span (before: one gap of 8)."""
    r = Room("OR-1")
    for seq in (0, 3, 6, 9):
        r.take(ev("stimulus", seq), 0.0)
    req = r.backfill_plan()[0]
    gaps = r.unavailable(req, 1, 8, "aged out")
    assert [(g.from_seq, g.to_seq) for g in gaps] == [(1, 2), (4, 5), (7, 8)]
    assert r.tile(0.0)["gap_messages"] == 6 == sum(g.n for g in gaps)
    assert r.backfill_plan() == []


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


# -- the archive read-out: what aged out of the retransmit buffer -------------------------------------------------

def test_aged_out_without_an_archive_is_a_gap_at_once():
    r = Room("OR-1")
    r.take(ev("stimulus", 50), 0.0)
    req = r.joined("acquirer", "aaaaaaaa", "stimulus", 50)
    (gap,) = r.aged_out(req, 0, 39, "aged out of the cart's retransmit buffer")
    assert (gap.from_seq, gap.to_seq) == (0, 39) and r.gap_total == 40


def test_aged_out_with_an_archive_asks_it_and_is_not_asked_of_the_retransmit_buffer_again():
    r = Room("OR-1", archive=True)
    r.take(ev("stimulus", 50), 0.0)
    req = r.joined("acquirer", "aaaaaaaa", "stimulus", 50)
    ask = r.aged_out(req, 0, 39, "aged out of the cart's retransmit buffer")
    assert (ask.from_seq, ask.to_seq, ask.type) == (0, 39, "stimulus") and r.gap_total == 0
    assert ask.body("s1") == {"op": "archive_read", "session_id": "s1", "instance": "aaaaaaaa", "type": "stimulus",
                              "from_seq": 0, "to_seq": 39}
    for s in range(40, 50):
        r.take(ev("stimulus", s), 0.0, via="backfill")
    assert r.backfill_plan() == []  # 0..39 are being asked of the archive, not missing
    assert r.aged_out(req, 0, 39, "aged out again") is None  # a second 'unavailable' is not a second ask
    for s in range(40):
        assert r.take(ev("stimulus", s), 1.0, via="archive")
    nxt, gaps = r.archive_answered(ask, {"last_archived_seq": 60})
    assert nxt is None and gaps == [] and r.streams[("aaaaaaaa", "stimulus")].next_seq == 51
    assert r.backfilled_by == {"retransmit": 10, "archive": 40} and r.backfilled == 50
    assert r.tile(1.0)["backfilled_by"] == {"retransmit": 10, "archive": 40}


def test_a_cut_archive_reply_continues_with_the_next_chunk_and_what_it_lacks_is_a_gap_naming_both():
    r = Room("OR-1", archive=True)
    r.take(ev("stimulus", 5000), 0.0)
    ask = r.aged_out(Request("acquirer", "aaaaaaaa", "stimulus", 0, 4999), 0, 4999, "aged out of the cart's "
                     "retransmit buffer")
    for s in range(2000):
        if s != 7:
            r.take(ev("stimulus", s), 1.0, via="archive")
    nxt, gaps = r.archive_answered(ask, {"truncated_by": "max_messages", "resume_from_seq": 2000,
                                         "recorded_lost_reason": "lost on the bus and not refetched"})
    assert (nxt.from_seq, nxt.to_seq) == (2000, 4999)
    assert [(g.from_seq, g.to_seq) for g in gaps] == [(7, 7)]
    assert "retransmit buffer" in gaps[0].reason and "archive" in gaps[0].reason
    assert "not refetched" in gaps[0].reason
    assert [(q.from_seq, q.to_seq) for q in r.backfill_plan()] == []  # the next chunk is pending, not missing
    for s in range(2000, 3000):
        r.take(ev("stimulus", s), 2.0, via="archive")
    nxt2, gaps2 = r.archive_answered(nxt, {"live": True, "durable_up_to": 123})
    assert nxt2 is None and [(g.from_seq, g.to_seq) for g in gaps2] == [(3000, 4999)]
    assert "durable up to record 123" in gaps2[0].reason and r.gap_total == 1 + 2000


def test_an_archive_refusal_or_silence_becomes_a_gap_with_the_reason():
    r = Room("OR-1", archive=True)
    r.take(ev("stage", 9, stage="closure"), 0.0)
    ask = r.aged_out(Request("acquirer", "aaaaaaaa", "stage", 0, 8), 0, 8, "aged out of the cart's retransmit "
                     "buffer")
    (gap,) = r.archive_failed(ask, "refused: archive_read: session_id 's1' is not archived on this cart")
    assert (gap.from_seq, gap.to_seq) == (0, 8) and "not archived on this cart" in gap.reason
    assert gap.reason.startswith("aged out of the cart's retransmit buffer; the cart's archive read-out refused")
    assert r.backfill_plan() == []
