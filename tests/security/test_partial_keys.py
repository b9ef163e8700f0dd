"""Some services keyed, others not: an error at start with the hint, not a stack that silently hears nothing."""

from __future__ import annotations

import subprocess
import sys
import time

from amrwatch import security
from amrwatch.security import EXIT_KEYS_MISMATCH


def run(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "amrwatch", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_an_unkeyed_service_on_a_keyed_bus_exits_with_the_hint(procs, stack_env, tmp_path):
    keys = tmp_path / "keys"
    security.generate(keys)
    keyed = dict(stack_env, AMRWATCH_KEYS=str(keys))
    procs.env = keyed
    procs.start("bus")
    procs.env = stack_env  # the acquirer without keys
    acq = procs.start("acquirer", "--speed", "1")
    rc = acq.wait(timeout=60)
    log = procs.log("acquirer")
    assert rc == EXIT_KEYS_MISMATCH, log[-2000:]
    assert "uses CURVE but AMRWATCH_KEYS is not set" in log and "partial keying" in log

    # The same for a client command: `status` says why instead of reporting everything DOWN.
    out = run(stack_env, "status", "--wait", "5")
    assert out.returncode == EXIT_KEYS_MISMATCH, out.stderr
    assert "AMRWATCH_KEYS is not set" in out.stderr


def test_a_keyed_service_on_a_plain_bus_exits_with_the_hint(procs, stack_env, tmp_path):
    keys = tmp_path / "keys"
    security.generate(keys)
    procs.start("bus")
    procs.env = dict(stack_env, AMRWATCH_KEYS=str(keys))
    acq = procs.start("acquirer", "--speed", "1")
    rc = acq.wait(timeout=60)
    log = procs.log("acquirer")
    assert rc == EXIT_KEYS_MISMATCH, log[-2000:]
    assert "does not use CURVE" in log and "partial keying" in log


def test_status_with_nothing_up_says_keys_may_be_the_reason(stack_env):
    t0 = time.monotonic()
    out = run(stack_env, "status", "--wait", "1")
    assert out.returncode == 1 and time.monotonic() - t0 < 30
    assert "AMRWATCH_KEYS" in out.stderr, out.stderr
