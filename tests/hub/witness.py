"""The cart-side witness: every hub-followed event each cart publishes, heard on the cart's own bus (no WAN
between), one JSON line each. python -m tests.hub.witness OUT.jsonl ROOM=ENDPOINT ...; keys from env."""

from __future__ import annotations

import json
import signal
import sys
import time

import zmq
from amrwatch.services.hub.core import EVENT_TYPES

from amrwatch import security


def main(out: str, rooms: list[str]) -> None:
    ctx = zmq.Context()
    socks = {}
    for spec in rooms:
        name, endpoint = spec.split("=", 1)
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, 0)
        for t in EVENT_TYPES:
            s.setsockopt(zmq.SUBSCRIBE, t.encode())
        security.client(s)
        s.connect(endpoint)
        socks[s] = name
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    with open(out, "a", buffering=1) as f:
        while not stop["now"]:
            for s, _ in poller.poll(200):
                _topic, header, _payload = s.recv_multipart()
                h = json.loads(header)
                f.write(json.dumps({"room": socks[s], "publisher": h["publisher"], "instance": h["instance"],
                                    "type": h["type"], "seq": h["seq"], "t": time.time()}) + "\n")
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
