"""ZeroMQ CURVE: encrypted, authenticated sockets when a key directory is set.

Key directory layout (`amrwatch keys generate DIR`):

    DIR/server.key          server public key   (give it to every client)
    DIR/server.key_secret   server secret key   (0600; the stack only)
    DIR/client.key          a client public key
    DIR/client.key_secret   its secret key      (0600)
    DIR/authorized/*.key    client public keys the stack accepts

Servers (the bus proxy, the acquirer's control socket) authenticate clients
against `authorized/`; a refused client receives nothing, and the refusal is
counted (`amrwatch_auth_refusals_total`) and logged. Without AMRWATCH_KEYS,
sockets are plain TCP and the README says what that means.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

_authenticators: dict[int, ThreadAuthenticator] = {}


class KeyError_(ValueError):
    """A key directory that is missing something or is unsafe."""


def key_dir() -> Path | None:
    value = os.environ.get("AMRWATCH_KEYS")
    return Path(value) if value else None


def generate(directory: Path, *, clients: tuple[str, ...] = ("client",)) -> list[Path]:
    """Create the server keypair and client keypairs; authorize the clients."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    made = []
    for name in ("server", *clients):
        if (directory / f"{name}.key_secret").exists():
            raise KeyError_(f"{directory / (name + '.key_secret')} exists; refusing to overwrite a key")
        pub, sec = zmq.auth.create_certificates(str(directory), name)
        os.chmod(sec, 0o600)
        os.chmod(pub, 0o644)
        made += [Path(pub), Path(sec)]
    auth = directory / "authorized"
    auth.mkdir(exist_ok=True)
    for name in clients:
        shutil.copyfile(directory / f"{name}.key", auth / f"{name}.key")
    return made


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyError_(f"CURVE key file {path} is missing; create keys with `amrwatch keys generate DIR`")
    if secret and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyError_(f"secret key {path} is readable by others (mode {oct(path.stat().st_mode & 0o777)}); "
                        "run chmod 600 on it")
    return zmq.auth.load_certificate(str(path))


class _Allowed:
    """ZAP credentials callback: accept only authorized client keys, count the rest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.refused = 0

    def keys(self) -> set[bytes]:
        out = set()
        for p in sorted(self.directory.glob("*.key")):
            public, _ = zmq.auth.load_certificate(str(p))
            out.add(public)
        return out

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys():
            return True
        from . import metrics

        self.refused += 1
        metrics.AUTH_REFUSED.inc()
        log.warning("refused a CURVE client with an unknown key %s… (not in %s)", key[:8].decode(), self.directory)
        return False


def server(sock: zmq.Socket, ctx: zmq.Context) -> None:
    """Make `sock` a CURVE server if keys are configured (before bind)."""
    d = key_dir()
    if d is None:
        return
    public, secret = _load(d / "server.key_secret", secret=True)
    if id(ctx) not in _authenticators:
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=_Allowed(d / "authorized"))
        _authenticators[id(ctx)] = auth
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def client(sock: zmq.Socket) -> None:
    """Make `sock` a CURVE client if keys are configured (before connect)."""
    d = key_dir()
    if d is None:
        return
    server_public, _ = _load(d / "server.key", secret=False)
    name = os.environ.get("AMRWATCH_CLIENT_KEY", "client")
    public, secret = _load(d / f"{name}.key_secret", secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def stop(ctx: zmq.Context) -> None:
    auth = _authenticators.pop(id(ctx), None)
    if auth is not None:
        auth.stop()
