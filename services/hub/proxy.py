"""A room's full monitor through the hub: one port per room, an HTTP/1.1 reverse proxy to the cart's monitor.

Why a port per room and not a path under the hub's page: the monitor's page uses absolute paths (/events,
/api/…, /static/…), so it must be served at a root. Each request is checked against the hub's token (the same
check and login link as the hub's page; the hub's cookie is sent to every port of the host), then forwarded
with the cart monitor's own token (`monitor_token_file` in the rooms file), its Host and Origin, and
`Connection: close` (one request per connection keeps the proxy a byte pipe: the monitor's live stream, a
server-sent-event response, flows through as it comes). The hub's cookie is not passed on. This is the
full-rate view of the room being examined: the monitor draws from the cart's frames, and only the open room
costs that bandwidth.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from urllib.parse import urlsplit

from ..monitor.auth import check, cookie_header

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024


def _response(status: str, body: bytes, headers: list[tuple[str, str]] = ()) -> bytes:
    head = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", "connection: close", "cache-control: no-store",
            *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class RoomProxy:
    def __init__(self, room: str, upstream: str, token: str | None, monitor_token: str | None) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"room {room}: monitor must be an http://HOST:PORT URL to proxy; got {upstream!r}")
        self.room, self.host, self.port = room, u.hostname, u.port or 80
        self.token, self.monitor_token = token, monitor_token

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            writer.write(_response("431 Request Header Fields Too Large", b""))
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = (lines[0].split(" ") + ["", "", ""])[:3]
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.append((k.strip(), v.strip()))
        low = {k.lower(): v for k, v in headers}
        path, _, query = target.partition("?")
        verdict = check(self.token, path, query, low)
        if not verdict.allowed:
            writer.write(_response("401 Unauthorized", f"{verdict.reason}: open the hub's login link first\n".encode(),
                                   [("content-type", "text/plain; charset=utf-8"),
                                    ("www-authenticate", 'Bearer realm="amrwatch-hub"')]))
            return
        if verdict.redirect is not None:
            writer.write(_response("303 See Other", b"", [("location", verdict.redirect),
                                                          ("set-cookie", cookie_header(self.token or "", False))]))
            return
        n = int(low.get("content-length", "0") or 0)
        if n > MAX_BODY:
            writer.write(_response("413 Content Too Large", b""))
            return
        body = await reader.readexactly(n) if n else b""
        drop = {"host", "cookie", "authorization", "connection", "origin", "keep-alive", "proxy-connection"}
        out = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close"]
        out += [f"{k}: {v}" for k, v in headers if k.lower() not in drop]
        if "origin" in low:
            out.append(f"Origin: http://{self.host}:{self.port}")
        if self.monitor_token:
            out.append(f"Authorization: Bearer {self.monitor_token}")
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        except (OSError, TimeoutError) as err:
            writer.write(_response("502 Bad Gateway", f"room {self.room}: its monitor at {self.host}:{self.port} "
                                   f"cannot be reached ({err})\n".encode(), [("content-type", "text/plain")]))
            return
        try:
            up_w.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
            await up_w.drain()
            while chunk := await up_r.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_w.close()


def start(proxies: list[tuple[RoomProxy, str, int]]) -> threading.Thread:
    """Serve every room's proxy on its own port, in a thread of its own."""
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            for p, host, port in proxies:
                await asyncio.start_server(p.handle, host, port, limit=MAX_HEAD * 2)
                log.info("room %s: its monitor through the hub at http://%s:%d/", p.room, host, port)
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    t = threading.Thread(target=run, name="monitor-proxy", daemon=True)
    t.start()
    ready.wait(10)
    return t
