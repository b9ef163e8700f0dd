"""Fan-out from the bus thread to the page's clients, without ever dropping.

Every page message gets a number `n` (gap-free across the hub), is encoded
to JSON once and queued for every client. A client's queue is bounded: one
that falls `limit` messages behind is not silently thinned — it is closed
with the reason, and its browser reconnects and resynchronises from a
snapshot. Snapshot and registration happen under the same lock as the
feed, so a client sees exactly the messages after its snapshot's `n`.

Thread-safe, no sockets: the web layer supplies a `wake` callable that
schedules the client's sender (e.g. `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable

from ...proto.messages import Message
from .view import SessionView


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class Client:
    """One browser's queue of encoded page messages."""

    def __init__(self, limit: int, wake: Callable[[], None]) -> None:
        self.limit = limit
        self.wake = wake
        self.queue: deque[str] = deque()
        self.closed_reason: str | None = None
        self._lock = threading.Lock()

    def push(self, line: str) -> None:
        with self._lock:
            if self.closed_reason is not None:
                return
            if len(self.queue) >= self.limit:
                self.queue.clear()
                self.closed_reason = (
                    f"this page fell {self.limit} messages behind the stream; "
                    "it reconnects and resynchronises from a snapshot (no event is lost)"
                )
            else:
                self.queue.append(line)
                if len(self.queue) > 1:
                    return  # the sender is already scheduled
        self.wake()

    def take(self) -> tuple[list[str], str | None]:
        """Everything queued, and the reason if the client must disconnect."""
        with self._lock:
            lines = list(self.queue)
            self.queue.clear()
            return lines, self.closed_reason


class Hub:
    def __init__(self, view: SessionView, limit: int = 20_000) -> None:
        self.view = view
        self.limit = limit
        self.lock = threading.Lock()
        self.n = 0
        self.clients: set[Client] = set()
        self.overflows = 0

    def feed(self, msg: Message) -> int:
        """Apply one bus message; returns how many page messages it caused."""
        with self.lock:
            return self._broadcast(self.view.apply(msg))

    def run(self, fn: Callable[[SessionView], list[dict]]) -> int:
        """Change the view some other way (late session_start, status) and broadcast."""
        with self.lock:
            return self._broadcast(fn(self.view))

    def _broadcast(self, items: list[dict]) -> int:
        for item in items:
            self.n += 1
            item["n"] = self.n
            line = dumps(item)
            for c in list(self.clients):
                c.push(line)
                if c.closed_reason is not None:
                    self.clients.discard(c)
                    self.overflows += 1
        return len(items)

    def connect(self, wake: Callable[[], None]) -> tuple[Client, str]:
        """A new client and its first message: the snapshot, numbered like the stream."""
        with self.lock:
            client = Client(self.limit, wake)
            first = dumps({"kind": "snapshot", "n": self.n, "snapshot": self.view.snapshot()})
            self.clients.add(client)
            return client, first

    def disconnect(self, client: Client) -> None:
        with self.lock:
            self.clients.discard(client)

    def snapshot(self) -> dict:
        with self.lock:
            return {"n": self.n, "snapshot": self.view.snapshot()}
