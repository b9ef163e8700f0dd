"""The monitor service: the bus on one side, the web page on the other.

The bus loop (the `Service` base, main thread) feeds every message to the
hub; the web server (uvicorn, its own thread and event loop) streams the
hub's page messages to browsers. ZeroMQ sockets are not shared between
threads: the page's stage and factor inputs go to the acquirer's control
socket on their own short-lived REQ socket, and an alarm acknowledgement is
handed to the bus thread, which publishes it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import socket
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from ... import config, control
from ...proto.codec import DecodeError, decode
from ...proto.messages import AlarmAck, FactorValues, Heartbeat, Message, ReaderNote, SessionStart, SweepDisplay
from ...service import Service
from .hub import Hub
from .settings import ServerSettings, SweepSettings, ViewSettings
from .view import SessionView

log = logging.getLogger(__name__)

CLIENTS = Gauge("amrwatch_monitor_clients", "Browsers following the live stream")
RESYNCS = Counter("amrwatch_monitor_client_resyncs_total",
                  "Browsers disconnected for falling behind (they resynchronise from a snapshot)")
PAGE_MESSAGES = Counter("amrwatch_monitor_page_messages_total", "Page messages caused by bus messages of a type",
                        ["type"])

#: How long the page waits for the acquirer or the bus thread to act on an input.
ACTION_TIMEOUT_S = control.REQUEST_TIMEOUT_S
#: How often a failed web server bind is retried.
BIND_RETRY_S = 5.0
#: How often the acquirer is asked for the session_start of a session joined mid-way.
SESSION_ASK_S = 2.0


def _is_loopback(addr: str) -> bool:
    return addr in ("127.0.0.1", "::1", "localhost") or addr.startswith("127.")


def listen(host: str, port: int, send_buffer: int) -> socket.socket:
    """Bind the page's listening socket here, so a taken port is an error we
    report; accepted connections inherit its send buffer size."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Monitor(Service):
    name = "monitor"
    topics = ("",)  # everything: raw frames and stimuli for the sweeps, every event for the page

    def __init__(
        self,
        server: ServerSettings | None = None,
        sweeps: SweepSettings | None = None,
        view: ViewSettings | None = None,
        *,
        control: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.server_settings = server or ServerSettings()
        self.view_settings = view or ViewSettings()
        self.control = control or config.get("control")
        self.hub = Hub(SessionView(sweeps, self.view_settings), limit=self.server_settings.client_queue)
        self.inbox: queue.Queue[tuple[dict, concurrent.futures.Future]] = queue.Queue()
        self.late: queue.Queue[SessionStart] = queue.Queue()
        self.last_bus = 0.0
        self.bus_ok: bool | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._bind_error: str | None = None
        self._next_bind = 0.0
        self._next_status = 0.0
        self._asking = False
        self._next_ask = 0.0
        self._counted_overflows = 0
        self.url = f"http://{self.server_settings.bind}:{self.server_settings.port}/"

    # -- web server ------------------------------------------------------------------
    def setup(self) -> None:
        s = self.server_settings
        if s.token is None and not _is_loopback(s.bind):
            log.warning("the page binds %s without a token: anyone who can reach it can mark stages and enter "
                        "factors; set AMRWATCH_MONITOR_TOKEN or --token-file", s.bind)
        self._start_web(time.monotonic())

    def _start_web(self, now: float) -> None:
        import uvicorn

        from .web import WebContext, create_app

        s = self.server_settings
        try:
            sock = listen(s.bind, s.port, s.send_buffer_bytes)
        except OSError as err:
            self._bind_error = f"monitor page cannot listen on {s.bind}:{s.port} ({err.strerror or err})"
            self._next_bind = now + BIND_RETRY_S
            self.status = "degraded"
            if "monitor:web" not in self.alarms.active:
                self.pub.wait_ready(2.0, ("alarm",))  # at start-up: let the alarm find its listeners
            self.alarms.raise_("service_down", "monitor:web", "medium",
                               f"{self._bind_error}; retrying every {BIND_RETRY_S:g} s "
                               "(free the port or give --port)")
            return
        app = create_app(WebContext(self.hub, self, s, self.page_status))
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                             timeout_graceful_shutdown=1, http="h11", ws="none")
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="web",
                                        daemon=True)
        self._thread.start()
        if self._bind_error is not None:
            self.alarms.clear("monitor:web", f"page listening on {s.bind}:{s.port}")
            self._bind_error = None
        self.status = "ok"
        log.info("page at %s (token %s)", self.url, "required" if s.token else "not set")

    def teardown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=3)

    # -- bus side ----------------------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        self.last_bus = time.monotonic()
        if self.hub.view.session_id is None and msg.session_id is not None and not isinstance(msg, SessionStart):
            self._next_ask = 0.0  # joined mid-session: ask for its session_start at once
        n = self.hub.feed(msg)
        if isinstance(msg, Heartbeat):
            return
        if self.hub.view.to_publish:
            self._publish_sweeps()
        if n:
            PAGE_MESSAGES.labels(msg.type).inc(n)

    def _publish_sweeps(self) -> None:
        """The display sweeps just cut, on the bus for remote readers (`--publish-sweeps`)."""
        with self.hub.lock:
            items = list(self.hub.view.to_publish)
            self.hub.view.to_publish.clear()
            sid = self.hub.view.session_id
        res = self.hub.view.sweep_settings.resolution_uv
        for it in items:
            try:
                self.pub.publish(SweepDisplay, sid, stimulus_index=it["stimulus_index"], channel=it["channel"],
                                 direction=it["direction"], t0_ms=it["t0_ms"], dt_ms=it["dt_ms"],
                                 values=it["values"][:8192], resolution_uv=res)
            except ValueError as err:  # a sweep the wire refuses is not worth stopping the page for
                log.warning("display sweep not published: %s", err)

    def tick(self, now: float) -> None:
        if self._server is None and now >= self._next_bind:
            self._start_web(now)
        while True:
            try:
                body, fut = self.inbox.get_nowait()
            except queue.Empty:
                break
            try:
                if "text" in body:  # a note from the room to its remote readers
                    msg = self.pub.publish(ReaderNote, self.hub.view.session_id, reader="room",
                                           direction="to_reader", kind="note", text=body["text"])
                else:
                    msg = self.pub.publish(AlarmAck, self.hub.view.session_id, **body)
                fut.set_result({"ok": True, "seq": msg.seq})
            except Exception as err:  # report to the page rather than kill the loop
                fut.set_result({"ok": False, "error": f"acknowledgement not published: {err}"})
        while True:
            try:
                start = self.late.get_nowait()
            except queue.Empty:
                break
            self.hub.run(lambda v, s=start: v.set_session_start(s))
        self._ask_session(now)
        self._status(now)

    def _ask_session(self, now: float) -> None:
        view = self.hub.view
        if view.session_id is None or view.start is not None or self._asking or now < self._next_ask:
            return
        self._asking = True
        self._next_ask = now + SESSION_ASK_S
        threading.Thread(target=self._fetch_session, args=(view.session_id,), daemon=True).start()

    def _fetch_session(self, session_id: str) -> None:
        try:
            reply = control.request(self.control, {"op": "session"}, timeout_s=ACTION_TIMEOUT_S)
            if reply is not None and reply.ok and len(reply.frames) == 3:
                msg = decode(reply.frames)
                if isinstance(msg, SessionStart) and msg.session_id == session_id:
                    self.late.put(msg)
        except (DecodeError, control.ControlError, OSError) as err:
            log.warning("could not fetch the running session's start from %s: %s", self.control, err)
        finally:
            self._asking = False

    def _status(self, now: float) -> None:
        ok = self.last_bus > 0 and now - self.last_bus <= self.view_settings.bus_lost_s
        if ok == self.bus_ok and now < self._next_status:
            return
        if ok and not self.bus_ok:
            log.info("receiving from the bus at %s", self.bus_out)
        elif not ok and self.bus_ok:
            log.warning("bus connection lost: nothing from %s for %.1f s", self.bus_out, now - self.last_bus)
        self.bus_ok = ok
        self._next_status = now + self.server_settings.status_interval_s
        status = self.page_status(now)
        self.hub.run(lambda v: [{"kind": "status", "status": status}])
        CLIENTS.set(len(self.hub.clients))
        RESYNCS.inc(max(0, self.hub.overflows - self._counted_overflows))
        self._counted_overflows = self.hub.overflows

    def page_status(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        silent = None if self.last_bus == 0 else round(now - self.last_bus, 1)
        with self.hub.lock:
            services = dict(self.hub.view.services)
        return {
            "bus_ok": bool(self.last_bus > 0 and now - self.last_bus <= self.view_settings.bus_lost_s),
            "bus_silent_s": silent,
            "bus": self.bus_out,
            "services": services,
            "clients": len(self.hub.clients),
            "token": self.server_settings.token is not None,
            "exposed_without_token": self.server_settings.token is None and not _is_loopback(
                self.server_settings.bind),
        }

    def heartbeat_info(self) -> dict:
        return {"url": self.url[:256], "clients": len(self.hub.clients), "resyncs": self.hub.overflows,
                "web": self._server is not None}

    # -- Actions (called from the web server's threads) ----------------------------------
    def _control(self, request: dict, what: str) -> dict:
        try:
            reply = control.request(self.control, request, timeout_s=ACTION_TIMEOUT_S)
        except control.ControlError as err:
            return {"ok": False, "http_status": 502, "error": f"{what} not published: {err}"}
        if reply is None:
            return {"ok": False, "http_status": 504,
                    "error": f"{control.no_answer(self.control, ACTION_TIMEOUT_S)}; "
                             f"{what} not published (is the stack running?)"}
        if not reply.ok:
            return {"ok": False, "http_status": 409,
                    "error": f"{what} refused by the acquirer: {reply.reply.error}"}
        return {"ok": True, "session_id": reply.reply.session_id, "seq": reply.reply.seq}

    def mark(self, stage: str) -> dict:
        return self._control({"op": "mark", "stage": stage}, f"stage {stage}")

    def factors(self, values: FactorValues) -> dict:
        return self._control({"op": "factors", "factors": values.given()}, "factors")

    def note(self, body: dict) -> dict:
        """A note from the room to its remote readers, published by the bus loop (archived with the session)."""
        if self.hub.view.session_id is None:
            return {"ok": False, "http_status": 409, "error": "no session is running: a note belongs to a session"}
        return self.ack(body)

    def ack(self, body: dict) -> dict:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.inbox.put((body, fut))
        try:
            return fut.result(timeout=ACTION_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return {"ok": False, "http_status": 504,
                    "error": f"the monitor's bus loop did not publish the acknowledgement within {ACTION_TIMEOUT_S:g} s"}
