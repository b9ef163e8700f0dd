"""Where things are: endpoints, ports, the data directory.

Every value has a documented default (README, proto/README.md) and an
environment variable, so compose and `amrwatch up` configure services the
same way; command-line flags override both.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Exit code of a service whose input cannot start (sysexits' EX_NOINPUT): the acquirer's source cannot be
#: opened (an unreadable file, an LSL stream not found). `amrwatch up` stops on it instead of restarting.
EXIT_SOURCE = 66

#: (environment variable, default). The defaults are loopback-only on purpose:
#: exposing the bus to the hospital network is a decision (see README, Operations).
DEFAULTS: dict[str, tuple[str, str]] = {
    "bus_in": ("AMRWATCH_BUS_IN", "tcp://127.0.0.1:5550"),
    "bus_out": ("AMRWATCH_BUS_OUT", "tcp://127.0.0.1:5551"),
    "control": ("AMRWATCH_CONTROL", "tcp://127.0.0.1:5552"),
    "bus_bind_in": ("AMRWATCH_BUS_BIND_IN", "tcp://127.0.0.1:5550"),
    "bus_bind_out": ("AMRWATCH_BUS_BIND_OUT", "tcp://127.0.0.1:5551"),
    "control_bind": ("AMRWATCH_CONTROL_BIND", "tcp://127.0.0.1:5552"),
    "metrics_addr": ("AMRWATCH_METRICS_ADDR", "127.0.0.1"),
}

#: Prometheus port of each service (0 disables).
METRICS_PORTS: dict[str, int] = {
    "bus": 9100,
    "acquirer": 9101,
    "analyzer": 9102,
    "predictor": 9103,
    "recorder": 9104,
    "monitor": 9105,
}

SERVICES = ("bus", "recorder", "analyzer", "predictor", "monitor", "acquirer")


def get(name: str) -> str:
    env, default = DEFAULTS[name]
    return os.environ.get(env, default)


def metrics_port(service: str) -> int:
    return int(os.environ.get(f"AMRWATCH_METRICS_PORT_{service.upper()}", METRICS_PORTS[service]))


def data_dir() -> Path:
    """AMRWATCH_DATA, else $XDG_DATA_HOME/amrwatch, else ~/.local/share/amrwatch."""
    if os.environ.get("AMRWATCH_DATA"):
        return Path(os.environ["AMRWATCH_DATA"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "amrwatch"


def registry_url() -> str | None:
    """AMRWATCH_REGISTRY: a registry other than the data directory's SQLite file — a PostgreSQL URL
    (postgresql://ROLE@HOST:PORT/DB?sslmode=verify-full) or sqlite:///PATH. None: DATA_DIR/registry.sqlite."""
    return os.environ.get("AMRWATCH_REGISTRY") or None


def cart_identity() -> tuple[str | None, str | None]:
    """(AMRWATCH_CART, AMRWATCH_SITE): this cart's name and its site, recorded on each session it syncs."""
    return os.environ.get("AMRWATCH_CART") or None, os.environ.get("AMRWATCH_SITE") or None


def sync_targets() -> tuple[str | None, str | None]:
    """(AMRWATCH_CENTRAL_REGISTRY, AMRWATCH_CENTRAL_ARCHIVE): where `amrwatch sync` pushes closed sessions."""
    return os.environ.get("AMRWATCH_CENTRAL_REGISTRY") or None, os.environ.get("AMRWATCH_CENTRAL_ARCHIVE") or None


def control_for_bus(bus_out: str) -> str:
    """The control endpoint that goes with a bus endpoint: same host, port + 1."""
    head, _, port = bus_out.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--bus must look like tcp://HOST:PORT; got {bus_out!r}")
    return f"{head}:{int(port) + 1}"
