"""An outside subscriber that times frames, in its own process (so the test's own work cannot delay it).

Prints one JSON line per emg_frame: {"at": arrival (monotonic), "due": its last sample's time / speed,
"sid", "instance"}, and one per alarm; runs until stdin closes."""

from __future__ import annotations

import json
import sys
import threading

import zmq


def main(endpoint: str, speed: float) -> None:
    import time

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    for t in (b"emg_frame", b"alarm"):
        sock.setsockopt(zmq.SUBSCRIBE, t)
    sock.connect(endpoint)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    out = sys.stdout
    while not done.is_set():
        if not sock.poll(100):
            continue
        topic, header, _ = sock.recv_multipart()
        at = time.monotonic()
        h = json.loads(header)
        if topic == b"alarm":
            out.write(json.dumps({"alarm": h}) + "\n")
        else:
            due = (h["first_sample_index"] + h["n_samples"]) / h["sampling_rate_hz"] / speed
            out.write(json.dumps({"at": at, "due": due, "sid": h["session_id"], "instance": h["instance"]}) + "\n")
        out.flush()
    sock.close(0)
    ctx.term()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
