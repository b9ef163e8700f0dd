"""Who is alive: heartbeats in, `service_down` raises and clears out.

Pure logic; the bus proxy runs it on the heartbeats passing through it, so
the same alarm exists under `amrwatch up` and under compose.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    service: str
    kind: str  # "down" | "back"
    message: str


@dataclass
class _Seen:
    instance: str
    last: float
    timeout: float
    down: bool = False


class HeartbeatWatch:
    """A service is down when its heartbeat is `miss_factor` intervals late.

    A service that says `stopping` in its last heartbeat left on purpose and
    is forgotten, so a clean shutdown raises nothing."""

    def __init__(self, miss_factor: float = 3.0, min_timeout_s: float = 1.0, ignore: tuple[str, ...] = ("bus",)):
        self.miss_factor = miss_factor
        self.min_timeout_s = min_timeout_s
        self.ignore = set(ignore)
        self.seen: dict[str, _Seen] = {}

    def observe(self, service: str, instance: str, status: str, interval_s: float, now: float) -> list[Change]:
        if service in self.ignore:
            return []
        if status == "stopping":
            self.seen.pop(service, None)
            return []
        timeout = max(self.min_timeout_s, self.miss_factor * interval_s)
        prev = self.seen.get(service)
        self.seen[service] = _Seen(instance, now, timeout)
        if prev is None:
            return []
        if prev.down:
            how = "restarted" if prev.instance != instance else "heartbeat resumed"
            return [Change(service, "back", f"{service} is back ({how})")]
        if prev.instance != instance:
            # It died and came back between two checks: still an outage, still alarmed.
            return [
                Change(service, "down", f"{service} restarted without a clean stop "
                                        f"(last heartbeat {now - prev.last:.1f} s ago)"),
                Change(service, "back", f"{service} is back (restarted)"),
            ]
        return []

    def check(self, now: float) -> list[Change]:
        out = []
        for name, s in self.seen.items():
            if not s.down and now - s.last > s.timeout:
                s.down = True
                out.append(Change(name, "down", f"{name}: no heartbeat for {now - s.last:.1f} s "
                                                f"(expected every {s.timeout / self.miss_factor:g} s)"))
        return out
