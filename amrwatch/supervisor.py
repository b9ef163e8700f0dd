"""`amrwatch up`: every service as its own process, under one supervisor.

Starts the bus first and the acquirer last (it waits for the others'
heartbeats before the session begins), restarts a service that dies —
publishing `service_down` while it is away — and on Ctrl-C stops them in
reverse order so the session is closed and flushed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from .bus import Publisher, Subscriber
from .config import EXIT_SOURCE
from .proto.messages import Alarm, Heartbeat, Message

log = logging.getLogger("amrwatch.up")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Children get SIGTERM if the supervisor itself is killed."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None
    down_since: float | None = None
    last_rc: int | None = None

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.proc.pid)


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        bus_in: str,
        bus_out: str,
        env: dict[str, str] | None = None,
        printer: Callable[[Message], None] | None = None,
        exit_with: str | None = "acquirer",
        max_backoff_s: float = 10.0,
    ) -> None:
        self.children = children
        self.env = dict(env or os.environ)
        self.bus_in, self.bus_out = bus_in, bus_out
        self.printer = printer
        self.exit_with = exit_with
        self.source_failed = False
        self.max_backoff_s = max_backoff_s
        self._stop = False

    def request_stop(self, *_a) -> None:
        self._stop = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        ctx = zmq.Context()
        # The bus comes first so that everyone else has somewhere to connect.
        for child in self.children:
            child.start(self.env)
        pub = Publisher(ctx, self.bus_in, "supervisor")
        sub = Subscriber(ctx, self.bus_out, ("",), on_seq=lambda ev: self._seq_event(ev))
        finished_at: float | None = None
        last_event = time.monotonic()
        code = 0
        try:
            while not self._stop:
                msg = sub.recv(200)
                now = time.monotonic()
                if msg is not None and msg.type != "heartbeat":
                    last_event = now
                    self._observe(msg, pub)
                    if self.printer:
                        self.printer(msg)
                for child in self.children:
                    finished = self._check(child, pub, now)
                    if finished:
                        finished_at = now
                if finished_at is not None and (now - last_event > 1.5 or now - finished_at > 15):
                    log.info("scenario finished; stopping the stack")
                    break
        finally:
            self._stop_all()
            pub.close()
            sub.close()
            ctx.term()
        return 1 if self.source_failed else code

    def _seq_event(self, ev) -> None:
        if ev.kind == "gap":
            print(f"!! {ev.describe()}", file=sys.stderr, flush=True)

    def _observe(self, msg: Message, pub: Publisher) -> None:
        """Services' own absences are alarmed by the bus (heartbeats); the
        bus cannot alarm its own death, so the supervisor records it once the
        new bus is up."""
        if not (isinstance(msg, Heartbeat) and msg.service == "bus"):
            return
        bus = next((c for c in self.children if c.name == "bus"), None)
        if bus is None or bus.down_since is None:
            return
        pub.wait_ready(2.0)
        away = time.monotonic() - bus.down_since
        for state in ("raised", "cleared"):
            pub.publish(
                Alarm,
                msg.session_id,
                kind="service_down",
                priority="high",
                state=state,
                message=f"bus was down for {away:.1f} s (exit code {bus.last_rc}); restarted by the supervisor",
                source="supervisor",
                alarm_key="service_down:bus",
            )
        bus.down_since = None

    def _check(self, child: Child, pub: Publisher, now: float) -> bool:
        """Restart a dead child; True when the service we exit with ended normally."""
        if child.proc is None:
            if child.restart_at is not None and now >= child.restart_at:
                child.start(self.env)
            return False
        rc = child.proc.poll()
        if rc is None:
            return False
        child.proc = None
        if child.name == self.exit_with and rc == 0:
            log.info("%s finished normally", child.name)
            return True
        if child.name == "acquirer" and rc == EXIT_SOURCE:
            # A source that cannot start will not start on the next try either: stop with its message
            # (the acquirer printed it) rather than restarting every few seconds forever.
            log.error("the acquirer's source cannot start (exit %s, message above); stopping the stack", rc)
            self.source_failed = True
            self._stop = True
            return False
        child.restarts += 1
        backoff = min(self.max_backoff_s, 0.5 * 2 ** min(child.restarts - 1, 5))
        child.restart_at = now + backoff
        child.down_since = now
        child.last_rc = rc
        if child.name == "bus":
            pub.reset_ready()
        log.error("%s exited with code %s; restarting in %.1f s", child.name, rc, backoff)
        return False

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.error("%s did not stop within 10 s; killing it", child.name)
                    child.proc.kill()
                    child.proc.wait()
        log.info("all services stopped")

