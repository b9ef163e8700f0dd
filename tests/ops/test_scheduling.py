"""Each service runs at its configured CPU priority, every thread of it, and collects garbage between messages.

A whole stack of real processes: the nice value is read from /proc for each process and each of its threads
(Linux keeps one per thread; priority.apply must run before the service makes its threads), and the
analyzer's collector is seen running on its /metrics while frames flow (automatic collection is off in a
service, so a schedule that never ran would leave the count flat)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amrwatch import config

from .stack import metric_sum, start_stack, wait_metrics


def _nice(pid: int, tid: int | None = None) -> int:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat(5); fields[0] here is field 3


def test_services_run_at_their_priority_and_collect_between_messages(procs, stack_env):
    stack_env["AMRWATCH_NICE_PREDICTOR"] = "3"  # settings, beside the defaults
    stack_env["AMRWATCH_NICE_RECORDER"] = "5"
    ports = start_stack(procs, stack_env)
    want = {**config.NICE, "predictor": 3, "recorder": 5}
    seen = {}
    for name, p in procs.procs:
        if name not in want:
            continue
        tids = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")]
        assert len(tids) > 1, f"{name}: expected the ZeroMQ and metrics threads"
        values = {_nice(p.pid, t) for t in tids}
        assert values == {want[name]}, f"{name}: threads at nice {sorted(values)}, configured {want[name]}"
        seen[name] = want[name]
    assert set(seen) == set(want), f"services not checked: {set(want) - set(seen)}"

    port = ports["analyzer"]
    first = metric_sum(wait_metrics(port, "analyzer"), "python_gc_collections_total")
    deadline = time.monotonic() + 60
    while metric_sum(wait_metrics(port, "analyzer"), "python_gc_collections_total") <= first:
        assert time.monotonic() < deadline, "the analyzer's collector never ran while frames flowed"
        time.sleep(0.5)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv to drop CAP_SYS_NICE")
def test_a_priority_above_what_the_process_may_take_is_a_warning_and_the_service_runs(stack_env, tmp_path):
    """Without CAP_SYS_NICE a negative nice cannot be taken: the service says so, naming the setting, and
    runs at the priority it has (the bus, started by setpriv without the capability)."""
    env = {**stack_env, "AMRWATCH_NICE_BUS": "-5", "AMRWATCH_METRICS_PORT_BUS": "0"}
    log = tmp_path / "bus.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable,
                              "-m", "amrwatch", "bus"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "CAP_SYS_NICE" not in log.read_text(errors="replace"):
            assert p.poll() is None, f"bus exited {p.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "AMRWATCH_NICE_BUS=-5" in text and "running at nice 0" in text
        assert p.poll() is None, "the service runs on"
        assert _nice(p.pid) == 0
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_a_priority_out_of_range_is_refused_naming_the_setting(stack_env):
    env = {**stack_env, "AMRWATCH_NICE_ANALYZER": "25"}
    p = subprocess.run([sys.executable, "-m", "amrwatch", "analyzer"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2
    assert "AMRWATCH_NICE_ANALYZER" in p.stderr and "-20 to 19" in p.stderr and "'25'" in p.stderr
