"""HeartbeatWatch: a silent service is down, a restart is an outage, a clean stop is not."""

from amrwatch.health import HeartbeatWatch


def test_missed_heartbeats_raise_then_clear():
    w = HeartbeatWatch(miss_factor=3, min_timeout_s=1.0)
    assert w.observe("analyzer", "a1", "ok", 0.5, now=0.0) == []
    assert w.check(1.4) == []
    down = w.check(1.6)
    assert [(c.service, c.kind) for c in down] == [("analyzer", "down")]
    assert w.check(5.0) == []  # raised once, not every check
    back = w.observe("analyzer", "a1", "ok", 0.5, now=6.0)
    assert [(c.kind, "resumed" in c.message) for c in back] == [("back", True)]


def test_fast_restart_is_still_an_outage():
    w = HeartbeatWatch()
    w.observe("acquirer", "a1", "ok", 0.5, now=0.0)
    changes = w.observe("acquirer", "b2", "ok", 0.5, now=1.2)
    assert [c.kind for c in changes] == ["down", "back"]


def test_clean_stop_raises_nothing():
    w = HeartbeatWatch()
    w.observe("recorder", "a1", "ok", 0.5, now=0.0)
    w.observe("recorder", "a1", "stopping", 0.5, now=0.3)
    assert w.check(100.0) == []
    assert w.observe("recorder", "c3", "ok", 0.5, now=101.0) == []


def test_the_bus_does_not_watch_itself():
    w = HeartbeatWatch()
    w.observe("bus", "a1", "ok", 0.5, now=0.0)
    assert w.check(100.0) == []
