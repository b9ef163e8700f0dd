"""The bus itself dying under `amrwatch up` is alarmed: service_down:bus raised, then cleared once it is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

from .test_up import children, start_up


def test_kill_9_of_the_bus_raises_and_clears_service_down_bus(stack_env):
    up = start_up(stack_env, "--speed", "1", "--loop")
    watcher = None
    try:
        deadline = time.monotonic() + 60
        kids: dict[str, int] = {}
        while time.monotonic() < deadline and "acquirer" not in kids:
            time.sleep(0.2)
            kids = children(up.pid)
        assert {"bus", "acquirer"} <= set(kids), kids
        watcher = subprocess.Popen([sys.executable, "-m", "amrwatch", "events", "--follow", "--json", "--type",
                                    "alarm", "--type", "heartbeat"], env=stack_env, stdout=subprocess.PIPE,
                                   text=True)
        rows: Queue = Queue()
        threading.Thread(target=lambda: [rows.put(json.loads(line)) for line in watcher.stdout], daemon=True).start()

        def next_row(until: float) -> dict:
            try:
                return rows.get(timeout=max(0.01, until - time.monotonic()))
            except Empty:
                raise AssertionError("no service_down:bus alarm within the time allowed") from None

        until = time.monotonic() + 60
        while not (row := next_row(until))["type"] == "heartbeat" or row["service"] != "acquirer":
            pass
        os.kill(kids["bus"], signal.SIGKILL)
        seen: list[str] = []
        until = time.monotonic() + 60
        while "cleared" not in seen:
            row = next_row(until)
            if row["type"] == "alarm" and row["alarm_key"] == "service_down:bus":
                seen.append(row["state"])
                assert row["priority"] == "high" and row["kind"] == "service_down"
                assert "bus" in row["message"]
        assert seen == ["raised", "cleared"], seen
        new = children(up.pid).get("bus")
        assert new and new != kids["bus"]
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        up.send_signal(signal.SIGINT)
        try:
            _, err = up.communicate(timeout=60)
            print(err[-4000:])
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
