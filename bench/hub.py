"""The hub following 8, 16 and 32 rooms: event at the cart → tile updated in headless Chromium (p50/p99), with
and without a 150 ms RTT, the hub's CPU share, and the bandwidth per room.

Rooms: light carts, many in one process (`python -m bench.hub carts ...`): each binds its own CURVE bus_out
(XPUB) and control (ROUTER) socket and publishes what a running cart sends the hub — heartbeats of 4 services
at 2 Hz, a stimulus at 1 Hz, and a `stage` change every 2 s per room (the timed event; its ts_utc is the send
time). 32 full stacks (an acquirer at 20 kHz each) would measure the 2-core machine, not the hub.
The browser records when each room's tile first shows each new stage (`window.onTiles`); same machine, same
clock. The bandwidth per room is measured on one *real* cart (bus + acquirer + analyzer + monitor publishing
display sweeps, 3 channels, 1 Hz
stimulation): the bytes the hub received, and, for the full-rate option, the bytes of its emg_frames.
With RTT: the carts run in a network namespace of the run's own; 150 ms RTT by netem, or, on a kernel without
netem, by the delaying relay of tests/hub (stated in the table).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["baseline", "incision", "dural_opening", "csf_release", "retraction", "arachnoid_dissection",
          "decompression", "closure"]
DURATION_S = float(os.environ.get("BENCH_HUB_S", "20"))


# --------------------------------------------------------------------------- #
# The light carts (a subprocess)


def carts_main(ip: str, base_port: int, n: int, log_path: str) -> None:
    import zmq
    from amrwatch.proto.codec import encode
    from amrwatch.proto.messages import (
        SCHEMA_VERSION,
        Heartbeat,
        StageMarker,
        Stimulus,
        utc_now,
    )

    from amrwatch import security

    ctx = zmq.Context()
    rooms = []
    for i in range(n):
        pub = ctx.socket(zmq.XPUB)
        security.server(pub, ctx)
        pub.bind(f"tcp://{ip}:{base_port + 2 * i}")
        ctl = ctx.socket(zmq.ROUTER)
        security.server(ctl, ctx)
        ctl.bind(f"tcp://{ip}:{base_port + 2 * i + 1}")
        rooms.append({"pub": pub, "ctl": ctl, "seq": {}, "inst": secrets.token_hex(4), "sid": secrets.token_hex(8),
                      "stage": i % len(STAGES)})
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def send(room, cls, publisher, **body):
        seq = room["seq"].get((publisher, cls.TOPIC), 0)
        msg = cls(type=cls.TOPIC, schema_version=SCHEMA_VERSION, session_id=room["sid"], seq=seq,
                  publisher=publisher, instance=room["inst"] if publisher == "acquirer" else
                  room["inst"][:6] + {"bus": "b0", "analyzer": "a0", "predictor": "c0"}[publisher], ts_utc=utc_now(),
                  **body)
        room["pub"].send_multipart(encode(msg))
        room["seq"][(publisher, cls.TOPIC)] = seq + 1
        return msg

    poller = zmq.Poller()
    for r in rooms:
        poller.register(r["ctl"], zmq.POLLIN)
        poller.register(r["pub"], zmq.POLLIN)
    start = time.monotonic()
    next_hb = next_stim = start
    next_stage = [start + 2.0 * i / n for i in range(n)]
    k = 0
    with open(log_path, "a", buffering=1) as log:
        while not stop["now"]:
            now = time.monotonic()
            if now >= next_hb:
                for r in rooms:
                    for svc in ("bus", "acquirer", "analyzer", "predictor"):
                        send(r, Heartbeat, svc, service=svc, version="bench", status="ok", uptime_s=now - start,
                             interval_s=0.5, active_alarms=[], info={})
                next_hb += 0.5
            if now >= next_stim:
                for r in rooms:
                    send(r, Stimulus, "acquirer", stimulus_index=k, sample_index=k * 20000, stim_time_s=float(k),
                         direction="ZYG", intensity_ma=15.0, width_ms=0.2)
                k += 1
                next_stim += 1.0
            for i, r in enumerate(rooms):
                if now >= next_stage[i]:
                    r["stage"] = (r["stage"] + 1) % len(STAGES)
                    msg = send(r, StageMarker, "acquirer", stage=STAGES[r["stage"]], source="operator",
                               sample_index=k * 20000)
                    log.write(json.dumps({"room": f"R{i:02d}", "stage": STAGES[r["stage"]],
                                          "t": msg.ts_utc.timestamp()}) + "\n")
                    next_stage[i] += 2.0
            for sock, _ in poller.poll(10):
                if sock.socket_type == zmq.XPUB:
                    while True:
                        try:
                            sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                    continue
                parts = sock.recv_multipart()
                req = json.loads(parts[-1])
                if req.get("op") == "streams":
                    reply = [json.dumps({"ok": True, "n_messages": 0, "detail": {}}).encode(), b"[]"]
                else:
                    reply = [json.dumps({"ok": False, "error": "bench cart: only streams", "n_messages": 0,
                                         "detail": {}}).encode()]
                sock.send_multipart([*parts[:-1], *reply])
    ctx.destroy(linger=0)


# --------------------------------------------------------------------------- #
# One configuration


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(n: int, rtt_ms: float, tmp: Path, keys: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.hub.wan import Wan

    wan = Wan() if rtt_ms > 0 else None
    procs: list[subprocess.Popen] = []
    how = "loopback"
    try:
        if wan is not None:
            wan.__enter__()
            how = wan.impair(rtt_ms, 0.0)
            ip = wan.cart_ip
        else:
            ip = "127.0.0.1"
        base = 30000 if wan is not None else _free_port() // 2 * 2 % 20000 + 30000
        env = dict(os.environ, AMRWATCH_KEYS=str(keys), PYTHONPATH=str(ROOT))
        log = tmp / f"sent-{n}-{rtt_ms:g}.jsonl"
        cmd = [sys.executable, "-m", "bench.hub", "carts", ip, str(base), str(n), str(log)]
        procs.append(subprocess.Popen(wan.ns_cmd(*cmd) if wan else cmd, env=env, cwd=ROOT))
        ports = [(base + 2 * i, base + 2 * i + 1) for i in range(n)]
        if wan is not None and not wan.netem:
            wan.relay([(p + 10000, p) for pair in ports for p in pair], rtt_ms)
            ports = [(a + 10000, b + 10000) for a, b in ports]
        token = secrets.token_urlsafe(24)
        (tmp / "token").write_text(token)
        port = _free_port()
        rooms = "".join(f'[[room]]\nname = "R{i:02d}"\nbus = "tcp://{ip}:{a}"\ncontrol = "tcp://{ip}:{b}"\n'
                        f'server_key = "{keys / "server.key"}"\n\n' for i, (a, b) in enumerate(ports))
        cfg = tmp / f"rooms-{n}.toml"
        cfg.write_text(f'[hub]\nkey = "{keys / "reader-anna.key_secret"}"\nport = {port}\n'
                       f'token_file = "{tmp / "token"}"\nstale_after_s = 5\n\n{rooms}')
        hub_env = {k: v for k, v in os.environ.items() if not k.startswith("AMRWATCH_")}
        hub = subprocess.Popen([sys.executable, "-m", "amrwatch", "hub", "--config", str(cfg)], env=hub_env,
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(hub)
        seen: dict[tuple[str, str], float] = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            deadline = time.monotonic() + 30
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/?token={token}", timeout=3000)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # the hub is starting
            page.evaluate("""() => { window.seen = {}; window.onTiles = (j) => { const now = Date.now();
                for (const t of j.rooms) { const k = t.room + '|' + t.stage; if (!(k in window.seen)) window.seen[k] = now; } }; }""")
            page.wait_for_function(f"document.querySelectorAll('.tile[data-stale=\"false\"]').length === {n}",
                                   timeout=60_000)
            t0 = time.time()
            cpu0 = _cpu_s(hub.pid)
            w0 = time.monotonic()
            page.wait_for_timeout(DURATION_S * 1000)
            cpu = (_cpu_s(hub.pid) - cpu0) / (time.monotonic() - w0)
            raw = page.evaluate("window.seen")
            browser.close()
        for k, v in raw.items():
            room, stage = k.split("|", 1)
            seen[(room, stage)] = v / 1000.0
        # A stage name recurs every 16 s in a room: match each send to the first sighting after it.
        lat = []
        sent = [json.loads(x) for x in log.read_text().splitlines()]
        for s in sent:
            if s["t"] < t0 + 1 or s["t"] > t0 + DURATION_S - 2:
                continue
            v = seen.get((s["room"], s["stage"]))
            if v is not None and v >= s["t"] - 0.005:
                lat.append((v - s["t"]) * 1000)
        lat.sort()
        return {"n": n, "rtt": rtt_ms, "how": how, "events": len(lat),
                "p50": statistics.median(lat) if lat else float("nan"),
                "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
                "cpu": cpu * 100}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if wan is not None:
            wan.__exit__()


def bandwidth(tmp: Path, keys: Path, seconds: float = 30.0) -> dict:
    """Bytes per second the hub receives from one real cart (bus + acquirer + analyzer), and its frames' rate."""
    import zmq
    from amrwatch.services.hub.config import load
    from amrwatch.services.hub.service import BYTES, Hub

    p_in, p_out, p_ctl = _free_port(), _free_port(), _free_port()
    env = dict(os.environ, AMRWATCH_KEYS=str(keys), AMRWATCH_BUS_IN=f"tcp://127.0.0.1:{p_in}",
               AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{p_in}", AMRWATCH_BUS_OUT=f"tcp://127.0.0.1:{p_out}",
               AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{p_out}", AMRWATCH_CONTROL=f"tcp://127.0.0.1:{p_ctl}",
               AMRWATCH_CONTROL_BIND=f"tcp://127.0.0.1:{p_ctl}", AMRWATCH_DATA=str(tmp / "bwdata"))
    env["AMRWATCH_MONITOR_PORT"] = str(_free_port())
    for s in ("BUS", "ACQUIRER", "ANALYZER", "MONITOR"):
        env[f"AMRWATCH_METRICS_PORT_{s}"] = "0"
    procs = [subprocess.Popen([sys.executable, "-m", "amrwatch", *a], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for a in (("bus",), ("analyzer",), ("monitor", "--publish-sweeps"),
                       ("acquirer", "--speed", "1", "--loop", "--wait-for", "analyzer,monitor"))]
    cfg_path = tmp / "bw.toml"
    cfg_path.write_text(f'[hub]\nkey = "{keys / "reader-anna.key_secret"}"\n\n[[room]]\nname = "BW"\n'
                        f'bus = "tcp://127.0.0.1:{p_out}"\ncontrol = "tcp://127.0.0.1:{p_ctl}"\n'
                        f'server_key = "{keys / "server.key"}"\n')
    hub = Hub(load(cfg_path))
    hub.start()
    os.environ["AMRWATCH_KEYS"] = str(keys)
    from amrwatch.bus import Subscriber

    ctx = zmq.Context()
    frames = Subscriber(ctx, f"tcp://127.0.0.1:{p_out}", ("emg_frame",))
    sweeps = Subscriber(ctx, f"tcp://127.0.0.1:{p_out}", ("sweep_display",))
    try:
        deadline = time.monotonic() + 60
        while hub.rooms["BW"].last_stimulus_utc is None and time.monotonic() < deadline:
            frames.recv_frames(100)
        b0 = BYTES.labels("BW")._value.get()
        s0 = hub.rooms["BW"].events
        fbytes = sbytes = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            f = frames.recv_frames(50)
            if f is not None:
                fbytes += sum(len(x) for x in f)
            while (g := sweeps.recv_frames(0)) is not None:
                sbytes += sum(len(x) for x in g)
        dt = time.monotonic() - t0
        events = hub.rooms["BW"].events - s0
        return {"hub_bps": (BYTES.labels("BW")._value.get() - b0) * 8 / dt, "frames_bps": fbytes * 8 / dt,
                "sweeps_bps": sbytes * 8 / dt,
                "events_per_s": events / dt}
    finally:
        hub.stop()
        ctx.destroy(linger=0)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def run() -> str:
    from amrwatch import security

    if not Path("/usr/bin/chromium").exists():
        return "## Hub (remote reading station)\n\nnot run: /usr/bin/chromium is missing\n"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        keys = tmp / "keys"
        security.generate(keys, clients=("client", "reader-anna"))
        rows = []
        for rtt in (0.0, 150.0):
            for n in (8, 16, 32):
                if rtt > 0 and os.geteuid() != 0:
                    continue
                rows.append(measure(n, rtt, tmp, keys))
        bw = bandwidth(tmp, keys)
    out = ["## Hub (remote reading station)", "",
           "- when: " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + "; shared 2-core machine (other "
           "stacks running): the p99 tails move with the load, the p50s and CPU shares less", "",
           (f"Light carts in one process (see bench/hub.py); {DURATION_S:g} s per row; a `stage` event every 2 s per "
           "room, timed from its `ts_utc` at the cart to the browser's first sight of it on the tile (long poll)."),
           "", "| rooms | RTT | link | events timed | event → tile p50 / p99 | hub CPU (of one core) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        link = ("loopback" if r["rtt"] == 0 else "netem" if r["how"].startswith("tc netem") else
                "delaying relay (kernel without netem)")
        out.append(f"| {r['n']} | {r['rtt']:g} ms | {link} | {r['events']} | {r['p50']:.0f} / {r['p99']:.0f} ms "
                   f"| {r['cpu']:.1f} % |")
    out += ["", ("Bandwidth, one real cart (bus + acquirer + analyzer + monitor --publish-sweeps; simulator, 3 channels, 1 Hz stimulation), "
            "message bytes (ZMTP/CURVE/TCP framing not counted):"), "",
            "| what | per room |", "|---|---|",
            (f"| what the hub receives (events + heartbeats) | {bw['hub_bps'] / 1000:.1f} kbit/s "
            f"({bw['events_per_s']:.1f} events/s) |"),
            (f"| full rate (the room's emg_frames, what the room's own monitor takes) | {bw['frames_bps'] / 1000:.0f} "
            "kbit/s |"), ""]
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "carts":
        carts_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        print(run())
