"""The hub's rooms file (TOML): which carts to follow, with which keys.

    [hub]
    key = "/etc/amrwatch-hub/hub.key_secret"   # the hub's own CURVE keypair (secret file, 0600)
    bind = "127.0.0.1"                          # the multi-room page
    port = 8090
    token_file = "/etc/amrwatch-hub/token"      # or env AMRWATCH_HUB_TOKEN
    stale_after_s = 5.0
    data = "/var/lib/amrwatch-hub"              # the hub's own record: events taken, gaps, link_stale changes
    metrics_port = 9490                         # Prometheus (0: off)

    [[room]]
    name = "OR-3"
    bus = "tcp://cart-or3.example:5556"         # the cart's bus_out (subscriber endpoint)
    control = "tcp://cart-or3.example:5557"     # the cart's control socket
    archive = "tcp://cart-or3.example:5553"     # optional: the cart's archive read-out (the recorder's
                                                # --archive-read-bind): what aged out of the retransmit buffer
    server_key = "/etc/amrwatch-hub/or3-server.key"   # the cart's server public key (file or Z85 text)
    monitor = "http://cart-or3.example:8080"    # optional: the room's full monitor
    monitor_token_file = "/etc/amrwatch-hub/or3-monitor.token"   # optional: that monitor's token
    # with [hub] monitor_proxy_port = 8100: room i's monitor through the hub at HUB:8100+i

The hub connects out to every cart; carts never connect to the hub. Every
bad value is refused with the field, the allowed range and the value given.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
ENDPOINT = re.compile(r"^tcp://[^\s/]+:\d{1,5}$")
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RoomConfig:
    name: str
    bus: str
    control: str
    server_key: bytes  # Z85
    monitor: str | None = None
    monitor_token: str | None = None
    proxy_port: int | None = None  # the room's monitor through the hub, when [hub].monitor_proxy_port is set
    archive: str | None = None  # the cart's archive read-out; None: aged-out events become gaps at once


@dataclass(frozen=True)
class HubConfig:
    rooms: tuple[RoomConfig, ...]
    key_public: bytes | None
    key_secret: bytes | None
    key_name: str
    bind: str = "127.0.0.1"
    port: int = 8090
    token: str | None = None
    stale_after_s: float = 5.0
    data: Path | None = None
    metrics_port: int = 0
    monitor_proxy_port: int = 0
    extra: dict = field(default_factory=dict)


def _server_key(room: str, value: str, base: Path) -> bytes:
    if Z85_KEY.match(value):
        return value.encode()
    path = (base / value) if not os.path.isabs(value) else Path(value)
    if not path.is_file():
        raise ConfigError(f"room {room}: server_key must be the cart's server public key (a .key file or 40 Z85 "
                          f"characters); got {value!r}, which is neither")
    public, _ = zmq.auth.load_certificate(str(path))
    return public


def _number(where: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be a number between {lo:g} and {hi:g}; got {value!r}")
    return float(value)


def load(path: Path) -> HubConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"rooms file {path}: cannot be read ({err})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"rooms file {path}: not valid TOML ({err})") from err
    base = path.parent
    hub = raw.get("hub", {})
    unknown = set(hub) - {"key", "bind", "port", "token_file", "stale_after_s", "data", "metrics_port",
                          "monitor_proxy_port"}
    if unknown:
        raise ConfigError(f"[hub]: unknown setting(s) {', '.join(sorted(unknown))}; allowed: key, bind, port, "
                          "token_file, stale_after_s, data, metrics_port, monitor_proxy_port")
    proxy_base = int(_number("[hub].monitor_proxy_port", hub.get("monitor_proxy_port", 0), 0, 65000))
    rooms = []
    seen = set()
    for i, r in enumerate(raw.get("room", [])):
        where = f"room[{i}]"
        for k in ("name", "bus", "control", "server_key"):
            if not isinstance(r.get(k), str):
                raise ConfigError(f"{where}.{k}: required text; got {r.get(k)!r}")
        if not NAME.match(r["name"]):
            raise ConfigError(f"{where}.name: 1-64 of A-Z a-z 0-9 _ . -; got {r['name']!r}")
        if r["name"] in seen:
            raise ConfigError(f"{where}.name: {r['name']!r} is given twice; room names must be unique")
        seen.add(r["name"])
        for k in ("bus", "control", "archive"):
            if k in r and (not isinstance(r[k], str) or not ENDPOINT.match(r[k])):
                raise ConfigError(f"{where}.{k}: a tcp://HOST:PORT endpoint of the cart; got {r[k]!r}")
        monitor = r.get("monitor")
        if monitor is not None and not re.match(r"^https?://[^\s]+$", str(monitor)):
            raise ConfigError(f"{where}.monitor: an http(s):// URL of the room's monitor; got {monitor!r}")
        monitor_token = None
        if "monitor_token_file" in r:
            tp = Path(r["monitor_token_file"]) if os.path.isabs(r["monitor_token_file"]) else base / r["monitor_token_file"]
            try:
                monitor_token = tp.read_text().strip()
            except OSError as err:
                raise ConfigError(f"{where}.monitor_token_file: cannot be read ({err})") from err
        if proxy_base and monitor is not None and not str(monitor).startswith("http://"):
            raise ConfigError(f"{where}.monitor: the hub proxies http:// monitors only (put TLS in front of the "
                              f"hub instead); got {monitor!r}")
        rooms.append(RoomConfig(r["name"], r["bus"], r["control"], _server_key(r["name"], r["server_key"], base),
                                monitor, monitor_token, (proxy_base + i) if proxy_base and monitor else None,
                                r.get("archive")))
    if not rooms:
        raise ConfigError(f"rooms file {path}: no [[room]] given; list at least one cart")
    public = secret = None
    key_name = "hub"
    if "key" in hub:
        kp = Path(hub["key"]) if os.path.isabs(hub["key"]) else base / hub["key"]
        from amrwatch.security import _load

        public, secret = _load(kp, secret=True)
        key_name = kp.name.removesuffix(".key_secret")
    token = os.environ.get("AMRWATCH_HUB_TOKEN") or None
    if "token_file" in hub:
        tp = Path(hub["token_file"]) if os.path.isabs(hub["token_file"]) else base / hub["token_file"]
        try:
            token = tp.read_text().strip()
        except OSError as err:
            raise ConfigError(f"[hub].token_file: cannot be read ({err})") from err
        if len(token) < 16:
            raise ConfigError(f"[hub].token_file: the token must be at least 16 characters; got {len(token)}")
    data = hub.get("data")
    return HubConfig(
        rooms=tuple(rooms), key_public=public, key_secret=secret, key_name=key_name,
        bind=str(hub.get("bind", "127.0.0.1")),
        port=int(_number("[hub].port", hub.get("port", 8090), 0, 65535)),
        token=token,
        stale_after_s=_number("[hub].stale_after_s", hub.get("stale_after_s", 5.0), 0.5, 3600),
        data=(Path(data) if os.path.isabs(data) else base / data) if data else None,
        metrics_port=int(_number("[hub].metrics_port", hub.get("metrics_port", 0), 0, 65535)),
        monitor_proxy_port=proxy_base,
    )
