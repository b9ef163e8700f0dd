"""`amrwatch status`: up/down per service from heartbeats, exit 1 when something is down."""

import json
import subprocess
import sys


def test_status_lists_services_and_fails_when_some_are_down(procs, stack_env):
    procs.start("bus")
    procs.start("acquirer", "--speed", "1", "--loop", "--wait-timeout", "1")
    r = subprocess.run([sys.executable, "-m", "amrwatch", "status", "--json", "--wait", "3"], env=stack_env,
                       capture_output=True, text=True, timeout=60)
    rows = {row["service"]: row for row in map(json.loads, r.stdout.splitlines()) if "service" in row}
    assert rows["bus"]["up"] and rows["acquirer"]["up"]
    assert rows["acquirer"]["version"] == "0.1.0" and rows["acquirer"]["last_heartbeat_s"] < 3
    assert not rows["recorder"]["up"]
    assert r.returncode == 1 and "recorder" in r.stderr
