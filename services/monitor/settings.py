"""The monitor's tunable numbers, each with its default and allowed range.

A bad value fails at construction with the field, the allowed range and the
value given, so a typo in a flag or environment variable is never guessed at.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, model_validator


from ... import config
from ...ranges import pair_within as _pair_within
from ...ranges import within as _within


class SweepSettings(BaseModel):
    """How display sweeps are cut from the raw stream (docs/domain.md, "Recording protocol")."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: Sweep shown from this long before the stimulus ...
    pre_ms: Annotated[float, _within(0.0, 100.0, "ms")] = 5.0
    #: ... to this long after it (the 50 ms sweep).
    post_ms: Annotated[float, _within(5.0, 500.0, "ms")] = 50.0
    #: Display bins per second; each bin keeps its minimum and maximum, so the
    #: displayed peak-to-peak is the true one (an oscilloscope's peak-detect mode).
    display_rate_hz: Annotated[float, _within(100.0, 50_000.0, "Hz")] = 2000.0
    #: The stimulus artifact is blanked from 0 to this (drawn as a gap).
    blank_ms: Annotated[float, _within(0.0, 10.0, "ms")] = 3.0
    #: Shaded on the page; the analyzer measures the AMR in this window.
    analysis_window_ms: Annotated[tuple[float, float], _pair_within(0.0, 500.0, "ms")] = (6.0, 25.0)
    #: Raw samples kept per channel to cut sweeps from (stimulus messages follow their frame).
    keep_s: Annotated[float, _within(0.5, 60.0, "s")] = 3.0
    #: Displayed values are rounded to this (µV): keeps the page's messages small.
    resolution_uv: Annotated[float, _within(0.001, 10.0, "µV")] = 0.1

    @model_validator(mode="after")
    def _window_inside_sweep(self) -> SweepSettings:
        lo, hi = self.analysis_window_ms
        if hi > self.post_ms:
            raise ValueError(f"analysis_window_ms end {hi:g} ms must not exceed post_ms {self.post_ms:g} ms")
        if self.keep_s * 1000.0 < 2 * (self.pre_ms + self.post_ms):
            raise ValueError(
                f"keep_s must hold at least two sweeps ({2 * (self.pre_ms + self.post_ms) / 1000:g} s); "
                f"got {self.keep_s:g}"
            )
        return self


class ViewSettings(BaseModel):
    """What the page keeps and shows."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: Sweeps stacked per channel in the waterfall (newest on top).
    waterfall_sweeps: Annotated[int, _within(1, 500, "sweeps")] = 30
    #: Without a `baseline` stage, the first N sweeps stand for the baseline (docs/domain.md).
    baseline_first_n: Annotated[int, _within(1, 1000, "sweeps")] = 10
    #: Most baseline-stage sweeps considered when choosing the representative baseline sweep.
    baseline_max_candidates: Annotated[int, _within(1, 10_000, "sweeps")] = 200
    #: No message from the bus (its heartbeat comes every second) for this long = connection lost.
    bus_lost_s: Annotated[float, _within(0.5, 120.0, "s")] = 3.0
    #: Decisions kept for the page's history list.
    decision_history: Annotated[int, _within(1, 1000, "decisions")] = 50


class ServerSettings(BaseModel):
    """The web server: address, port, per-client queue, the token."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    bind: str = "127.0.0.1"
    port: Annotated[int, _within(1, 65535)] = 8080
    #: Page messages queued per client; a client this far behind is disconnected
    #: with a reason and resynchronises from a snapshot (events are never dropped).
    client_queue: Annotated[int, _within(10, 1_000_000, "messages")] = 20_000
    #: Kernel send buffer per browser connection. Without a bound Linux grows it
    #: to megabytes, and a browser that stopped reading would look up to date
    #: for minutes; with it, a stalled page backs up into its queue and is resynced.
    send_buffer_bytes: Annotated[int, _within(4096, 64 * 1024 * 1024, "bytes")] = 256 * 1024
    #: A status message (bus connection, services) is sent at least this often.
    status_interval_s: Annotated[float, _within(0.1, 60.0, "s")] = 1.0
    #: The browser reconnects after this long (SSE `retry:`).
    reconnect_ms: Annotated[int, _within(100, 60_000, "ms")] = 1000
    token: str | None = None
    #: Shortest token accepted: 16 characters (about 96 bits from `openssl rand -base64 12`).
    min_token_chars: Annotated[int, _within(8, 4096, "characters")] = 16
    #: Where archived sessions are read from for the replay view.
    data_dir: Path | None = None
    #: Live event streams (open pages) served at once; one more is refused with the reason (503), so that
    #: a script opening connections cannot exhaust the server's threads, sockets and queues.
    max_live_clients: Annotated[int, _within(1, 1000, "connections")] = 32
    #: Host names the page answers to besides the loopback names (localhost, 127.0.0.1, ::1) and the bind
    #: address. Any other Host header is refused (403): a hostile site that re-points its own name at this
    #: address (DNS rebinding) is then still another host, and its requests never reach the page.
    allowed_hosts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _hosts_are_names(self) -> ServerSettings:
        for h in self.allowed_hosts:
            if not _HOST.match(h):
                raise ValueError(f"allowed_hosts: {h!r} is not a host name or IP address (letters, digits, '-', "
                                 "'.', or an IPv6 address in brackets); give names as typed in the browser, no port")
        return self

    def host_allowed(self, host_header: str | None) -> bool:
        """Is the request's Host header one of ours (port ignored)? An IP address is always accepted: DNS
        rebinding needs the attacker's own *name* in the Host header, and a page reached by this machine's
        address on the network (bound to 0.0.0.0) must keep working."""
        name = _host_name(host_header)
        if name is None:
            return False
        if name in self.hosts():
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def hosts(self) -> frozenset[str]:
        out = set(LOOPBACK_HOSTS) | {h.lower().strip("[]") for h in self.allowed_hosts}
        if self.bind not in ("0.0.0.0", "::", ""):
            out.add(self.bind.lower().strip("[]"))
        return frozenset(out)

    @model_validator(mode="after")
    def _token_long_enough(self) -> ServerSettings:
        if self.token is not None and len(self.token) < self.min_token_chars:
            raise ValueError(
                f"token must be at least {self.min_token_chars} characters; got {len(self.token)} "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return self


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")


def _host_name(header: str | None) -> str | None:
    """'name:port' / '[v6]:port' / 'name' → the lower-case name (brackets removed); None if unparseable."""
    if not header:
        return None
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else None
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h or None


#: Environment variables of the monitor (flags override them).
ENV_BIND = config.ENV_MONITOR_BIND
ENV_PORT = config.ENV_MONITOR_PORT
ENV_TOKEN = config.ENV_MONITOR_TOKEN
ENV_TOKEN_FILE = config.ENV_MONITOR_TOKEN_FILE
ENV_ALLOWED_HOSTS = config.ENV_MONITOR_ALLOWED_HOSTS


class TokenError(ValueError):
    """The configured token cannot be used."""


def read_token_file(path: Path) -> str:
    """The token is the file's content without surrounding whitespace."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise TokenError(f"--token-file {path}: cannot read it ({err.strerror or err}); "
                         "give a readable file holding one token") from None
    token = text.strip()
    if not token:
        raise TokenError(f"--token-file {path}: the file is empty; put the token on its first line")
    if any(c.isspace() for c in token):
        raise TokenError(f"--token-file {path}: the token must be one word without spaces or line breaks")
    return token


def resolve_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """--token-file, else AMRWATCH_MONITOR_TOKEN_FILE, else AMRWATCH_MONITOR_TOKEN, else none."""
    env = config.monitor_env(environ)
    if token_file is None and env.token_file:
        token_file = Path(env.token_file)
    if token_file is not None:
        return read_token_file(token_file)
    token = (env.token or "").strip()
    return token or None
