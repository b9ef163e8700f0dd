"""Where things are: endpoints, ports, the data directory, keys, the model.

Every value has a documented default (README, proto/README.md) and an
environment variable, so compose and `amrwatch up` configure services the
same way; command-line flags override both. This is the only module that reads
the environment (`AMRWATCH_*`): a newcomer finds every variable here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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

#: CPU priority (Unix nice, -20..19; higher yields more) of each service (amrwatch/priority.py). All 0 by
#: default. Setting the recorder and monitor to 5 (below the surgeon's path: acquirer → bus → analyzer →
#: predictor) moved a measurement's p99 by 5% on an idle machine (bench/RESULTS.md), while on a saturated
#: machine (CI, three test workers) the recorder then fell behind by more than a minute: a deployment may set
#: it, measured on its own cart. A negative value needs CAP_SYS_NICE.
NICE: dict[str, int] = {
    "bus": 0,
    "acquirer": 0,
    "analyzer": 0,
    "predictor": 0,
    "recorder": 0,
    "monitor": 0,
}
NICE_RANGE = (-20, 19)


def get(name: str) -> str:
    env, default = DEFAULTS[name]
    return os.environ.get(env, default)


def nice(service: str) -> int:
    """AMRWATCH_NICE_<SERVICE>: the service's CPU priority (see NICE)."""
    name = f"AMRWATCH_NICE_{service.upper()}"
    text = os.environ.get(name)
    if text is None:
        return NICE.get(service, 0)
    lo, hi = NICE_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi} (Unix nice; higher yields more); "
                         f"got {text!r}")
    return value


def metrics_port(service: str) -> int:
    return int(os.environ.get(f"AMRWATCH_METRICS_PORT_{service.upper()}", METRICS_PORTS[service]))


def archive_read_bind() -> str | None:
    """Where the recorder serves the archive read-out (AMRWATCH_ARCHIVE_READ_BIND); None: not served (exposing
    the archive on the network is a decision, like exposing the bus)."""
    return os.environ.get("AMRWATCH_ARCHIVE_READ_BIND") or None


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


def model_dir() -> str | None:
    """AMRWATCH_MODEL_DIR: the predictor's model directory (None: the shipped model)."""
    return os.environ.get("AMRWATCH_MODEL_DIR") or None


#: The watchdog's default: a service loop that has not come round for this long is stuck.
WATCHDOG_S = 15.0


def watchdog_s() -> float:
    """AMRWATCH_WATCHDOG_S: seconds a service loop may stand still before the service exits to be restarted."""
    text = os.environ.get("AMRWATCH_WATCHDOG_S", str(WATCHDOG_S))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"AMRWATCH_WATCHDOG_S must be a number of seconds above 0; got {text!r}")
    return value


GC_MODES = ("idle", "python")


def gc_mode() -> str:
    """AMRWATCH_GC: when a service's cyclic garbage collector runs (amrwatch/gcpolicy.py). 'idle' (the
    default): between messages, after freezing what setup made; 'python': CPython's own schedule, wherever an
    allocation crosses its threshold (for comparison)."""
    value = os.environ.get("AMRWATCH_GC", "idle")
    if value not in GC_MODES:
        raise ValueError(f"AMRWATCH_GC must be one of {', '.join(GC_MODES)}; got {value!r}")
    return value


def key_dir() -> Path | None:
    """AMRWATCH_KEYS: the CURVE key directory (amrwatch/security.py); None: plain TCP."""
    value = os.environ.get("AMRWATCH_KEYS")
    return Path(value) if value else None


def client_key_name() -> str:
    """AMRWATCH_CLIENT_KEY: which client keypair in the key directory this process uses (default `client`)."""
    return os.environ.get("AMRWATCH_CLIENT_KEY", "client")


def actor() -> str | None:
    """AMRWATCH_ACTOR: who the registry commands record as the actor (else the login name)."""
    return os.environ.get("AMRWATCH_ACTOR")


#: The monitor page's environment variables (flags override them; README "Monitor").
ENV_MONITOR_BIND = "AMRWATCH_MONITOR_BIND"
ENV_MONITOR_PORT = "AMRWATCH_MONITOR_PORT"
ENV_MONITOR_TOKEN = "AMRWATCH_MONITOR_TOKEN"
ENV_MONITOR_TOKEN_FILE = "AMRWATCH_MONITOR_TOKEN_FILE"
ENV_MONITOR_ALLOWED_HOSTS = "AMRWATCH_MONITOR_ALLOWED_HOSTS"


@dataclass(frozen=True)
class MonitorEnv:
    """The monitor page's settings as the environment gives them (unchecked: ServerSettings checks them)."""

    bind: str | None
    port: str | None
    token: str | None
    token_file: str | None
    allowed_hosts: tuple[str, ...]


def monitor_env(environ: Mapping[str, str] | None = None) -> MonitorEnv:
    """The monitor's variables, from `environ` (tests) or the process environment."""
    env = os.environ if environ is None else environ
    return MonitorEnv(
        bind=env.get(ENV_MONITOR_BIND) or None,
        port=env.get(ENV_MONITOR_PORT) or None,
        token=env.get(ENV_MONITOR_TOKEN) or None,
        token_file=env.get(ENV_MONITOR_TOKEN_FILE) or None,
        allowed_hosts=tuple(h.strip() for h in env.get(ENV_MONITOR_ALLOWED_HOSTS, "").split(",") if h.strip()),
    )
