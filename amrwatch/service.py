"""What every service shares: the bus ends, heartbeats, alarms, the loop.

A service's own logic lives in plain classes without sockets; this thin
runtime feeds them messages and publishes what they return.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import zmq

from . import __version__, config, metrics, security
from .deadletter import DeadLetter
from .gcpolicy import IdleCollector
from .bus import Publisher, SeqEvent, Subscriber
from .proto.messages import Alarm, Heartbeat, Message

log = logging.getLogger(__name__)


def setup_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {service} %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


@dataclass
class _Active:
    kind: str
    priority: str
    message: str
    clear_at: float | None  # monotonic time for pulses, None for conditions


@dataclass
class AlarmBoard:
    """Raises and clears technical alarms, each raise/clear published once.

    A *condition* (signal lost) stays until cleared; a *pulse* (a sequence
    gap, a rejected input) clears itself after `hold_s` of quiet."""

    publish: Callable[..., Message]
    source: str
    session: Callable[[], str | None]
    hold_s: float = 10.0
    active: dict[str, _Active] = field(default_factory=dict)

    def raise_(self, kind: str, key: str, priority: str, message: str, *, pulse: bool = False) -> None:
        clear_at = time.monotonic() + self.hold_s if pulse else None
        if key in self.active:
            self.active[key].clear_at = clear_at
            return
        self.active[key] = _Active(kind, priority, message, clear_at)
        metrics.ALARMS_ACTIVE.labels(priority).inc()
        log.warning("ALARM %s [%s] %s", kind, priority, message)
        self._send(kind, key, priority, "raised", message)

    def clear(self, key: str, message: str = "condition ended") -> None:
        a = self.active.pop(key, None)
        if a is None:
            return
        metrics.ALARMS_ACTIVE.labels(a.priority).dec()
        log.info("ALARM CLEARED %s: %s", a.kind, message)
        self._send(a.kind, key, a.priority, "cleared", message)

    def expire(self, now: float) -> None:
        for key in [k for k, a in self.active.items() if a.clear_at is not None and a.clear_at <= now]:
            self.clear(key, "no recurrence")

    def _send(self, kind: str, key: str, priority: str, state: str, message: str) -> None:
        self.publish(
            Alarm,
            self.session(),
            kind=kind,
            priority=priority,
            state=state,
            message=message[:1000],
            source=self.source,
            alarm_key=key[:256],
        )


class Service:
    """Base of every bus service: override `on_message` and `tick`."""

    name = "service"
    topics: tuple[str, ...] = ("heartbeat",)
    heartbeat_s = 0.5
    #: A loop that has not come round for this long is stuck: exit so it is restarted
    #: (AMRWATCH_WATCHDOG_S, read when the service is made: config.watchdog_s).
    watchdog_s: float = config.WATCHDOG_S

    def __init__(
        self,
        *,
        bus_in: str | None = None,
        bus_out: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.watchdog_s = config.watchdog_s()
        self.ctx = zmq.Context()
        self.bus_in = bus_in or config.get("bus_in")
        self.bus_out = bus_out or config.get("bus_out")
        self.metrics_port = config.metrics_port(self.name) if metrics_port is None else metrics_port
        self.pub = Publisher(self.ctx, self.bus_in, self.name)
        # One labelled child per type, looked up once: labels() per message was ~5% of a busy service.
        self._published = metrics.PerType(metrics.PUBLISHED)
        self._received = metrics.PerType(metrics.RECEIVED)
        self.pub.on_sent.append(lambda msg, _f: self._published[msg.type].inc())
        self.session_id: str | None = None
        self.alarms = AlarmBoard(self.pub.publish, self.name, lambda: self.session_id)
        self.sub: Subscriber | None = None
        self._stop = False
        self._started = time.monotonic()
        self._next_hb = 0.0
        self._extra: list[tuple[zmq.Socket, Callable[[], None]]] = []
        self.receiving = False
        self.status = "starting"
        self.deadletter = DeadLetter(config.data_dir() / "deadletter" / f"{self.name}.jsonl")
        self._loop_at = time.monotonic()
        #: Garbage collection between messages (amrwatch/gcpolicy.py); None: CPython's own schedule.
        self.collector = IdleCollector() if config.gc_mode() == "idle" else None

    # -- hooks ---------------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        """Handle one valid message from the bus."""

    def tick(self, now: float) -> None:
        """Called at least every `tick_s` with time.monotonic()."""

    def heartbeat_info(self) -> dict:
        return {}

    def setup(self) -> None:
        """Open extra sockets, load models; runs before the loop."""

    def teardown(self) -> None:
        """Flush and close; runs after the loop, also on SIGTERM."""

    tick_s = 0.05

    # -- plumbing ------------------------------------------------------------
    def subscribe(self, topics: Iterable[str]) -> Subscriber:
        self.sub = Subscriber(
            self.ctx, self.bus_out, topics, on_seq=self._on_seq, on_reject=self._on_reject
        )
        return self.sub

    def add_socket(self, sock: zmq.Socket, handler: Callable[[], None]) -> None:
        self._extra.append((sock, handler))

    def _on_seq(self, ev: SeqEvent) -> None:
        if ev.kind == "gap":
            metrics.GAPS.labels(ev.publisher, ev.type).inc()
            metrics.LOST.labels(ev.publisher, ev.type).inc(ev.missing)
            self.alarms.raise_(
                "sequence_gap",
                f"gap:{ev.publisher}:{ev.type}",
                "medium",
                f"{self.name}: {ev.describe()}",
                pulse=True,
            )
        elif ev.kind == "duplicate":
            metrics.REJECTED.labels("duplicate_seq").inc()
            log.warning("%s", ev.describe())
        elif ev.kind == "restarted":
            log.info("%s", ev.describe())
        else:
            log.debug("%s", ev.describe())

    def _on_reject(self, reason: str, text: str, frames: list) -> None:
        metrics.REJECTED.labels(reason).inc()
        self.deadletter.write(reason, text, frames)
        self.alarms.raise_(
            "input_rejected", f"rejected:{reason}", "low", f"{self.name} refused a message: {text}", pulse=True
        )

    def request_stop(self, *_args) -> None:
        self._stop = True

    def _heartbeat(self, now: float) -> None:
        info = {"receiving": self.receiving}
        info.update(self.heartbeat_info())
        self.pub.publish(
            Heartbeat,
            self.session_id,
            service=self.name,
            version=__version__,
            status=self.status,
            uptime_s=now - self._started,
            interval_s=self.heartbeat_s,
            active_alarms=sorted(self.alarms.active)[:64],
            info=info,
        )
        self._next_hb = now + self.heartbeat_s

    def _drain(self) -> None:
        assert self.sub is not None
        for _ in range(2000):
            frames = self.sub.recv_frames(0)
            if frames is None:
                return
            msg = self.sub.accept(frames)
            if msg is None:
                continue
            self.receiving = True
            self._received[msg.type].inc()
            self.on_wire(msg, frames)

    def on_wire(self, msg: Message, frames: list) -> None:
        """A valid message with the frames it travelled in; services that keep
        the bytes (the recorder) override this, the others get `on_message`."""
        self.on_message(msg)

    def _watchdog(self) -> None:
        """Docker does not restart an 'unhealthy' container, and a supervisor
        only sees exits: a stuck loop must end its own process."""
        while not self._stop:
            time.sleep(min(1.0, self.watchdog_s / 4))
            stuck = time.monotonic() - self._loop_at
            if stuck > self.watchdog_s and not self._stop:
                log.critical("watchdog: main loop stuck for %.1f s (limit %.1f s); exiting so the service is "
                             "restarted", stuck, self.watchdog_s)
                logging.shutdown()
                os._exit(70)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        metrics.SERVICE.info({"service": self.name, "version": __version__})
        metrics.serve(self.metrics_port, config.get("metrics_addr"))
        self.setup()
        if self.sub is None:
            self.subscribe(self.topics)
        poller = zmq.Poller()
        poller.register(self.sub.sock, zmq.POLLIN)
        handlers = {self.sub.sock: self._drain}
        for sock, handler in self._extra:
            poller.register(sock, zmq.POLLIN)
            handlers[sock] = handler
        self.status = "ok"
        code = 0
        self._loop_at = time.monotonic()
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        collector = self.collector
        if collector is not None:
            collector.start()
        try:
            next_tick = 0.0
            while not self._stop:
                now = time.monotonic()
                self._loop_at = now
                if now >= self._next_hb:
                    self._heartbeat(now)
                if now >= next_tick:
                    self.tick(now)
                    self.alarms.expire(now)
                    next_tick = now + self.tick_s
                wait = max(0.0, min(self._next_hb, next_tick) - time.monotonic())
                events = poller.poll(int(wait * 1000) + 1)
                for sock, _ in events:
                    handlers[sock]()
                if collector is not None and collector.due():
                    # Collect now if nothing waits (the message just handled has gone out); with messages
                    # waiting, only past the hard limit.
                    if events and poller.poll(0):
                        collector.busy()
                    else:
                        collector.idle()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            if collector is not None:
                collector.stop()
            self.status = "stopping"
            self.teardown()
            try:
                self._heartbeat(time.monotonic())  # "stopping": a clean exit raises no service_down
            except zmq.ZMQError:
                pass
            self.pub.close()
            if self.sub is not None:
                self.sub.close()
            for sock, _ in self._extra:
                sock.close(linger=0)
            security.stop(self.ctx)
            self.ctx.term()
        return code
