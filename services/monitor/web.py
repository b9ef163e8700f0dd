"""The page's HTTP side: static files, one server-sent-event stream, small
JSON endpoints for the operator's controls and the replay view.

Thin on purpose: state lives in the hub's `SessionView`, validation in
`forms`, access control in `auth`, and the bus side (control socket, alarm
acknowledgements) behind the `Actions` the service passes in.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ...proto.messages import STAGE_ORDER, FactorValues
from .auth import TokenAuth
from .forms import FormError, form_spec, parse_ack, parse_factors, parse_note, parse_stage
from .hub import Hub, dumps
from .timeline import ReplayError, ReplayIndex, archived_messages, list_archived
from .settings import ServerSettings

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024


class Actions(Protocol):
    """What the page can make happen on the bus (blocking calls)."""

    def mark(self, stage: str) -> dict: ...

    def factors(self, values: FactorValues) -> dict: ...

    def ack(self, body: dict) -> dict: ...

    def note(self, body: dict) -> dict: ...


@dataclass
class WebContext:
    hub: Hub
    actions: Actions
    settings: ServerSettings
    status: Callable[[], dict]


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class HostGuard:
    """Refuses a request whose Host header is not one of the page's names (DNS rebinding: a hostile site
    re-points its own name at this address; the browser then sends that name as the Host, and the
    Origin matches it, so the cross-site check alone would let it through)."""

    def __init__(self, app, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
            if not self.settings.host_allowed(host):
                allowed = ", ".join(sorted(self.settings.hosts()))
                log.warning("refused a request for Host %r (allowed: %s)", (host or "")[:100], allowed)
                resp = JSONResponse({"ok": False, "error": f"Host {(host or '')[:100]!r} is not one this monitor "
                                     f"answers to (allowed: {allowed}, or an IP address); add a name with --allow-host or "
                                     "AMRWATCH_MONITOR_ALLOWED_HOSTS"}, status_code=403)
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(ValueError):
    pass


def _static(name: str) -> bytes:
    return resources.files("amrwatch.services.monitor").joinpath("static", name).read_bytes()


def _sse(line: str) -> str:
    return f"data: {line}\n\n"


def _cross_site(request: Request) -> bool:
    """A browser POST from another site carries its Origin; refuse it (the
    cookie is SameSite=Strict, this also covers a page without a token)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.headers.get("host", "")


async def _read_body(request: Request) -> bytes:
    """The body, read as it arrives and refused as soon as it passes MAX_BODY (a declared Content-Length over
    it is refused before anything is read): `request.body()` would hold a 1.5 GB POST in memory first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge(f"request body of {int(declared)} bytes (Content-Length) refused; at most {MAX_BODY} "
                           "bytes accepted")
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > MAX_BODY:
            raise BodyTooLarge(f"request body refused after {n} bytes: at most {MAX_BODY} bytes accepted")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict:
    raw = await _read_body(request)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise FormError(["request body must be a JSON object"]) from None
    if not isinstance(body, dict):
        raise FormError([f"request body must be a JSON object; got {type(body).__name__}"])
    return body


def _refused(err: FormError, status: int = 422) -> JSONResponse:
    return JSONResponse({"ok": False, "error": "; ".join(err.problems), "problems": err.problems}, status_code=status)


def _result(reply: dict) -> JSONResponse:
    if reply.get("ok"):
        return JSONResponse(reply)
    return JSONResponse(reply, status_code=reply.pop("http_status", 409))


def create_app(ctx: WebContext) -> Any:
    hub, actions, settings = ctx.hub, ctx.actions, ctx.settings
    replays: OrderedDict[str, ReplayIndex] = OrderedDict()
    replay_lock = asyncio.Lock()
    index_html = _static("index.html")
    assets = {"app.js": ("application/javascript", _static("app.js")),
              "style.css": ("text/css", _static("style.css"))}

    async def page(request: Request) -> Response:
        return Response(index_html, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return Response("not found", status_code=404)
        ctype, body = assets[name]
        return Response(body, media_type=ctype, headers={"cache-control": "no-cache"})

    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"stages": list(STAGE_ORDER), "factors": form_spec(), "token": settings.token is not None,
                             "replay": settings.data_dir is not None})

    async def snapshot(request: Request) -> JSONResponse:
        return JSONResponse(hub.snapshot())

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(ctx.status())

    live = {"n": 0}

    async def events(request: Request) -> Response:
        if live["n"] >= settings.max_live_clients:
            log.warning("refused a live page connection: %d open (limit %d)", live["n"], settings.max_live_clients)
            return JSONResponse({"ok": False, "error": f"too many live page connections: {live['n']} open, limit "
                                 f"{settings.max_live_clients} (setting max_live_clients, --max-live-clients); close "
                                 "a page or raise the limit"}, status_code=503, headers={"retry-after": "5"})
        live["n"] += 1
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # the server is shutting down
                pass

        client, first = hub.connect(wake)

        async def stream():
            try:
                yield f"retry: {settings.reconnect_ms}\n\n" + _sse(first)
                while True:
                    await ready.wait()
                    ready.clear()
                    lines, reason = client.take()
                    if lines:
                        yield "".join(_sse(x) for x in lines)
                    if reason is not None:
                        log.warning("page client disconnected: %s", reason)
                        yield f"event: resync\ndata: {dumps({'reason': reason})}\n\n"
                        return
            finally:
                hub.disconnect(client)
                live["n"] -= 1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def post_guard(request: Request) -> dict:
        if _cross_site(request):
            raise PermissionError(f"cross-site request from {request.headers.get('origin')} refused")
        return await _json_body(request)

    def operator_post(parse, act):
        """A POST from the operator's page: same-site, a bounded JSON body, parsed (a refusal names the field,
        the allowed values and the value given), then the action on the control socket off the event loop."""

        async def handler(request: Request) -> JSONResponse:
            try:
                parsed = parse(await post_guard(request))
            except PermissionError as err:
                return JSONResponse({"ok": False, "error": str(err)}, status_code=403)
            except BodyTooLarge as err:
                return JSONResponse({"ok": False, "error": str(err)}, status_code=413,
                                    headers={"connection": "close"})
            except FormError as err:
                return _refused(err)
            return _result(await run_in_threadpool(act, parsed))

        return handler

    mark = operator_post(lambda body: parse_stage(body.get("stage")), actions.mark)
    factors = operator_post(parse_factors, actions.factors)
    ack = operator_post(parse_ack, actions.ack)
    note = operator_post(parse_note, actions.note)

    async def sessions(request: Request) -> JSONResponse:
        if settings.data_dir is None:
            return JSONResponse({"ok": False, "error": "no archive directory configured (--data DIR)"},
                                status_code=404)
        rows = await run_in_threadpool(list_archived, settings.data_dir)
        return JSONResponse({"ok": True, "sessions": rows})

    async def _index(session_id: str) -> ReplayIndex:
        async with replay_lock:
            idx = replays.get(session_id)
            if idx is None:
                data_dir: Path = settings.data_dir  # type: ignore[assignment]
                idx = await run_in_threadpool(lambda: ReplayIndex(archived_messages(data_dir, session_id)))
                replays[session_id] = idx
                while len(replays) > 2:
                    replays.popitem(last=False)
            replays.move_to_end(session_id)
            return idx

    async def replay_info(request: Request) -> JSONResponse:
        if settings.data_dir is None:
            return JSONResponse({"ok": False, "error": "no archive directory configured (--data DIR)"},
                                status_code=404)
        try:
            idx = await _index(request.path_params["session_id"])
        except ReplayError as err:
            return JSONResponse({"ok": False, "error": str(err)}, status_code=404)
        return JSONResponse({"ok": True, **(await run_in_threadpool(idx.info))})

    async def replay_at(request: Request) -> JSONResponse:
        if settings.data_dir is None:
            return JSONResponse({"ok": False, "error": "no archive directory configured (--data DIR)"},
                                status_code=404)
        raw = request.query_params.get("t", "0")
        try:
            t = float(raw)
        except ValueError:
            return JSONResponse({"ok": False, "error": f"t: must be seconds from the session start; got {raw!r}"},
                                status_code=422)
        try:
            idx = await _index(request.path_params["session_id"])
        except ReplayError as err:
            return JSONResponse({"ok": False, "error": str(err)}, status_code=404)
        if not (0.0 <= t <= idx.duration_s + 1e-9):
            return JSONResponse({"ok": False, "error": f"t: must be between 0 and {idx.duration_s:.3f} s; got {raw!r}"},
                                status_code=422)
        return JSONResponse({"ok": True, "snapshot": await run_in_threadpool(idx.snapshot_at, t)})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", page),
        Route("/favicon.ico", favicon),
        Route("/replay", page),
        Route("/static/{name}", asset),
        Route("/events", events),
        Route("/api/config", config),
        Route("/api/snapshot", snapshot),
        Route("/api/status", status),
        Route("/api/mark", mark, methods=["POST"]),
        Route("/api/factors", factors, methods=["POST"]),
        Route("/api/ack", ack, methods=["POST"]),
        Route("/api/note", note, methods=["POST"]),
        Route("/api/sessions", sessions),
        Route("/api/replay/{session_id}", replay_info),
        Route("/api/replay/{session_id}/at", replay_at),
    ]
    app = Starlette(routes=routes)
    return SecurityHeaders(HostGuard(TokenAuth(app, settings.token), settings))
