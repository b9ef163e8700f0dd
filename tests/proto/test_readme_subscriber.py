"""A subscriber written from proto/README.md alone receives frames and events.

The snippet is taken from the README itself, so the page cannot drift from
the wire: it uses only pyzmq, json and struct — nothing from amrwatch."""

import re
import threading
from pathlib import Path

from amrwatch.proto.messages import BY_TYPE

README = Path(__file__).resolve().parents[2] / "proto" / "README.md"


def readme_snippet() -> str:
    text = README.read_text()
    section = text.split("## A minimal subscriber", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_snippet_uses_nothing_from_amrwatch():
    code = readme_snippet()
    assert "amrwatch" not in code and "import json, struct, zmq" in code


def test_readme_subscriber_receives_frames_and_events(procs, stack_env):
    namespace: dict = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(msgs=namespace["subscribe"](stack_env["AMRWATCH_BUS_OUT"], 3000)))
    procs.start("bus")
    th.start()
    procs.start("acquirer", "--speed", "20", "--time-scale", "0.1")
    th.join(timeout=120)
    assert not th.is_alive(), "README subscriber did not receive 3000 messages"
    msgs = result["msgs"]
    types = {m["type"] for m in msgs}
    assert {"session_start", "emg_frame", "stimulus", "stage", "heartbeat"} <= types
    assert types <= set(BY_TYPE)
    frame = next(m for m in msgs if m["type"] == "emg_frame")
    assert len(frame["first_channel"]) == frame["n_samples"]
    assert all(isinstance(v, float) for v in frame["first_channel"])
