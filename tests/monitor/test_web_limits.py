"""The page's server under hostile requests: huge bodies, many live connections, DNS rebinding."""

from __future__ import annotations

import select
import socket
from pathlib import Path

from .conftest import base_url, http, wait_http

GIB = 1024**3


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def post_streamed(port: int, *, chunked: bool, bound: int = 256 * 1024**2) -> tuple[str, int, bool]:
    """POST /api/mark announcing 1.5 GB (or chunked), sending at most `bound` bytes; stops as soon as the
    server answers or closes. Returns (the response, or '' if none came), the bytes sent, and whether the
    connection ended in a reset (the server closing with our unread bytes in its buffer resets the connection,
    and the kernel may then drop the part of the response not yet read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (b"POST /api/mark HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + (b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % int(1.5 * GIB)) + b"\r\n")
    s.sendall(head)
    block = b"[" + b"1," * (512 * 1024 - 1)
    piece = (b"%x\r\n" % len(block) + block + b"\r\n") if chunked else block
    sent = 0
    response = b""
    try:
        while sent < bound:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            s.sendall(piece)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(10)
    reset = False
    try:
        # The refusal says "connection: close": read until the server closes, so the body (which may come
        # in a later segment than the headers) is always part of what is returned.
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
    except ConnectionResetError:
        reset = True
    except TimeoutError:
        pass
    s.close()
    return response.decode(errors="replace"), sent, reset


def test_a_huge_post_is_refused_while_it_is_read_and_memory_stays_flat(procs, monitor_env):
    procs.start("bus")
    mon = procs.start("monitor")
    port = int(monitor_env["AMRWATCH_MONITOR_PORT"])
    wait_http(base_url(monitor_env) + "/api/config")
    rss0 = rss_mb(mon.pid)
    for chunked in (False, True):
        response, sent, reset = post_streamed(port, chunked=chunked)
        assert response.startswith("HTTP/1.1 413"), (chunked, sent, response[:300])
        if reset and "\r\n\r\n{" not in response:
            print(f"chunked={chunked}: the reset dropped the refusal's body; status line checked only")
        else:
            assert "at most 16384 bytes" in response, (chunked, reset, response[-300:])
        assert sent < 64 * 1024**2, f"the server read {sent} bytes before refusing"
    growth = rss_mb(mon.pid) - rss0
    print(f"monitor RSS growth after two 1.5 GB POSTs: {growth:.1f} MB")
    assert growth <= 50, f"monitor grew {growth:.0f} MB"
    assert mon.poll() is None
    # An ordinary request still works.
    assert http("GET", base_url(monitor_env) + "/api/config").status == 200


def test_live_connections_are_capped_with_the_reason(procs, monitor_env):
    procs.start("bus")
    procs.start("monitor", "--max-live-clients", "2")
    port = int(monitor_env["AMRWATCH_MONITOR_PORT"])
    wait_http(base_url(monitor_env) + "/api/config")
    opened = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "a live stream within the limit was refused"
            opened.append(s)
        third = http("GET", base_url(monitor_env) + "/events")
        assert third.status == 503
        assert "too many live page connections: 2 open, limit 2" in third.json()["error"]
    finally:
        for s in opened:
            s.close()
    # Closed streams free their places.
    def stream_ok():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        ok = s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
        return ok

    from .conftest import wait_for
    wait_for(stream_ok, 30, "a place freed by the closed streams")


def test_dns_rebinding_host_is_refused(procs, monitor_env):
    procs.start("bus")
    procs.start("monitor")
    url = base_url(monitor_env)
    wait_http(url + "/api/config")
    evil = {"host": "evil.example", "origin": "http://evil.example"}
    r = http("POST", url + "/api/mark", {"stage": "incision"}, headers=evil)
    assert r.status == 403 and "Host 'evil.example' is not one this monitor answers to" in r.json()["error"]
    assert http("GET", url + "/api/snapshot", headers={"host": "evil.example"}).status == 403
    # Loopback names and addresses are served; a name the operator allowed too.
    assert http("GET", url + "/api/snapshot", headers={"host": f"localhost:{monitor_env['AMRWATCH_MONITOR_PORT']}"}
                ).status == 200
    assert http("GET", url + "/api/snapshot").status == 200
    procs.stop_all()
    procs.start("bus")
    procs.start("monitor", "--allow-host", "or-theatre-3.hospital.example")
    wait_http(url + "/api/config")
    assert http("GET", url + "/api/snapshot", headers={"host": "or-theatre-3.hospital.example"}).status == 200
    assert http("GET", url + "/api/snapshot", headers={"host": "evil.example"}).status == 403
