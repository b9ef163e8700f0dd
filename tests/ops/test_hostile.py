"""10,000 malformed and oversized messages at every service: all refused, counted, nobody falls over."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import zmq

from amrwatch.proto.codec import MAX_HEADER_BYTES, encode

from ..proto.examples import example
from .stack import metric_sum, start_stack, wait_metrics

N = 10_000


def malformed(i: int, rng: random.Random) -> list[bytes]:
    """Every service subscribes to heartbeats, so bad 'heartbeats' reach them all."""
    good = json.loads(encode(example("heartbeat", seq=i))[1])
    kind = i % 8
    if kind == 0:
        return [b"heartbeat", b"{not json" + bytes(rng.randrange(256) for _ in range(20)), b""]
    if kind == 1:
        return [b"heartbeat", json.dumps({**good, "uptime_s": "NaN"}).encode().replace(b'"NaN"', b"NaN"), b""]
    if kind == 2:
        return [b"heartbeat", json.dumps({**good, "extra": 1}).encode(), b""]
    if kind == 3:
        return [b"heartbeat", b" " * (MAX_HEADER_BYTES + 1), b""]  # oversized header
    if kind == 4:
        return [b"heartbeat"]  # wrong frame count
    if kind == 5:
        return [b"heartbeat", json.dumps(good).encode(), b"\x00" * 4096]  # payload where none belongs
    if kind == 6:
        return [b"heartbeat", json.dumps({**good, "seq": -5}).encode(), b""]
    return [b"heartbeat", json.dumps({**good, "schema_version": 99}).encode(), b""]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_services_survive_and_count_every_bad_message(procs, stack_env):
    ports = start_stack(procs, stack_env)
    before = {name: rss_kib(p.pid) for name, p in procs.procs}
    ctx = zmq.Context()
    try:
        raw = ctx.socket(zmq.XPUB)
        raw.setsockopt(zmq.SNDHWM, 0)
        raw.connect(stack_env["AMRWATCH_BUS_IN"])
        assert raw.poll(10000)
        rng = random.Random(7)
        for i in range(N):
            raw.send_multipart(malformed(i, rng))
        deadline = time.monotonic() + 60
        counts = {}
        while time.monotonic() < deadline:
            counts = {svc: metric_sum(wait_metrics(port, svc), "amrwatch_messages_rejected_total")
                      for svc, port in ports.items() if svc != "bus"}
            if all(c >= N for c in counts.values()):
                break
            time.sleep(0.5)
        assert all(c == N for c in counts.values()), counts
        for name, p in procs.procs:
            assert p.poll() is None, f"{name} died"
            grew = rss_kib(p.pid) - before[name]
            assert grew < 100_000, f"{name} grew by {grew} KiB"
        # still working: the stack answers status and keeps publishing
        r = subprocess.run([sys.executable, "-m", "amrwatch", "health", "acquirer"], env=stack_env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        dead = Path(stack_env["AMRWATCH_DATA"]) / "deadletter"
        files = list(dead.glob("*.jsonl*"))
        assert files and all(f.stat().st_size <= 5 * 1024 * 1024 for f in files)
    finally:
        ctx.destroy(linger=0)
