"""`amrwatch acquirer --source lsl:NAME` as a real process on a real bus, fed by a real outlet process:
session_start carries the stream's facts (and the recorder archives them), an outlet killed and restarted
mid-session is a recorded gap with `signal_lost`, and the stimuli after it are on the right samples."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import numpy as np
import zmq

from amrwatch.bus import Subscriber
from amrwatch.proto.codec import decode
from amrwatch.archive.writer import ArchiveReader, session_path
from amrwatch.proto.messages import Alarm, EmgFrame, SessionStart, Stimulus

sys.path.insert(0, str(Path(__file__).parent))
import lsl_outlet as gen  # noqa: E402
from test_lsl_placement import Outlet  # noqa: E402


def test_acquirer_lsl_session_records_stream_facts_and_a_restart_gap(procs, stack_env):
    name = f"amracq-{uuid.uuid4().hex[:8]}"
    duration, seed = 16.0, 11
    n = int(duration * gen.FS)
    procs.start("bus")
    procs.start("recorder")
    ctx = zmq.Context()
    a = Outlet(name, "markers", "--seed", str(seed), "--duration-s", str(duration), "--source-id", f"{name}-A")
    b = None
    msgs: list = []
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("",))
        procs.start("acquirer", "--source", f"lsl:{name}", "--wait-for", "recorder")
        _, _, t0 = a.expect("START", 60).split()

        def pump(until, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                m = sub.recv(200)
                if m is not None:
                    msgs.append(m)
                    if until(m):
                        return
            raise AssertionError(f"timed out; {len(msgs)} messages; acquirer log:\n{procs.log('acquirer')[-3000:]}")

        pump(lambda m: isinstance(m, EmgFrame) and m.first_sample_index >= 5 * gen.FS, 60)
        a.stop()  # SIGKILL mid-session
        pump(lambda m: isinstance(m, Alarm) and m.kind == "signal_lost" and m.state == "raised", 30)
        b = Outlet(name, "markers", "--seed", str(seed), "--duration-s", str(duration), "--t0", t0, "--resume",
                   "--source-id", f"{name}-B")
        pump(lambda m: isinstance(m, EmgFrame) and m.first_sample_index + m.n_samples >= n - gen.CHUNK, 90)
        resumed_at = int(b.expect("START", 30).split()[1])
    finally:
        a.stop()
        if b is not None:
            b.stop()
        ctx.destroy(linger=0)
    start = next(m for m in msgs if isinstance(m, SessionStart))
    facts = start.stream
    assert facts is not None and facts.kind == "lsl" and facts.name == name
    assert facts.source_id == f"{name}-A" and facts.hostname and facts.nominal_rate_hz == gen.FS
    assert facts.channel_labels == gen.EMG and facts.stimulus_timing == "markers" and facts.clock == "shared_host"
    frames = [m for m in msgs if isinstance(m, EmgFrame)]
    jumps = [(f.first_sample_index + f.n_samples, g.first_sample_index) for f, g in zip(frames, frames[1:])
             if g.first_sample_index != f.first_sample_index + f.n_samples]
    assert len(jumps) == 1 and jumps[0][1] == resumed_at, (jumps, resumed_at)
    lost = [m for m in msgs if isinstance(m, Alarm) and m.kind == "signal_lost" and m.state == "raised"]
    assert lost, "signal_lost was not raised"
    rec = gen.Recording(seed, n, "markers")
    truth = np.array([s["index"] for s in rec.stims])
    got = [m for m in msgs if isinstance(m, Stimulus)]
    after = [s for s in got if s.sample_index >= resumed_at]
    assert len(after) >= 10
    for s in got:
        k = int(np.argmin(np.abs(truth - s.sample_index)))
        assert abs(truth[k] - s.sample_index) <= 1 and rec.stims[k]["direction"] == s.direction, s
    want_after = [t for t in truth if resumed_at <= t < n - int(0.4 * gen.FS)]
    assert {int(t) for t in want_after} <= {int(truth[np.argmin(np.abs(truth - s.sample_index))]) for s in after}
    # the recorder archived session_start as it was sent, stream facts included
    procs.stop_all()
    archived = [decode(f) for _, f in ArchiveReader(session_path(Path(stack_env["AMRWATCH_DATA"]),
                                                                  start.session_id)).messages()]
    kept = next(m for m in archived if isinstance(m, SessionStart))
    assert kept.stream == facts
