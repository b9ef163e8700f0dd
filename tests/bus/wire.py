"""A real publisher and the XSUB socket its messages arrive at, for the publish-path tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import zmq

from amrwatch.bus import Publisher


def publisher_and_sink(name: str) -> Iterator[tuple[Publisher, zmq.Socket]]:
    """Loopback TCP, port chosen by the OS; yields once the publisher has the sink's subscription."""
    ctx = zmq.Context()
    sink = ctx.socket(zmq.XSUB)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    pub = Publisher(ctx, f"tcp://127.0.0.1:{port}", name)
    deadline = time.monotonic() + 10
    while True:  # an XSUB's subscription sent while the connection is being made can be lost: say it again
        sink.send(b"\x01")
        if pub.wait_ready(0.2):
            break
        assert time.monotonic() < deadline, "the subscription never reached the publisher"
    try:
        yield pub, sink
    finally:
        pub.close()
        sink.close(linger=0)
        ctx.term()


def receive(sink: zmq.Socket) -> list[bytes]:
    assert sink.poll(5000), "nothing arrived"
    return sink.recv_multipart()
