"""The floors the pipeline is compared with, measured in the same run with the same traffic.

Both chains mirror the pipeline's topology for a measurement: a sender
publishes frames (same size, same pace, same stimulus positions) to a
stand-in analyzer that does no analysis — on the frame that completes a
sweep it at once sends as many measurement-sized messages as the real
analyzer sends for that stimulus — and an outside subscriber that receives
both the frames and the measurements and stamps them on arrival.

- bare pyzmq: sender → zmq.proxy → stand-in → zmq.proxy → subscriber,
  the pipeline's 4 hops through one proxy, with no validation, no JSON;
- Lab Streaming Layer (pylsl): frames on a float32 outlet, measurements on a
  string outlet; LSL is point to point, so the same path is 2 hops.

Latency = arrival at the subscriber − the sender's CLOCK_MONOTONIC at
publish (LSL's local_clock is CLOCK_MONOTONIC too: the sample's timestamp).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

N_SAMPLES = 100  # 5 ms frames at 20 kHz, as the acquirer sends
FS = 20000.0
MODULUS = 2**24


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wire_sizes(n_channels: int) -> tuple[int, int]:
    """Header bytes of a real emg_frame and amr_measurement (the codec's own output)."""
    from amrwatch.proto.codec import encode
    from amrwatch.proto.messages import AmrMeasurement, EmgFrame, utc_now

    env = dict(schema_version=1, session_id="20261124T095557Z-d2ae94", seq=123456, instance="0123abcd",
               ts_utc=utc_now())
    frame = EmgFrame(type="emg_frame", publisher="acquirer", first_sample_index=12345600, n_channels=n_channels,
                     n_samples=N_SAMPLES, sampling_rate_hz=FS, dtype="<f4", layout="channel_major",
                     first_sample_device_s=617.28, first_sample_utc=utc_now(), **env)
    frame.with_samples(np.zeros((n_channels, N_SAMPLES), np.float32))
    meas = AmrMeasurement(type="amr_measurement", publisher="analyzer", stimulus_index=1234, stim_time_s=617.25,
                          channel="MENT", direction="ZYG", p2p_uv=123.456, onset_latency_ms=10.1234,
                          peak_latency_ms=12.3456, area_uv_ms=456.789, n_phases=3, noise_uv=3.1234, snr=39.528,
                          present=True, pct_of_baseline=87.6, rejected=False, reject_reason=None,
                          stage="decompression", assessment="present", assessment_reason=None,
                          detection_limit_uv=31.234, stimulus_confirmed=True, **env)
    return len(encode(frame)[1]), len(encode(meas)[1])


@dataclass(frozen=True)
class Traffic:
    """What the acquirer sends: frames of `channels` × 100 samples at 20 kHz × speed, stimuli at
    `stim_hz` × speed starting 0.5 s in, alternately recorded by 2 (ZYG) and 1 (MAR) channels."""

    channels: int
    speed: float
    seconds: float
    tick_s: float
    stim_hz: float = 1.0
    post: int = 1000

    @property
    def n_frames(self) -> int:
        return int(self.seconds * FS * self.speed / N_SAMPLES)

    def completing(self) -> dict[int, int]:
        """frame index → measurements the analyzer sends when it arrives."""
        period = FS / self.stim_hz
        out, k = {}, 0
        while True:
            s = int(round(0.5 * FS + k * period))
            f = (s + self.post - 1) // N_SAMPLES
            if f >= self.n_frames:
                return out
            out[f] = 2 if k % 2 == 0 else 1
            k += 1


def _paced(traffic: Traffic):
    """Yield frame indices when they fall due, in bursts per tick like the acquirer's loop."""
    t0 = time.monotonic()
    sent = 0
    per_s = FS * traffic.speed / N_SAMPLES
    while sent < traffic.n_frames:
        due = min(int((time.monotonic() - t0) * per_s), traffic.n_frames)
        while sent < due:
            yield sent
            sent += 1
        time.sleep(traffic.tick_s)


# --------------------------------------------------------------------------- bare pyzmq

def _proxy(bind_in: str, bind_out: str) -> None:
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.setsockopt(zmq.RCVHWM, 200_000)
        s.setsockopt(zmq.SNDHWM, 200_000)
    xsub.bind(bind_in)
    xpub.bind(bind_out)
    try:
        zmq.proxy(xsub, xpub)
    except zmq.ContextTerminated:
        pass


def _wait_subs(sock: zmq.Socket, wanted: set[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[bytes] = set()
    while not wanted <= seen:
        if not sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000) + 1):
            raise RuntimeError(f"subscriptions {wanted - seen} never arrived")
        ev = sock.recv()
        if ev[:1] == b"\x01":
            seen.add(ev[1:])


def _stand_in(bus_in: str, bus_out: str, meas_len: int, ready, stop) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 200_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"emg_frame")
    sub.connect(bus_out)
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 200_000)
    pub.connect(bus_in)
    _wait_subs(pub, {b""})
    ready.set()
    pad = b" " * (meas_len - 21)
    while not stop.is_set():
        if not sub.poll(100):
            continue
        while True:
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            head = parts[1].bytes
            c = head[20] - 48
            for _ in range(c):
                pub.send_multipart([b"amr_measurement", head[:21] + pad, b""])
    sub.close(linger=0)
    pub.close(linger=0)
    ctx.term()


def _subscriber(bus_out: str, n_frames: int, results, ready, stop) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 200_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(bus_out)
    ready.set()
    frame_lat, meas_lat, frames_seen = [], [], set()
    while not stop.is_set():
        if not sub.poll(100):
            continue
        while True:
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            now = time.monotonic_ns()
            head = parts[1].bytes
            sent = int(head[:20])
            if parts[0].bytes == b"emg_frame":
                frame_lat.append(now - sent)
                frames_seen.add(int(head[21:33]))
            else:
                meas_lat.append(now - sent)
    results.put({"frame_ns": frame_lat, "meas_ns": meas_lat, "frames": len(frames_seen)})
    sub.close(linger=0)
    ctx.term()


def bare_chain(traffic: Traffic) -> dict:
    from .stack import MachineCpu

    machine = MachineCpu()
    frame_len, meas_len = wire_sizes(traffic.channels)
    mpc = mp.get_context("spawn")
    p_in, p_out = _port(), _port()
    bus_in, bus_out = f"tcp://127.0.0.1:{p_in}", f"tcp://127.0.0.1:{p_out}"
    stop = mpc.Event()
    results = mpc.Queue()
    proxy = mpc.Process(target=_proxy, args=(f"tcp://127.0.0.1:{p_in}", f"tcp://127.0.0.1:{p_out}"), daemon=True)
    proxy.start()
    r_sub, r_in = mpc.Event(), mpc.Event()
    subp = mpc.Process(target=_subscriber, args=(bus_out, traffic.n_frames, results, r_sub, stop))
    subp.start()
    r_sub.wait(30)
    stand = mpc.Process(target=_stand_in, args=(bus_in, bus_out, meas_len, r_in, stop))
    stand.start()
    r_in.wait(30)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 200_000)
    pub.connect(bus_in)
    _wait_subs(pub, {b"", b"emg_frame"})
    completing = traffic.completing()
    payload = np.zeros((traffic.channels, N_SAMPLES), np.float32).tobytes()
    pad = b" " * (frame_len - 33)
    expected_meas = 0
    for i in _paced(traffic):
        c = completing.get(i, 0)
        expected_meas += c
        pub.send_multipart([b"emg_frame", b"%020d%d%012d" % (time.monotonic_ns(), c, i) + pad, payload],
                           copy=False)
    time.sleep(1.0)
    stop.set()
    try:
        res = results.get(timeout=30)
    except queue.Empty:
        res = {"frame_ns": [], "meas_ns": [], "frames": 0}
    for p in (subp, stand):
        p.join(10)
    proxy.terminate()
    pub.close(linger=0)
    ctx.term()
    return {"measurement_ms": np.array(res["meas_ns"]) / 1e6, "transport_ms": np.array(res["frame_ns"]) / 1e6,
            "frames_sent": traffic.n_frames, "frames_received": res["frames"],
            "measurements_expected": expected_meas, "measurements_received": len(res["meas_ns"]),
            "frame_header_bytes": frame_len, "measurement_header_bytes": meas_len, "machine_pct": machine.pct()}


# --------------------------------------------------------------------------- Lab Streaming Layer

def _lsl_stand_in(uid: str, n_channels: int, completing_samples: dict[int, int], meas_len: int, ready, stop,
                  results) -> None:
    import pylsl

    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", uid + "-emg", timeout=20)[0], max_buflen=60,
                              recover=False)
    inlet.open_stream(timeout=20)
    out = pylsl.StreamOutlet(pylsl.StreamInfo("bench-meas", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                              uid + "-meas"))
    text = "x" * meas_len
    ready.set()
    buf = np.zeros((65536, n_channels), np.float32)
    expected, lost = None, 0
    while not stop.is_set():
        s, ts = inlet.pull_sample(timeout=0.2)
        if s is None:
            continue
        _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=buf.shape[0] - 1, dest_obj=buf[1:])
        buf[0] = s
        n = 1 + len(stamps)
        idx = buf[:n, -1].astype(np.int64)
        first = int(idx[0])
        if expected is not None and first != expected % MODULUS:
            lost += (first - expected) % MODULUS
        expected = int(idx[-1]) + 1
        last_ts = stamps[-1] if len(stamps) else ts
        for j in np.nonzero(np.isin(idx, list(completing_samples)))[0]:
            stamp = ts if j == 0 else stamps[j - 1]
            for _ in range(completing_samples[int(idx[j])]):
                out.push_sample([text], stamp, pushthrough=True)
        del last_ts
    results.put({"stand_in_lost_samples": lost})


def _lsl_subscriber(uid: str, n_channels: int, ready, stop, results) -> None:
    import pylsl

    frames = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", uid + "-emg", timeout=20)[0], max_buflen=60,
                               recover=False)
    meas = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", uid + "-meas", timeout=20)[0], max_buflen=60,
                             recover=False)
    frames.open_stream(timeout=20)
    meas.open_stream(timeout=20)
    ready.set()
    out = {"frame_ns": [], "meas_ns": [], "lost_samples": 0, "samples": 0}

    def take_meas() -> None:
        while not stop.is_set():
            s, ts = meas.pull_sample(timeout=0.2)
            if s is not None:
                out["meas_ns"].append(time.monotonic_ns() - int(ts * 1e9))

    th = threading.Thread(target=take_meas)
    th.start()
    buf = np.zeros((65536, n_channels), np.float32)
    expected = None
    while not stop.is_set():
        s, ts = frames.pull_sample(timeout=0.2)
        if s is None:
            continue
        _, stamps = frames.pull_chunk(timeout=0.0, max_samples=buf.shape[0] - 1, dest_obj=buf[1:])
        now = time.monotonic_ns()
        buf[0] = s
        n = 1 + len(stamps)
        idx = buf[:n, -1].astype(np.int64)
        if expected is not None and int(idx[0]) != expected % MODULUS:
            out["lost_samples"] += (int(idx[0]) - expected) % MODULUS
        expected = int(idx[-1]) + 1
        out["samples"] += n
        # A frame has arrived when its last sample has: the sample the sender stamped at push.
        all_ts = np.concatenate([[ts], stamps[: n - 1]]) if n > 1 else np.array([ts])
        ends = np.nonzero(idx % N_SAMPLES == N_SAMPLES - 1)[0]
        out["frame_ns"].extend((now - (all_ts[ends] * 1e9).astype(np.int64)).tolist())
    th.join()
    results.put(out)


def lsl_chain(traffic: Traffic) -> dict:
    import pylsl

    from .stack import MachineCpu

    machine = MachineCpu()
    _, meas_len = wire_sizes(traffic.channels)
    uid = f"amrwatch-bench-{os.getpid()}-{time.monotonic_ns()}"
    n_ch = traffic.channels
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo("bench-emg", "EMG", n_ch, FS, pylsl.cf_float32, uid + "-emg"),
                                chunk_size=N_SAMPLES, max_buffered=60)
    completing = traffic.completing()
    completing_samples = {f * N_SAMPLES + N_SAMPLES - 1: c for f, c in completing.items()}
    mpc = mp.get_context("spawn")
    stop, results = mpc.Event(), mpc.Queue()
    r1, r2 = mpc.Event(), mpc.Event()
    stand = mpc.Process(target=_lsl_stand_in, args=(uid, n_ch, completing_samples, meas_len, r1, stop, results))
    stand.start()
    r1.wait(30)
    subp = mpc.Process(target=_lsl_subscriber, args=(uid, n_ch, r2, stop, results))
    subp.start()
    r2.wait(30)
    deadline = time.monotonic() + 20
    while not outlet.have_consumers() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    block = np.zeros((N_SAMPLES, n_ch), np.float32)
    ramp = np.arange(N_SAMPLES, dtype=np.int64)
    expected_meas = 0
    for i in _paced(traffic):
        block[:, -1] = ((i * N_SAMPLES + ramp) % MODULUS).astype(np.float32)
        expected_meas += completing.get(i, 0)
        outlet.push_chunk(block, time.monotonic(), pushthrough=True)
    time.sleep(1.0)
    stop.set()
    got: dict = {}
    for _ in range(2):
        try:
            got.update(results.get(timeout=30))
        except queue.Empty:
            break
    for p in (stand, subp):
        p.join(10)
    del outlet
    return {"measurement_ms": np.array(got.get("meas_ns", [])) / 1e6,
            "transport_ms": np.array(got.get("frame_ns", [])) / 1e6,
            "frames_sent": traffic.n_frames, "samples_sent": traffic.n_frames * N_SAMPLES,
            "samples_received": got.get("samples", 0), "lost_samples": got.get("lost_samples", 0),
            "stand_in_lost_samples": got.get("stand_in_lost_samples", 0),
            "measurements_expected": expected_meas, "measurements_received": len(got.get("meas_ns", [])),
            "machine_pct": machine.pct()}
