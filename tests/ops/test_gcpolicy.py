"""The idle collector (amrwatch/gcpolicy.py): CPython's generational schedule, run where the loop says.

Run in a child interpreter: freezing and disabling the collector are process-wide, and the test must not do
that to the pytest worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, json, weakref
    from amrwatch.gcpolicy import IdleCollector

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    out = {}
    gc.set_threshold(700, 10, 10)
    c = IdleCollector()
    c.start()
    out["enabled_after_start"] = gc.isenabled()
    out["frozen"] = gc.get_freeze_count()

    # Garbage in a cycle survives until the loop is idle and the schedule is due.
    ref = cycle()
    out["idle_before_due"] = c.idle()
    out["alive_before_due"] = ref() is not None
    junk = [[] for _ in range(800)]          # young containers past the 700 threshold
    out["busy_below_hard_limit"] = c.busy()
    out["alive_while_busy"] = ref() is not None
    out["idle_when_due"] = c.idle()
    out["alive_after_idle"] = ref() is not None
    del junk

    # An overloaded loop (never idle) still collects past the hard limit.
    ref = cycle()
    junk = [[] for _ in range(c.hard_limit + 1000)]
    out["busy_past_hard_limit"] = c.busy()
    out["alive_after_busy"] = ref() is not None
    del junk

    # The generations follow CPython's schedule: every 10th young collection is a middle one, every 10th
    # middle one (the 11th after the last) a full one.
    seq = []
    for _ in range(120):
        keep = [[] for _ in range(1000)]
        seq.append(c.idle())
        del keep
    out["sequence"] = seq
    c.stop()
    out["enabled_after_stop"] = gc.isenabled()
    print(json.dumps(out))
""")


def test_idle_collector_schedule_in_a_child_process():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    import json

    out = json.loads(p.stdout)
    assert out["enabled_after_start"] is False
    assert out["frozen"] > 1000, "setup's objects are moved out of every later collection"
    assert out["idle_before_due"] is None and out["alive_before_due"]
    assert out["busy_below_hard_limit"] is None and out["alive_while_busy"]
    assert out["idle_when_due"] == 0 and not out["alive_after_idle"]
    assert out["busy_past_hard_limit"] is not None and not out["alive_after_busy"]
    seq = out["sequence"]
    assert None not in seq
    # Two young ones already ran above: middle collections come every 11th call (10 young, then 1 middle).
    middles = [i for i, g in enumerate(seq) if g == 1]
    fulls = [i for i, g in enumerate(seq) if g == 2]
    assert len(middles) >= 9 and all(b - a == 11 for a, b in zip(middles, middles[1:]) if not
                                      any(a < f < b for f in fulls)), seq
    assert len(fulls) == 1, seq
    assert out["enabled_after_stop"] is True
