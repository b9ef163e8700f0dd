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
#: After the restarted bus is first heard: time for subscribers to reconnect before the alarm is sent.
BUS_GRACE_S = 1.0
#: service_down:bus is cleared once the bus has stayed up this long after the raise.
BUS_CLEAR_AFTER_S = 2.0


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
        self._bus_seen: tuple[str, str | None] | None = None  # (instance, session) of the last bus heartbeat
        self._bus_instance_before: str | None = None  # the bus instance that died
        self._bus_heard_at: float | None = None  # when the restarted bus was first heard
        self._bus_raised_at: float | None = None  # service_down:bus raised, not yet cleared

    def request_stop(self, *_a) -> None:
        self._stop = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        ctx = zmq.Context()
        # The bus comes first so that everyone else has somewhere to connect.
        for child in self.children:
            child.start(self.env)
        # XPUB_VERBOSE: a restarted bus's subscriptions are reported again even though the dead bus's were
        # never unsubscribed, so `wait_ready` can tell when the alarm about its death will reach anyone.
        pub = Publisher(ctx, self.bus_in, "supervisor", configure=lambda s: s.setsockopt(zmq.XPUB_VERBOSE, 1))
        sub = Subscriber(ctx, self.bus_out, ("",), on_seq=lambda ev: self._seq_event(ev))
        finished_at: float | None = None
        last_event = time.monotonic()
        code = 0
        try:
            while not self._stop:
                msg = sub.recv(200)
                now = time.monotonic()
                if msg is not None:
                    self._observe(msg, pub)
                if msg is not None and msg.type != "heartbeat":
                    last_event = now
                    if self.printer:
                        self.printer(msg)
                self._bus_alarm(pub, now)
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
        """Services' own absences are alarmed by the bus (heartbeats); the bus
        cannot alarm its own death, so the supervisor does, once a new bus is
        there to carry it (nothing published while it is away reaches anyone)."""
        if isinstance(msg, Heartbeat) and msg.service == "bus":
            self._bus_seen = (msg.instance, msg.session_id)

    def _bus_alarm(self, pub: Publisher, now: float) -> None:
        """service_down:bus — raised once the restarted bus is heard (plus a short
        grace so that subscribers reconnecting to it hear it too), cleared after
        the bus has stayed up for `BUS_CLEAR_AFTER_S`."""
        bus = next((c for c in self.children if c.name == "bus"), None)
        if bus is None or bus.down_since is None:
            return
        alive = bus.proc is not None and bus.proc.poll() is None
        if not (alive and self._bus_seen is not None and self._bus_seen[0] != self._bus_instance_before):
            return
        if self._bus_heard_at is None:
            self._bus_heard_at = now
        if self._bus_raised_at is None:
            if now - self._bus_heard_at < BUS_GRACE_S or not pub.wait_ready(0, ("alarm",)):
                return
            away = self._bus_heard_at - bus.down_since
            self._publish_bus(pub, "raised", f"bus died (exit code {bus.last_rc}) and was away for {away:.1f} s; "
                              "messages published meanwhile reached no one; restarted by the supervisor")
            self._bus_raised_at = now
        elif now - max(self._bus_raised_at, self._bus_heard_at) >= BUS_CLEAR_AFTER_S:
            self._publish_bus(pub, "cleared", f"bus is back and has stayed up {now - self._bus_heard_at:.1f} s "
                              f"({bus.restarts} restart(s) so far)")
            bus.down_since = None
            self._bus_raised_at = self._bus_heard_at = None

    def _publish_bus(self, pub: Publisher, state: str, message: str) -> None:
        pub.publish(Alarm, self._bus_seen[1] if self._bus_seen else None, kind="service_down", priority="high",
                    state=state, message=message[:1000], source="supervisor", alarm_key="service_down:bus")
        log.log(logging.ERROR if state == "raised" else logging.INFO, "ALARM %s service_down:bus: %s", state,
                message)

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
        if child.name != "bus":
            child.down_since = now
        child.last_rc = rc
        if child.name == "bus":
            pub.reset_ready()
            if child.down_since is None:
                child.down_since = now
            self._bus_heard_at = None
            self._bus_instance_before = self._bus_seen[0] if self._bus_seen else None
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

