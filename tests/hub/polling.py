"""What the hub tests wait on, written once: a condition polled against a deadline, and a hub's JSON-lines files."""

from __future__ import annotations

import json
import time
from pathlib import Path


def wait_for(what: str, cond, timeout_s: float, every_s: float = 0.2):
    """`cond()`'s first truthy value, polled every `every_s`; an AssertionError naming `what` past the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)  # polling a condition with a deadline, not synchronising by sleep


def jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file the hub appends to (none before it exists)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
