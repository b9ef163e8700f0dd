"""Bus benchmark: publish cost per frame, and latency added over bare pyzmq.

Everything is measured in one run on one machine and reported as ratios to
a baseline from that same run, because these machines are shared and noisy.

- publish cost: `Publisher.publish(EmgFrame, ...)` (build, validate, encode,
  send) against `send_multipart` of the same bytes pre-encoded;
- latency: one process sends frame-sized messages stamped with
  CLOCK_MONOTONIC (system-wide on Linux), another receives them:
  (a) bare PUB → SUB, one hop; (b) bare PUB → zmq.proxy → SUB, two hops;
  (c) amrwatch: Publisher → `amrwatch bus` → Subscriber (decode+validate).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np
import zmq

N_MSG = int(os.environ.get("BENCH_BUS_N", "5000"))
RATE_HZ = 2000.0  # paced, so we measure latency rather than queueing
CHANNELS, SAMPLES = 3, 100  # a 5 ms frame of the default montage at 20 kHz


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


# --------------------------------------------------------------------------- #
# Publish cost


def publish_cost(n: int = 20000) -> dict[str, float]:
    from amrwatch.bus import Publisher
    from amrwatch.proto.codec import encode
    from amrwatch.proto.messages import EmgFrame, utc_now

    ctx = zmq.Context()
    port = _port()
    sink = ctx.socket(zmq.XSUB)
    sink.bind(f"tcp://127.0.0.1:{port}")
    pub = Publisher(ctx, f"tcp://127.0.0.1:{port}", "bench")
    sink.send(b"\x01")  # subscribe to everything so messages really go out
    pub.wait_ready(5)
    samples = np.random.default_rng(0).normal(size=(CHANNELS, SAMPLES)).astype(np.float32)
    t0 = utc_now()

    def one(i: int) -> None:
        pub.publish(EmgFrame, "BENCH", first_sample_index=i * SAMPLES, n_channels=CHANNELS, n_samples=SAMPLES,
                    sampling_rate_hz=20000.0, dtype="<f4", layout="channel_major",
                    first_sample_device_s=i * 0.005, first_sample_utc=t0, samples=samples)

    frames = encode(pub.build(EmgFrame, "BENCH", first_sample_index=0, n_channels=CHANNELS, n_samples=SAMPLES,
                              sampling_rate_hz=20000.0, dtype="<f4", layout="channel_major",
                              first_sample_device_s=0.0, first_sample_utc=t0, samples=samples))
    drain = zmq.Poller()
    drain.register(sink, zmq.POLLIN)

    def empty() -> None:
        while drain.poll(0):
            sink.recv_multipart()

    best_ours, best_bare = [], []
    for _ in range(3):
        t = time.perf_counter()
        for i in range(n):
            one(i)
        best_ours.append((time.perf_counter() - t) / n)
        empty()
        t = time.perf_counter()
        for _i in range(n):
            pub.sock.send_multipart(frames, copy=False)
        best_bare.append((time.perf_counter() - t) / n)
        empty()
    pub.close()
    sink.close(linger=0)
    ctx.term()
    ours, bare = min(best_ours), min(best_bare)
    return {"ours_us": ours * 1e6, "bare_us": bare * 1e6, "ratio": ours / bare}


# --------------------------------------------------------------------------- #
# Latency


def _bare_sender(endpoint: str, n: int, ready) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.XPUB)
    s.connect(endpoint)
    s.recv()  # the subscription has arrived: no slow-joiner loss
    ready.wait()
    payload = np.zeros(CHANNELS * SAMPLES, dtype=np.float32).tobytes()
    start = time.monotonic()
    for i in range(n):
        due = start + i / RATE_HZ
        while time.monotonic() < due:
            pass
        s.send_multipart([b"emg_frame", str(time.monotonic_ns()).encode(), payload])
    s.close(linger=1000)
    ctx.term()


def _ours_sender(endpoint: str, n: int, ready) -> None:
    from amrwatch.bus import Publisher
    from amrwatch.proto.messages import EmgFrame, utc_now

    ctx = zmq.Context()
    pub = Publisher(ctx, endpoint, "bench")
    pub.wait_ready(10)
    ready.wait()
    samples = np.zeros((CHANNELS, SAMPLES), dtype=np.float32)
    t0 = utc_now()
    start = time.monotonic()
    for i in range(n):
        due = start + i / RATE_HZ
        while time.monotonic() < due:
            pass
        pub.publish(EmgFrame, "BENCH", first_sample_index=i * SAMPLES, n_channels=CHANNELS, n_samples=SAMPLES,
                    sampling_rate_hz=20000.0, dtype="<f4", layout="channel_major",
                    first_sample_device_s=time.monotonic_ns() / 1e9, first_sample_utc=t0, samples=samples)
    pub.close()
    ctx.term()


def _bare_forwarder(bind_in: str, bind_out: str) -> None:
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xsub.bind(bind_in)
    xpub.bind(bind_out)
    try:
        zmq.proxy(xsub, xpub)
    except zmq.ContextTerminated:
        pass


def _receive(sock: zmq.Socket, n: int, decode_ours: bool) -> tuple[list[float], int]:
    from amrwatch.proto.codec import decode

    lat, got = [], 0
    while got < n and sock.poll(5000):
        parts = sock.recv_multipart(copy=False)
        now = time.monotonic_ns()
        if decode_ours:
            msg = decode(parts)
            if msg.type != "emg_frame":
                continue
            sent = msg.first_sample_device_s * 1e9
        else:
            sent = int(bytes(parts[1]))
        lat.append((now - sent) / 1e3)
        got += 1
    return lat, got


def latency(n: int = N_MSG) -> dict[str, dict[str, float]]:
    mpc = mp.get_context("spawn")
    out: dict[str, dict[str, float]] = {}
    ctx = zmq.Context()

    # (a) bare, one hop: the receiver binds an XSUB-compatible SUB? PUB must connect to
    # something that sends a subscription: a SUB binding does.
    port = _port()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(f"tcp://127.0.0.1:{port}")
    ready = mpc.Event()
    p = mpc.Process(target=_bare_sender, args=(f"tcp://127.0.0.1:{port}", n, ready))
    p.start()
    ready.set()
    lat, got = _receive(sub, n, False)
    p.join()
    sub.close(linger=0)
    out["bare PUB→SUB (1 hop)"] = {**_pct(lat), "received": got}

    # (b) bare, two hops through zmq.proxy
    pin, pout = _port(), _port()
    fwd = mpc.Process(target=_bare_forwarder, args=(f"tcp://127.0.0.1:{pin}", f"tcp://127.0.0.1:{pout}"),
                      daemon=True)
    fwd.start()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{pout}")
    ready = mpc.Event()
    p = mpc.Process(target=_bare_sender, args=(f"tcp://127.0.0.1:{pin}", n, ready))
    p.start()
    ready.set()
    lat, got = _receive(sub, n, False)
    p.join()
    fwd.terminate()
    sub.close(linger=0)
    out["bare PUB→proxy→SUB (2 hops)"] = {**_pct(lat), "received": got}

    # (c) amrwatch: Publisher → `amrwatch bus` process → decode + validate
    pin, pout = _port(), _port()
    env = dict(os.environ, AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{pin}",
               AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{pout}", AMRWATCH_METRICS_PORT_BUS="0")
    bus = subprocess.Popen([sys.executable, "-m", "amrwatch", "bus"], env=env, stderr=subprocess.DEVNULL)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"emg_frame")
    sub.connect(f"tcp://127.0.0.1:{pout}")
    ready = mpc.Event()
    p = mpc.Process(target=_ours_sender, args=(f"tcp://127.0.0.1:{pin}", n, ready))
    p.start()
    ready.set()
    lat, got = _receive(sub, n, True)
    p.join()
    bus.terminate()
    bus.wait()
    sub.close(linger=0)
    out["amrwatch Publisher→bus→Subscriber"] = {**_pct(lat), "received": got}
    ctx.term()
    return out


def run() -> str:
    cost = publish_cost()
    lat = latency()
    base1 = lat["bare PUB→SUB (1 hop)"]
    base2 = lat["bare PUB→proxy→SUB (2 hops)"]
    ours = lat["amrwatch Publisher→bus→Subscriber"]
    lines = [
        "## Bus (foundation)",
        "",
        f"Frame: {CHANNELS} channels × {SAMPLES} samples float32 (5 ms at 20 kHz), {N_MSG} messages paced at "
        f"{RATE_HZ:g}/s.",
        "",
        "| publish cost per frame | µs | ratio |",
        "|---|---|---|",
        f"| bare `send_multipart` of pre-encoded frames (baseline) | {cost['bare_us']:.1f} | 1.0 |",
        f"| `Publisher.publish(EmgFrame)`: build + validate + encode + send | {cost['ours_us']:.1f} | "
        f"{cost['ratio']:.1f}× |",
        "",
        "| one-way latency | p50 µs | p99 µs | max µs | received | p50 / bare 1 hop | p99 / bare 2 hops |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in lat.items():
        lines.append(
            f"| {name} | {r['p50']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['received']}/{N_MSG} | "
            f"{r['p50'] / base1['p50']:.2f} | {r['p99'] / base2['p99']:.2f} |"
        )
    lines += [
        "",
        f"Added by amrwatch over the bare two-hop path: p50 {ours['p50'] - base2['p50']:.0f} µs, "
        f"p99 {ours['p99'] - base2['p99']:.0f} µs (pydantic validation and JSON on both ends, our proxy loop).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
