"""`amrwatch up`: the whole stack under one supervisor, as a user runs it."""

from __future__ import annotations

import datetime
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
        # Listen for alarms first: the first heartbeat line proves the subscription is live.
        watcher = subprocess.Popen([sys.executable, "-m", "amrwatch", "events", "--follow", "--json", "--type",
                                    "alarm", "--type", "heartbeat"], env=stack_env, stdout=subprocess.PIPE,
                                   text=True)
        try:
            seen_acquirer = False
            while not seen_acquirer:
                row = json.loads(watcher.stdout.readline())
                seen_acquirer = row["type"] == "heartbeat" and row["service"] == "acquirer"
            victim = "acquirer"
            t_kill = time.time()
            os.kill(kids[victim], signal.SIGKILL)
            alarm = None
            while alarm is None:
                row = json.loads(watcher.stdout.readline())
                if row["type"] == "alarm" and row["kind"] == "service_down" and victim in row["message"]:
                    alarm = row
        finally:
            watcher.kill()
            watcher.wait()
        assert alarm["state"] == "raised" and alarm["priority"] == "high"
        raised_at = datetime.datetime.fromisoformat(alarm["ts_utc"].replace("Z", "+00:00")).timestamp()
        assert raised_at - t_kill <= 2.0, f"service_down raised {raised_at - t_kill:.2f} s after the kill"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = children(up.pid).get(victim)
            if new and new != kids[victim]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{victim} was not restarted")
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


def test_a_source_that_cannot_start_stops_up_with_its_message(stack_env, tmp_path):
    """An unreadable file is not a crash to restart forever: `up` stops with the reason and exit 1."""
    junk = tmp_path / "case.edf"
    junk.write_bytes(b"not an edf at all" * 64)
    up = start_up(stack_env, "--source", f"edf:{junk}")
    out, err = up.communicate(timeout=120)
    assert up.returncode == 1, err[-3000:]
    assert "cannot be read as EDF" in err and "source cannot start" in err
    assert err.count("restarting") == 0, err[-3000:]
