"""`amrwatch events --count N` stops after N events *shown* (it counted hidden stimuli too)."""

from __future__ import annotations

import subprocess
import sys


def test_count_counts_only_the_events_it_shows(procs, stack_env):
    procs.start("bus")
    procs.start("acquirer", "--speed", "10", "--time-scale", "0.1", "--loop")
    out = subprocess.run([sys.executable, "-m", "amrwatch", "events", "--count", "10", "--timeout", "60"],
                         env=stack_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 10, out.stdout
    assert not any(" stimulus " in ln for ln in lines)  # hidden by default, and not counted
