"""GapTracker: loss is counted, late joins and restarts are told apart."""

from amrwatch.bus import GapTracker


def feed(tracker, seqs, instance="aaaaaaaa", type_="emg_frame"):
    return [tracker.observe("acquirer", instance, type_, s) for s in seqs]


def test_consecutive_is_silent():
    assert feed(GapTracker(), range(100)) == [None] * 100


def test_gap_counts_missing():
    events = [e for e in feed(GapTracker(), [0, 1, 2, 6, 7]) if e]
    assert len(events) == 1
    assert events[0].kind == "gap" and events[0].expected == 3 and events[0].missing == 3
    assert "3 message(s) lost" in events[0].describe()


def test_duplicate_and_out_of_order():
    events = [e for e in feed(GapTracker(), [0, 1, 2, 2, 1, 3]) if e]
    assert [e.kind for e in events] == ["duplicate", "duplicate"]


def test_late_join_is_not_loss():
    events = [e for e in feed(GapTracker(), [40, 41, 42]) if e]
    assert [e.kind for e in events] == ["joined"] and events[0].missing == 0


def test_restart_starts_a_new_stream():
    t = GapTracker()
    feed(t, [0, 1, 2])
    events = [e for e in feed(t, [0, 1], instance="bbbbbbbb") if e]
    assert [e.kind for e in events] == ["restarted"]
    # a restart whose first messages we missed is loss
    events = [e for e in feed(t, [3, 4], instance="cccccccc") if e]
    assert [(e.kind, e.missing) for e in events] == [("gap", 3)]


def test_streams_are_per_type():
    t = GapTracker()
    assert feed(t, [0, 1], type_="stimulus") == [None, None]
    assert feed(t, [0, 1, 2], type_="emg_frame") == [None, None, None]
