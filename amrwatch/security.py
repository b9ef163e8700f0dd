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
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from . import config

log = logging.getLogger(__name__)

_authenticators: dict[int, ThreadAuthenticator] = {}


class KeyDirError(ValueError):
    """A key directory that is missing something or is unsafe."""


def key_dir() -> Path | None:
    """The key directory (AMRWATCH_KEYS, config.key_dir); None: plain TCP."""
    return config.key_dir()


def generate(directory: Path, *, clients: tuple[str, ...] = ("client",)) -> list[Path]:
    """Create the server keypair and client keypairs; authorize the clients."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    made = []
    for name in ("server", *clients):
        if (directory / f"{name}.key_secret").exists():
            raise KeyDirError(f"{directory / (name + '.key_secret')} exists; refusing to overwrite a key")
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
        raise KeyDirError(f"CURVE key file {path} is missing; create keys with `amrwatch keys generate DIR`")
    if secret and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyDirError(f"secret key {path} is readable by others (mode {oct(path.stat().st_mode & 0o777)}); "
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


_monitors = 0
#: sysexits.h EX_CONFIG: this process and the socket it connects to disagree about CURVE.
EXIT_KEYS_MISMATCH = 78
#: ZMTP error: the peer speaks another security mechanism (CURVE against NULL, or the reverse).
_MECHANISM_MISMATCH = 0x11000002


def mismatch_hint(endpoint: str, event: int, value: int) -> str:
    d = key_dir()
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (f"{endpoint} refused this process's CURVE key ({config.client_key_name()} in "
                f"{d}): its public key is not in the server's authorized/ directory")
    if d is None:
        return (f"{endpoint} uses CURVE but AMRWATCH_KEYS is not set for this process: partial keying — set "
                "AMRWATCH_KEYS (and AMRWATCH_CLIENT_KEY) for every service and client of the stack, or for none")
    return (f"{endpoint} does not use CURVE but AMRWATCH_KEYS={d} is set for this process: partial keying — set "
            "AMRWATCH_KEYS for every service of the stack (the bus and the acquirer included), or for none")


def _exit_on_mismatch(text: str) -> None:
    log.critical("%s", text)
    print(f"amrwatch: {text}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_KEYS_MISMATCH)


def watch_handshake(sock: zmq.Socket, endpoint: str,
                    on_mismatch: Callable[[str], None] | None = None) -> None:
    """Watch `sock`'s connection for a security handshake that fails because the two ends are not keyed
    alike (some services keyed, not others): such a socket connects and then receives nothing, silently.
    The default answer is an error exit (78) with the hint. Call on the socket's own thread, before
    connect; the monitor is read by a daemon thread that ends with the context."""
    on_mismatch = on_mismatch or _exit_on_mismatch
    global _monitors
    _monitors += 1
    addr = f"inproc://amrwatch-handshake-{os.getpid()}-{_monitors}"
    sock.monitor(addr, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    # Made here, then handed to the thread; not through ctx.socket(), so that ctx.destroy() on this thread
    # never closes it under the thread's feet (ctx.term() ends the thread's recv instead).
    mon = zmq.Socket(sock.context, zmq.PAIR)
    mon.connect(addr)

    def run() -> None:
        from zmq.utils.monitor import recv_monitor_message

        try:
            while True:
                ev = recv_monitor_message(mon)
                event, value = int(ev["event"]), int(ev["value"])
                if event == zmq.EVENT_MONITOR_STOPPED:
                    return
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH or value == _MECHANISM_MISMATCH:
                    on_mismatch(mismatch_hint(endpoint, event, value))
                    return
        except zmq.ZMQError:  # the context is ending
            pass
        finally:
            mon.close(linger=0)

    threading.Thread(target=run, name="curve-handshake", daemon=True).start()


def client(sock: zmq.Socket, endpoint: str | None = None,
           on_mismatch: Callable[[str], None] | None = None) -> None:
    """Make `sock` a CURVE client if keys are configured (before connect). With `endpoint`, a handshake that
    fails because one end is keyed and the other is not is an error (`watch_handshake`)."""
    d = key_dir()
    if endpoint is not None:
        watch_handshake(sock, endpoint, on_mismatch)
    if d is None:
        return
    server_public, _ = _load(d / "server.key", secret=False)
    name = config.client_key_name()
    public, secret = _load(d / f"{name}.key_secret", secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def stop(ctx: zmq.Context) -> None:
    auth = _authenticators.pop(id(ctx), None)
    if auth is not None:
        auth.stop()
