"""An outside subscriber: plain pyzmq + json, as a client in another language would be.

Stamps every message on arrival (CLOCK_MONOTONIC ns, before parsing), keeps
what the latency figures need, and checks loss two ways: the seq of every
(publisher, instance, type) stream, and the SAMPLE_INDEX channel of every
emg_frame payload against the samples it should hold.

Runs until SIGTERM, then writes OUT.npz (arrays) and OUT.json (counters).
Usage: python -m bench.probe --bus ENDPOINT --out PATH
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from amrwatch.bus import GapTracker

MODULUS = 2**24


class Probe:
    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}
        self.index_row: dict[int, int | None] = {}
        self.next_sample: dict[int, int] = {}
        self.cols = {k: array("q") for k in (
            "frame_session", "frame_first", "frame_n", "frame_t",
            "stim_session", "stim_index", "stim_sample", "stim_t",
            "meas_session", "meas_index", "meas_t",
            "state_session", "state_index", "state_t",
            "dec_session", "dec_t")}
        self.dec_label: list[str] = []
        self.received: Counter[str] = Counter()
        self.tracker = GapTracker()
        self.gaps: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.lost_samples = 0
        self.bad_index_frames = 0
        self.unchecked_frames = 0
        self.checked_samples = 0
        self.first_t = 0
        self.last_t = 0

    def _session(self, sid: str | None) -> int:
        return self.sessions.setdefault(sid or "", len(self.sessions))

    def on_message(self, t: int, frames: list) -> None:
        head = json.loads(frames[1].bytes)
        typ = head["type"]
        self.received[typ] += 1
        self.first_t = self.first_t or t
        self.last_t = t
        ev = self.tracker.observe(head["publisher"], head["instance"], typ, head["seq"])
        if ev is not None and ev.kind == "gap":
            self.gaps[f"{ev.publisher}/{typ}"] += 1
            self.lost[f"{ev.publisher}/{typ}"] += ev.missing
        c = self.cols
        if typ == "emg_frame":
            s = self._session(head["session_id"])
            first, n = head["first_sample_index"], head["n_samples"]
            c["frame_session"].append(s)
            c["frame_first"].append(first)
            c["frame_n"].append(n)
            c["frame_t"].append(t)
            self._check_samples(s, first, n, head["n_channels"], frames[2])
        elif typ == "stimulus":
            c["stim_session"].append(self._session(head["session_id"]))
            c["stim_index"].append(head["stimulus_index"])
            c["stim_sample"].append(head["sample_index"])
            c["stim_t"].append(t)
        elif typ == "amr_measurement":
            c["meas_session"].append(self._session(head["session_id"]))
            c["meas_index"].append(head["stimulus_index"])
            c["meas_t"].append(t)
        elif typ == "amr_state":
            c["state_session"].append(self._session(head["session_id"]))
            c["state_index"].append(head["stimulus_index"])
            c["state_t"].append(t)
        elif typ == "decision":
            c["dec_session"].append(self._session(head["session_id"]))
            c["dec_t"].append(t)
            ev_ = head.get("evidence") or {}
            self.dec_label.append(f"{head['kind']}:{ev_.get('trigger') or ev_.get('reason') or ''}")
        elif typ == "session_start":
            s = self._session(head["session_id"])
            kinds = [ch.get("kind") for ch in head["montage"]["channels"]]
            self.index_row[s] = kinds.index("sample_index") if "sample_index" in kinds else None

    def _check_samples(self, s: int, first: int, n: int, n_channels: int, payload) -> None:
        expected = self.next_sample.get(s)
        if expected is not None and first > expected:
            self.lost_samples += first - expected
        self.next_sample[s] = max(first + n, expected or 0)
        row = self.index_row.get(s)
        if row is None:
            self.unchecked_frames += 1
            return
        values = np.frombuffer(payload.buffer, dtype="<f4", count=n, offset=row * n * 4)
        want = np.arange(first, first + n, dtype=np.int64) % MODULUS
        if not np.array_equal(values, want.astype(np.float32)):
            self.bad_index_frames += 1
        self.checked_samples += n

    def save(self, out: Path) -> None:
        arrays = {k: np.frombuffer(v, dtype=np.int64) if len(v) else np.zeros(0, np.int64) for k, v in self.cols.items()}
        np.savez(out.with_suffix(".npz"), **arrays, dec_label=np.array(self.dec_label, dtype=object))
        out.with_suffix(".json").write_text(json.dumps({
            "received": dict(self.received), "gaps": dict(self.gaps), "lost": dict(self.lost),
            "lost_samples": self.lost_samples, "bad_index_frames": self.bad_index_frames,
            "unchecked_frames": self.unchecked_frames, "checked_samples": self.checked_samples,
            "sessions": list(self.sessions), "wall_s": (self.last_t - self.first_t) / 1e9,
        }))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bus", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ready", type=Path, help="touched once the subscription is sent")
    a = ap.parse_args(argv)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 200_000)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(a.bus)
    probe = Probe()
    if a.ready:
        time.sleep(0.3)
        a.ready.touch()
    while not stop["flag"]:
        if not sock.poll(100):
            continue
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            probe.on_message(time.monotonic_ns(), frames)
    probe.save(a.out)
    sock.close(linger=0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
