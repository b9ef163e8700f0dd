"""Prometheus metrics shared by every service (one service per process).

Names follow Prometheus conventions: base units, `_total` counters,
`_seconds` histograms; labels never carry patient or session identifiers.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger(__name__)

RECEIVED = Counter("amrwatch_messages_received_total", "Valid messages received", ["type"])
PUBLISHED = Counter("amrwatch_messages_published_total", "Messages published", ["type"])
REJECTED = Counter(
    "amrwatch_messages_rejected_total", "Messages refused by validation", ["reason"]
)
GAPS = Counter(
    "amrwatch_sequence_gaps_total", "Jumps in a publisher's seq seen", ["publisher", "type"]
)
LOST = Counter(
    "amrwatch_messages_lost_total", "Messages missing according to seq", ["publisher", "type"]
)
ALARMS_ACTIVE = Gauge("amrwatch_alarms_active", "Alarms currently raised", ["priority"])
LOOP_SECONDS = Histogram(
    "amrwatch_processing_seconds",
    "Time spent handling one message",
    ["stage"],
    buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0),
)
AUTH_REFUSED = Counter(
    "amrwatch_auth_refusals_total", "Clients refused by CURVE authentication (unknown key)"
)
AUTH_REVOKED_CUT = Counter(
    "amrwatch_auth_revoked_connections_cut_total", "Open connections cut because a CURVE key was revoked"
)
SERVICE = Info("amrwatch_service", "Service name and version")


class PerType(dict):
    """A labelled metric's children by message type, created on first use (labels() costs a lock and a tuple)."""

    def __init__(self, metric) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, type_: str):
        child = self[type_] = self.metric.labels(type_)
        return child


def serve(port: int, addr: str) -> None:
    """Start the /metrics endpoint; a port already taken is logged, not fatal."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr=addr)
    except OSError as err:
        log.error("metrics endpoint %s:%d unavailable (%s); continuing without it", addr, port, err)
