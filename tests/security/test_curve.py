"""CURVE on: an authorized client receives, a wrong key or no key receives nothing and is counted."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import zmq
import zmq.auth

from amrwatch import security
from amrwatch.bus import Subscriber
from amrwatch.proto.messages import EmgFrame

from ..conftest import free_port


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _monitored(sock: zmq.Socket) -> zmq.Socket:
    """The socket's handshake failures, as ZeroMQ reports them (set up before connect)."""
    return sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                   | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def _wait_handshake_failure(mon: zmq.Socket, timeout: float) -> int:
    """The first handshake failure event on `mon`; fails the test if none within `timeout` seconds."""
    from zmq.utils.monitor import recv_monitor_message

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mon.poll(100):
            return int(recv_monitor_message(mon)["event"])
    raise AssertionError(f"no handshake failure within {timeout:g} s")


def _wait_metric(port: int, name: str, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    value = _metric(port, name)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(0.1)  # polling an HTTP endpoint for a condition, with a deadline
        value = _metric(port, name)
    return value


def _received(sock: zmq.Socket) -> int:
    """Messages waiting on `sock` now (without waiting for more)."""
    n = 0
    while sock.poll(0):
        sock.recv_multipart()
        n += 1
    return n


def test_only_authorized_keys_receive(procs, stack_env, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    security.generate(keys)
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir()
    intruder_pub, intruder_sec = zmq.auth.create_certificates(str(intruder_dir), "intruder")
    stack_env["AMRWATCH_KEYS"] = str(keys)
    metrics_port = free_port()
    stack_env["AMRWATCH_METRICS_PORT_BUS"] = str(metrics_port)
    procs.start("bus")
    procs.start("acquirer", "--speed", "1", "--loop")
    monkeypatch.setenv("AMRWATCH_KEYS", str(keys))

    ctx = zmq.Context()
    try:
        good = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("emg_frame",))
        frames = 0
        deadline = time.monotonic() + 20
        while frames < 20 and time.monotonic() < deadline:
            if isinstance(good.recv(200), EmgFrame):
                frames += 1
        assert frames == 20, "an authorized subscriber must receive frames"

        wrong = ctx.socket(zmq.SUB)
        wrong.setsockopt(zmq.SUBSCRIBE, b"")
        server_pub, _ = zmq.auth.load_certificate(str(keys / "server.key"))
        pub, sec = zmq.auth.load_certificate(intruder_sec)
        wrong.curve_serverkey, wrong.curve_publickey, wrong.curve_secretkey = server_pub, pub, sec
        wrong_events = _monitored(wrong)
        wrong.connect(stack_env["AMRWATCH_BUS_OUT"])
        plain = ctx.socket(zmq.SUB)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain_events = _monitored(plain)
        plain.connect(stack_env["AMRWATCH_BUS_OUT"])
        # Each is turned away at the handshake: the wrong key by the authenticator, no key by the mechanism.
        assert _wait_handshake_failure(wrong_events, 30) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        _wait_handshake_failure(plain_events, 30)
        # Meanwhile the stream goes on: while the authorized subscriber gets 20 more frames, they get none.
        more = 0
        deadline = time.monotonic() + 20
        while more < 20 and time.monotonic() < deadline:
            if isinstance(good.recv(200), EmgFrame):
                more += 1
        assert more == 20
        assert _received(wrong) == 0 and _received(plain) == 0
        assert _wait_metric(metrics_port, "amrwatch_auth_refusals_total", 1, timeout=10) >= 1
        deadline = time.monotonic() + 10
        while "refused a CURVE client" not in procs.log("bus") and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the bus's log for the line, with a deadline
        assert "refused a CURVE client" in procs.log("bus")

        # Operator commands need a key too: without one the acquirer does not answer.
        env = dict(stack_env)
        env.pop("AMRWATCH_KEYS")
        r = subprocess.run([sys.executable, "-m", "amrwatch", "mark", "incision"], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1
        r = subprocess.run([sys.executable, "-m", "amrwatch", "mark", "incision"], env=stack_env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        ctx.destroy(linger=0)


def test_unsafe_secret_is_refused(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    security.generate(keys)
    (keys / "client.key_secret").chmod(0o644)
    monkeypatch.setenv("AMRWATCH_KEYS", str(keys))
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.SUB)
        try:
            security.client(sock)
        except security.KeyDirError as err:
            assert "chmod 600" in str(err)
        else:
            raise AssertionError("a world-readable secret key must be refused")
        sock.close()
    finally:
        ctx.term()


def test_keys_are_never_overwritten(tmp_path):
    security.generate(tmp_path / "k")
    r = subprocess.run([sys.executable, "-m", "amrwatch", "keys", "generate", str(tmp_path / "k")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
