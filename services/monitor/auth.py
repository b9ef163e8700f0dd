"""Access token for the page (it is reachable from other machines on the
cart's network, and it can mark stages and enter factors).

With a token configured every HTTP request needs it, given one of three ways:
- `Authorization: Bearer TOKEN` (scripts, curl);
- the `amrwatch_monitor` cookie (a digest of the token), which the server sets after
- a login link `http://HOST:PORT/?token=TOKEN`: the server answers with the
  cookie (HttpOnly, SameSite=Strict) and redirects to the same URL without
  the token, so it does not linger in the address bar or history.
Comparison is constant-time. Without a token the page is open to whoever can
reach the address it binds (loopback only by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

COOKIE = "amrwatch_monitor"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: Set after a valid ?token= login: where to redirect (the URL without the token).
    redirect: str | None = None
    reason: str = ""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def cookie_value(token: str) -> str:
    """The cookie holds a digest of the token, not the token: any character is
    safe in it, and a copied cookie does not reveal the login link."""
    return hashlib.sha256(b"amrwatch-monitor-cookie\0" + token.encode("utf-8")).hexdigest()


def check(token: str | None, path: str, query: str, headers: Mapping[str, str]) -> Verdict:
    """Decide one request. `headers` keys are lower-case."""
    if token is None:
        return Verdict(True)
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), token):
        return Verdict(True)
    params = parse_qsl(query, keep_blank_values=True)
    given = [v for k, v in params if k == "token"]
    if given:
        if _same(given[-1], token):
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            return Verdict(True, redirect=path + ("?" + rest if rest else ""))
        return Verdict(False, reason="the token in the link is not this monitor's token")
    raw_cookie = headers.get("cookie", "")
    if raw_cookie:
        jar = SimpleCookie()
        try:
            jar.load(raw_cookie)
        except CookieError:
            jar = SimpleCookie()
        morsel = jar.get(COOKIE)
        if morsel is not None:
            if _same(morsel.value, cookie_value(token)):
                return Verdict(True)
            return Verdict(False, reason="the saved login is no longer valid (the token was changed)")
    return Verdict(False, reason="this monitor needs its access token")


def cookie_header(token: str, secure: bool) -> str:
    attrs = f"{COOKIE}={cookie_value(token)}; Path=/; HttpOnly; SameSite=Strict"
    return attrs + ("; Secure" if secure else "")


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amrwatch monitor: token needed</title>
<style>body{{font:20px system-ui,sans-serif;background:#111;color:#eee;margin:3em}}code{{color:#fc6}}</style>
</head><body><h1>amrwatch monitor</h1><p>{reason}.</p>
<p>Open the login link you were given: <code>http://HOST:PORT/?token=…</code>
(the token is set on the cart with <code>AMRWATCH_MONITOR_TOKEN</code> or
<code>amrwatch monitor --token-file</code>; scripts send <code>Authorization: Bearer …</code>).</p>
</body></html>"""


class TokenAuth:
    """ASGI middleware applying `check` to every HTTP request."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        verdict = check(self.token, scope.get("path", "/"), scope.get("query_string", b"").decode("latin-1"),
                        headers)
        if verdict.allowed and verdict.redirect is None:
            await self.app(scope, receive, send)
            return
        if verdict.allowed:
            secure = scope.get("scheme") == "https"
            await _respond(send, 303, b"", [(b"location", verdict.redirect.encode("latin-1")),
                                            (b"set-cookie", cookie_header(self.token, secure).encode("latin-1"))])
            return
        wants_html = "text/html" in headers.get("accept", "")
        if wants_html:
            body = LOGIN_PAGE.format(reason=verdict.reason).encode()
            ctype = b"text/html; charset=utf-8"
        else:
            body = json.dumps({"ok": False, "error": f"{verdict.reason}: send Authorization: Bearer TOKEN"}).encode()
            ctype = b"application/json"
        await _respond(send, 401, body, [(b"content-type", ctype), (b"www-authenticate", b'Bearer realm="amrwatch"')])


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
