"""`amrwatch up`: the whole stack under one supervisor, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def children(pid: int) -> dict[str, int]:
    """service name → pid of the supervisor's children."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"amrwatch" in cmd:
                out[cmd[cmd.index(b"amrwatch") + 1].decode()] = int(child)
    return out


def start_up(env, *args):
    return subprocess.Popen([sys.executable, "-m", "amrwatch", "up", "--json", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_up_runs_a_scenario_to_its_end_and_stops_by_itself(stack_env):
    up = start_up(stack_env, "--speed", "40", "--time-scale", "0.1", "--scenario", "early-disappearance")
    out, err = up.communicate(timeout=240)
    assert up.returncode == 0, err[-3000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    types = [e["type"] for e in events]
    assert types[0] == "session_start" or "session_start" in types
    stages = [e["stage"] for e in events if e["type"] == "stage"]
    assert stages[0] == "baseline" and stages[-1] == "end"
    assert "session_end" in types
    assert "all services stopped" in err


def test_ctrl_c_stops_everything_and_a_killed_service_is_restarted(stack_env):
    up = start_up(stack_env, "--speed", "1", "--loop")
    try:
        deadline = time.monotonic() + 60
        kids: dict[str, int] = {}
        while time.monotonic() < deadline and "acquirer" not in kids:
            time.sleep(0.2)
            kids = children(up.pid)
        assert {"bus", "acquirer"} <= set(kids), kids
        # wait for the session to be running before killing a service
        ev = subprocess.run([sys.executable, "-m", "amrwatch", "events", "--json", "--type", "stimulus",
                             "--count", "1", "--timeout", "20"], env=stack_env, capture_output=True, text=True, timeout=30)
        assert ev.returncode == 0, ev.stderr
        victim = "acquirer"
        os.kill(kids[victim], signal.SIGKILL)
        t_kill = time.monotonic()
        alarm = subprocess.run([sys.executable, "-m", "amrwatch", "events", "--json", "--type", "alarm",
                                "--timeout", "8"], env=stack_env, capture_output=True, text=True, timeout=30)
        alarms = [json.loads(line) for line in alarm.stdout.splitlines()]
        down = [a for a in alarms if a["kind"] == "service_down" and victim in a["message"]]
        assert down and down[0]["state"] == "raised", alarm.stdout + alarm.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = children(up.pid).get(victim)
            if new and new != kids[victim]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{victim} was not restarted")
        assert time.monotonic() - t_kill < 30
        running = children(up.pid)
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
        assert up.returncode == 0
        assert "all services stopped" in err
        for name, pid in running.items():
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], name
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
