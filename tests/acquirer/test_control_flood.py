"""A control-socket flood must not delay the frame path nor grow the acquirer without bound.

Before: 200 pipelined `retransmit` requests for emg_frame 0..10^12 delayed live frames by
seconds, and a client that sent 500 of them and never read its replies took the acquirer to
1.93 GB. Frames are timed by an outside subscriber on the bus; the acquirer's RSS is read from
/proc; the bus's service_down alarms are watched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

SPEED = 4.0
FLOOD_READ, FLOOD_DEAF = 200, 500


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class FrameClock:
    """frameclock.py in its own process; lines read by a thread here. Per frame: arrival minus when its last
    sample was due, up to a constant (the acquirer's start), so only the spread matters."""

    def __init__(self, endpoint: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("frameclock.py")), endpoint,
                                      str(SPEED)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.arrivals: list[tuple[float, float]] = []
        self.alarms: list[dict] = []
        self.first: dict | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for line in self.proc.stdout:
            row = json.loads(line)
            if "alarm" in row:
                self.alarms.append(row["alarm"])
                continue
            if self.first is None:
                self.first = {"session_id": row["sid"], "instance": row["instance"]}
            self.arrivals.append((row["at"], row["at"] - row["due"]))

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)


def retransmit(h: dict) -> bytes:
    return json.dumps({"op": "retransmit", "session_id": h["session_id"], "instance": h["instance"],
                       "type": "emg_frame", "from_seq": 0, "to_seq": 10**12}).encode()


def test_a_retransmit_flood_neither_delays_frames_nor_grows_the_acquirer(procs, stack_env):
    procs.start("bus")
    acq = procs.start("acquirer", "--speed", str(SPEED), "--loop")
    clock = FrameClock(stack_env["AMRWATCH_BUS_OUT"])
    ctx = zmq.Context()
    reader = ctx.socket(zmq.DEALER)
    deaf = ctx.socket(zmq.DEALER)
    polite = ctx.socket(zmq.REQ)  # one request at a time, as `amrwatch mark` and the recorder ask
    try:
        # A retransmit buffer worth flooding: ~3,000 frames (each full reply used to be 2,000 frames).
        deadline = time.monotonic() + 60
        while len(clock.arrivals) < 3000:
            assert time.monotonic() < deadline, f"only {len(clock.arrivals)} frames in 60 s"
            assert acq.poll() is None, procs.log("acquirer")[-2000:]
            time.sleep(0.1)
        base_lags = np.array([lag for _, lag in clock.arrivals[-3000:]])
        rss0 = rss_mb(acq.pid)
        request = retransmit(clock.first)
        for s in (reader, deaf, polite):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.connect(stack_env["AMRWATCH_CONTROL"])
        t_flood = time.monotonic()
        for _ in range(FLOOD_DEAF):
            deaf.send_multipart([b"", request])
        for _ in range(FLOOD_READ):
            reader.send_multipart([b"", request])
        replies: list[dict] = []
        polite_waits: list[float] = []
        asked_at = None
        rss_max = rss0
        next_rss = 0.0
        end = time.monotonic() + 20
        while (len(replies) < FLOOD_READ or len(polite_waits) < 10) and time.monotonic() < end:
            if asked_at is None and len(polite_waits) < 10:
                polite.send(b'{"op": "session"}')
                asked_at = time.monotonic()
            if polite.poll(0):
                reply = json.loads(polite.recv_multipart()[0])
                assert reply["ok"], reply
                polite_waits.append(time.monotonic() - asked_at)
                asked_at = None
            if reader.poll(20):
                parts = reader.recv_multipart()
                replies.append(json.loads(parts[1]) | {"_frames": len(parts) - 2})
            if time.monotonic() >= next_rss:
                rss_max = max(rss_max, rss_mb(acq.pid))
                next_rss = time.monotonic() + 0.1
        # Keep going a little longer: the deaf client's replies are still being refused or dropped.
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            rss_max = max(rss_max, rss_mb(acq.pid))
            time.sleep(0.1)
        t_end = time.monotonic()
    finally:
        for s in (reader, deaf, polite):
            s.close(0)
        ctx.term()
        clock.close()

    assert acq.poll() is None, procs.log("acquirer")[-2000:]
    flood = np.array([lag for at, lag in clock.arrivals if t_flood <= at <= t_end])
    assert flood.size > 1000, f"only {flood.size} frames arrived during the flood"
    lag_p99 = float(np.percentile(flood - base_lags.min(), 99))
    # On a shared machine the frames are late now and then without any flood: the bound is 50 ms beyond what
    # the same machine showed in the seconds just before (on a quiet machine that baseline is ~5 ms).
    base_p99 = float(np.percentile(base_lags - base_lags.min(), 99))
    growth = rss_max - rss0
    print(f"flood: {flood.size} frames, lag p99 {lag_p99 * 1000:.1f} ms (baseline p99 "
          f"{(np.percentile(base_lags, 99) - base_lags.min()) * 1000:.1f} ms), RSS {rss0:.0f} -> max {rss_max:.0f} MB, "
          f"{len(replies)} replies to the reader in {t_end - t_flood:.1f} s, polite client answered in at most "
          f"{max(polite_waits, default=float('nan')) * 1000:.0f} ms")
    assert lag_p99 <= base_p99 + 0.050, f"frame lag p99 {lag_p99 * 1000:.1f} ms during the flood, " \
        f"{base_p99 * 1000:.1f} ms before it"
    assert growth <= 100, f"acquirer RSS grew {growth:.0f} MB"
    downs = [a for a in clock.alarms if a["kind"] == "service_down"]
    assert not downs, downs

    # A client that asks one thing at a time is answered promptly all through the flood.
    assert len(polite_waits) == 10, f"the polite client got {len(polite_waits)} of 10 answers"
    assert max(polite_waits) <= 2.0, polite_waits
    # The flooding reader gets data (cut, saying where to resume) or refusals naming the limit; what it
    # cannot take in time is dropped, not queued without bound.
    ok = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    assert ok and refused, (len(ok), len(refused))  # how many depends on the machine; both kinds must come
    for r in ok:
        assert r["n_messages"] * 3 == r["_frames"]
        assert r["detail"]["truncated_by"] in ("max_bytes", "max_messages")
        assert r["detail"]["resume_from_seq"] == r["n_messages"] or r["detail"].get("unavailable_from") == 0
    for r in refused:
        assert r["detail"]["limit"] == "outstanding_requests" and "limit 8" in r["error"], r
