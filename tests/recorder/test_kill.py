"""SIGKILL the recorder again and again during a 20 kHz x 16-channel session: afterwards every
sample of the session is in the archive exactly once (the sample-index channel proves it), or the
test names the gap and the alarm that reported it.

Some kills are followed by bytes appended to the newest segment — what a power cut leaves mid-write —
which the next start must cut as a torn tail. Default: 20 kills in a ~40 s session; AMRWATCH_FULL=1:
60 kills in a ~130 s session.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from amrwatch.bus import Subscriber
from amrwatch.proto.messages import Alarm, SessionEnd, SessionStart
from amrwatch.archive.writer import ArchiveReader, session_path
from amrwatch.archive.index import ArchiveIndex
from amrwatch.archive.integrity import list_segments
from amrwatch.archive.order import SignalOrder
from amrwatch.archive.segment import RECORD_MAGIC

from .stack import wait_closed

FULL = os.environ.get("AMRWATCH_FULL") == "1"
KILLS = 60 if FULL else 20
TIME_SCALE = 0.25 if FULL else 0.08  # of the scripted 527 s operation
CHANNELS = 16


class Watch(threading.Thread):
    """Everything the bus says about sessions and alarms, while the test kills the recorder."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.msgs: list = []
        self.stop = False
        self.ready = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context()
        sub = Subscriber(ctx, self.endpoint, ("session_start", "session_end", "alarm"))
        self.ready.set()
        try:
            while not self.stop:
                msg = sub.recv(100)
                if msg is not None:
                    self.msgs.append(msg)
        finally:
            sub.close()
            ctx.term()

    def first(self, cls):
        return next((m for m in self.msgs if isinstance(m, cls)), None)


def tear(session_dir: Path, rng: random.Random) -> int:
    """Append the start of a record that never finished to the newest segment (a write cut short)."""
    segs = list_segments(session_dir)
    if not segs:
        return 0
    junk = RECORD_MAGIC + rng.randbytes(rng.randrange(8, 400))
    with open(segs[-1][1], "ab") as f:
        f.write(junk)
    return len(junk)


@pytest.mark.slow
def test_recorder_killed_at_random_keeps_every_sample_exactly_once(procs, stack_env):
    rng = random.Random(20261124)
    data = Path(stack_env["AMRWATCH_DATA"])
    watch = Watch(stack_env["AMRWATCH_BUS_OUT"])
    procs.start("bus")
    watch.start()
    assert watch.ready.wait(10)
    rec = procs.start("recorder")
    # 15 EMG channels + the sample-index channel; --loop keeps the acquirer (and its retransmit buffer) up
    # after the session so a recorder restarted late can still catch up.
    procs.start("acquirer", "--channels", str(CHANNELS - 1), "--sample-index-channel", "--time-scale",
                str(TIME_SCALE), "--loop", "--wait-for", "recorder")
    deadline = time.monotonic() + 60
    while watch.first(SessionStart) is None:
        assert time.monotonic() < deadline, procs.log("acquirer")[-2000:]
        time.sleep(0.1)
    sid = watch.first(SessionStart).session_id
    torn = kills = 0
    t_kills = time.monotonic()
    try:
        for k in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.4))
            rec.send_signal(signal.SIGKILL)
            rec.wait(timeout=10)
            kills += 1
            last_kill = dt.datetime.now(dt.UTC)
            if k % 4 == 3 and tear(session_path(data, sid), rng):
                torn += 1
            rec = procs.start("recorder")
        kill_span = time.monotonic() - t_kills
        [row] = wait_closed(data, 1, timeout=120 + 527 * TIME_SCALE, procs=procs)
    finally:
        watch.stop = True
    ended = next(m for m in watch.msgs if isinstance(m, SessionEnd) and m.session_id == sid)
    assert ended.ts_utc > last_kill, "the session ended before the last kill: the harness proved nothing"
    assert row.session_id == sid

    d = session_path(data, sid)
    assert ArchiveReader(d).verify() == []
    logs = procs.log("recorder")
    cuts = len(re.findall(r"recovery cut a torn tail", logs))
    refetched = sum(int(n) for n in re.findall(r"refetched (\d+) ", logs))
    with ArchiveIndex.build(d) as idx:
        end = idx.session_end().header
        resumes = len(idx.resumes)
        sig = SignalOrder(idx)
        montage = idx.session_start().header["montage"]
        names = [c["name"] for c in montage["channels"]]
        assert len(names) == CHANNELS and montage["sampling_rate_hz"] == 20000.0
        frame_gaps = [g for _, g in idx.gaps if g.type == "emg_frame"]
        lost = sig.missing_samples()
        k = names.index("SAMPLE_INDEX")
        assert sig.duplicates == 0
        if lost or frame_gaps:
            # Acceptable only when named: a gap record for the frames and the data_gap alarm that reported it.
            alarms = [m.message for m in watch.msgs if isinstance(m, Alarm) and m.kind == "data_gap"]
            assert frame_gaps, f"samples {lost} are missing and no gap record names them"
            for g in frame_gaps:
                assert any(f"seq {g.from_seq}..{g.to_seq}" in a for a in alarms), (g, alarms)
            print(f"\nlost and named: samples {lost}; gap records {frame_gaps}")
            for r, lo in zip(sig.rows, sig.lo):  # what is there is still exact and once
                x = idx.samples(int(r))[k]
                assert np.array_equal(x, ((lo + np.arange(x.size)) % 2**24).astype(np.float32))
        else:
            assert len(sig.rows) == end["n_frames"] and int(sig.hi[-1]) == end["n_samples"]
            whole = np.concatenate([idx.samples(int(r))[k] for r in sig.rows])
            assert np.array_equal(whole, (np.arange(end["n_samples"]) % 2**24).astype(np.float32))
        stims = sorted(e.header["stimulus_index"] for e in idx.events_of("stimulus") if e.session_id == sid)
        assert stims == list(range(end["n_stimuli"]))
        truths = [(e.header["stimulus_index"], e.header["channel"]) for e in idx.events_of("sim_truth")]
        assert len(truths) == len(set(truths))
    assert kills == KILLS and resumes >= 1 and (torn == 0 or cuts >= 1)
    print(f"\nkill harness: {kills} SIGKILLs in {kill_span:.0f} s of a {end['n_samples'] / 20000:.0f} s "
          f"{CHANNELS}-channel 20 kHz session; {resumes} resumes, {torn} torn tails injected, {cuts} cut; "
          f"{refetched} messages refetched from the acquirer; {end['n_frames']} frames and "
          f"{end['n_samples']} samples, each archived exactly once; {len(idx.gaps)} gap record(s) "
          f"(none of the signal)")
