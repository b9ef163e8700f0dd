"""Live-stack helpers for the monitor: its own free port, HTTP and SSE clients."""

from __future__ import annotations

import http.client as httpclient
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import free_port


@pytest.fixture
def monitor_env(stack_env: dict[str, str]) -> dict[str, str]:
    stack_env["AMRWATCH_MONITOR_PORT"] = str(free_port())
    stack_env.pop("AMRWATCH_MONITOR_TOKEN", None)
    stack_env.pop("AMRWATCH_MONITOR_TOKEN_FILE", None)
    return stack_env


def base_url(env: dict[str, str], host: str = "127.0.0.1") -> str:
    return f"http://{host}:{env['AMRWATCH_MONITOR_PORT']}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, body: dict | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def wait_http(url: str, timeout: float = 60.0, **kw) -> Reply:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return http("GET", url, **kw)
        except OSError as err:
            last = err
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s: {last}")


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class SSE:
    """Follows /events in a thread; `items` gets each data message (parsed),
    `events` gets named events such as resync."""

    def __init__(self, env: dict[str, str], headers: dict[str, str] | None = None) -> None:
        self.conn = httpclient.HTTPConnection("127.0.0.1", int(env["AMRWATCH_MONITOR_PORT"]), timeout=60)
        self.conn.request("GET", "/events", headers=dict(headers or {}))
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.items: queue.Queue = queue.Queue()
        self.named: list[tuple[str, dict]] = []
        self.closed = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        event = None
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    data["_received"] = time.time()
                    if event:
                        self.named.append((event, data))
                    else:
                        self.items.put(data)
                elif line == "":
                    event = None
        except Exception:  # the connection was closed under the reader
            pass
        finally:
            self.closed.set()

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self.items.get_nowait())
            except queue.Empty:
                return out

    def until(self, pred, timeout: float, what: str) -> list[dict]:
        """Collect messages until one satisfies pred; returns all collected."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.items.get(timeout=0.2)
            except queue.Empty:
                continue
            got.append(item)
            if pred(item):
                return got
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(got)} messages")

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


@pytest.fixture
def sse_clients() -> Iterator[list[SSE]]:
    clients: list[SSE] = []
    yield clients
    for c in clients:
        c.close()
