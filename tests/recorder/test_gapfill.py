"""The recorder's accounting of every seq: what is held, what to ask the acquirer for, what becomes a gap."""

from __future__ import annotations

import random

from amrwatch.services.recorder.gapfill import GapFiller, Request
from amrwatch.archive.seqset import SeqSet

ACQ = ("acquirer", "0123abcd", "emg_frame")
ANA = ("analyzer", "89abcdef", "amr_measurement")


def test_seqset_matches_a_plain_set_under_random_inserts():
    rng = random.Random(5)
    s, ref = SeqSet(), set()
    for _ in range(3000):
        if rng.random() < 0.2:
            a = rng.randrange(500)
            b = a + rng.randrange(6)
            s.add_range(a, b)
            ref.update(range(a, b + 1))
        else:
            x = rng.randrange(500)
            assert s.add(x) == (x not in ref)
            ref.add(x)
    assert len(s) == len(ref) and all((x in s) == (x in ref) for x in range(-2, 505))
    holes = [x for a, b in s.holes(0, 499) for x in range(a, b + 1)]
    assert holes == [x for x in range(500) if x not in ref]
    rs = s.ranges()
    assert all(b + 1 < c for (_, b), (c, _) in zip(rs, rs[1:]))  # disjoint and never adjacent


def filler(recording=("S1",), batch=2000):
    return GapFiller(is_recording=lambda sid: sid in recording, batch=batch)


def test_a_duplicate_is_refused_and_a_hole_is_asked_for_in_batches():
    f = filler(batch=1000)
    assert f.claim(ACQ, 0, "S1") and not f.claim(ACQ, 0, "S1")
    f.claim(ACQ, 2501, "S1")
    assert f.next_request() == Request(ACQ, 1, 1000, "fill")
    f.on_reply(f.next_request(), [], None)  # nothing came back: asked again, counted
    for seq in range(1, 1001):
        assert f.claim(ACQ, seq, "S1", live=False)
    assert f.next_request() == Request(ACQ, 1001, 2000, "fill")
    assert not f.claim(ACQ, 2501, "S1", live=False)  # refetched copy of one already archived


def test_what_aged_out_becomes_a_gap_in_the_session_around_it():
    f = filler()
    f.claim(ACQ, 0, "S1")
    f.claim(ACQ, 20, "S1")
    req = f.next_request()
    assert req == Request(ACQ, 1, 19, "fill")
    for seq in range(15, 20):
        f.claim(ACQ, seq, "S1", live=False)
    f.on_reply(req, [(s, "S1") for s in range(15, 20)], (1, 14))
    [note] = f.take_notes()
    assert (note.from_seq, note.to_seq, note.session_id, note.key) == (1, 14, "S1", ACQ)
    assert "aged out" in note.reason
    assert f.next_request() is None and not f.pending_for("S1")


def test_other_publishers_keep_no_buffer_so_their_holes_are_gaps_at_once():
    f = filler()
    f.claim(ANA, 5, "S1")
    f.claim(ANA, 9, "S1")
    [note] = f.take_notes()
    assert (note.from_seq, note.to_seq, note.session_id) == (6, 8, "S1") and "no retransmit buffer" in note.reason
    assert f.next_request() is None


def test_a_late_joiner_probes_back_to_where_its_session_began():
    f = filler(recording=("S2",))
    f.claim(ACQ, 500, "S2")
    req = f.next_request()
    assert req == Request(ACQ, 499, 499, "back")  # one message first: usually enough to see the boundary
    f.claim(ACQ, 499, "S2", live=False)
    f.on_reply(req, [(499, "S2")], None)
    req = f.next_request()
    assert req == Request(ACQ, 0, 498, "back")  # then whole batches
    for seq in range(0, 499):
        f.claim(ACQ, seq, "S1" if seq < 420 else "S2", live=False)
    f.on_reply(req, [(s, "S1" if s < 420 else "S2") for s in range(0, 499)], None)
    assert f.streams[ACQ].floor == 420 and f.next_request() is None and f.take_notes() == []


def test_a_resumed_session_asks_past_its_newest_archived_seq_and_scans_types_it_has_none_of():
    f = filler()
    f.preload(ACQ, SeqSet([(0, 99), (120, 199)]), "S1", tail=True)
    assert f.next_request() == Request(ACQ, 100, 119, "fill")  # the hole the crash left first
    for s in range(100, 120):
        f.claim(ACQ, s, "S1", live=False)
    f.on_reply(Request(ACQ, 100, 119, "fill"), [(s, "S1") for s in range(100, 120)], None)
    tail = f.next_request()
    assert tail == Request(ACQ, 200, 2199, "tail")
    f.on_reply(tail, [(s, "S1") for s in range(200, 230)], None)  # fewer than asked: caught up
    for s in range(200, 230):
        f.claim(ACQ, s, "S1", live=False)
    f.probe_type("acquirer", "0123abcd", "factors")
    scan = f.next_request()
    assert scan.key[2] == "factors" and scan.purpose == "scan" and scan.from_seq == 0
    f.on_reply(scan, [(3, "S0"), (4, "S1")], (0, 2))  # what aged out precedes our knowledge: no gap
    assert f.take_notes() == [] and f.next_request() is None


def test_a_replaced_acquirer_takes_its_holes_with_it_and_closing_gives_up_the_rest():
    f = filler()
    f.claim(ACQ, 1, "S1")
    f.claim(ACQ, 4, "S1")
    assert f.pending_for("S1")
    f.instance_gone("acquirer", "0123abcd", "the acquirer that sent them was replaced")
    [note] = f.take_notes()
    assert (note.from_seq, note.to_seq) == (2, 3) and "replaced" in note.reason
    other = ("acquirer", "0123abcd", "stimulus")
    f.claim(other, 0, "S1")
    f.claim(other, 7, "S1")
    f.give_up_for("S1", "session closed")
    assert [(n.from_seq, n.to_seq) for n in f.take_notes()] == [(1, 6)]
    assert not f.pending_for("S1")


def test_a_publisher_restart_seen_live_means_its_new_seqs_start_at_zero():
    f = filler()
    f.claim(ANA, 40, "S1")
    f.claim(("analyzer", "fedcba98", "amr_measurement"), 3, "S1")
    [note] = f.take_notes()
    assert (note.key[1], note.from_seq, note.to_seq) == ("fedcba98", 0, 2)
