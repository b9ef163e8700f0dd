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

Revocation (remove `authorized/NAME.key`) takes effect on *open* connections
within `REVOKE_POLL_S` + one poll (≤ 1 s; measured in tests/security): the ZAP
handler only runs at a handshake, so a watcher re-reads `authorized/` and, when
a key that had been let in is gone, shuts down the TCP connections of every
server socket of this process that came from the address(es) that key used.
ZeroMQ sees the connection end and drops it; clients still authorized
reconnect by themselves (ZeroMQ's reconnect, ~0.1 s) and pass the handshake
again, the revoked one is refused at its next handshake. ZeroMQ cannot close
one peer of a bound socket, and the ZAP request carries the peer's IP, not its
port, so peers sharing the revoked key's IP are cycled too (a reconnect, which
subscribers' seq tracking and the recorder's refill absorb).

The User-Id ZeroMQ attaches to every message from an authenticated peer is the
*name* of its key file in `authorized/` (`reader-anna.key` → `reader-anna`):
the control socket attributes a remote reader's acknowledgements and notes to
it (services/acquirer), never to a name the client typed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket as _socket
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from . import config

log = logging.getLogger(__name__)
_monitors = 0

#: How often the authorized/ directory is re-read for revocations (seconds).
REVOKE_POLL_S = 0.5

_authenticators: dict[int, _Authenticator] = {}


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

    def named(self) -> dict[bytes, str]:
        """Authorized public keys (Z85) → key name (the file's stem)."""
        out: dict[bytes, str] = {}
        for p in sorted(self.directory.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(p))
            except (OSError, ValueError) as err:  # a file being written, or not a key: say so, skip it
                log.warning("authorized key %s unreadable, skipped: %s", p, err)
                continue
            out[public] = p.stem
        return out

    def current(self) -> set[bytes]:
        return set(self.named())

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.current():
            return True
        from . import metrics

        self.refused += 1
        metrics.AUTH_REFUSED.inc()
        log.warning("refused a CURVE client with an unknown key %s… (not in %s)", key[:8].decode(), self.directory)
        return False


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, plus: remembers which peer address each accepted key came from, names the
    peer's User-Id after its key file, and watches for revocations (module docstring)."""

    def __init__(self, ctx: zmq.Context, allowed: _Allowed) -> None:
        super().__init__(ctx)
        self.allowed = allowed
        self.lock = threading.Lock()
        self.seen: dict[bytes, set[str]] = {}  # z85 key → peer IPs it was accepted from
        self.servers: list[_ServerWatch] = []
        self.cut = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) >= 7 and msg[5] == b"CURVE" and len(msg[6]) == 32:
            key = z85.encode(msg[6])
            if key in self.allowed.current():
                with self.lock:
                    self.seen.setdefault(key, set()).add(msg[3].decode("utf-8", "replace"))
        await super().handle_zap_message(msg)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.allowed.named().get(z85.encode(client_public_key), "unknown")

    def start(self) -> None:
        super().start()
        self._watcher = threading.Thread(target=self._watch, name="curve-revocation", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        for w in self.servers:
            w.stop()
        super().stop()

    def _watch(self) -> None:
        while not self._stop.wait(REVOKE_POLL_S):
            try:
                self.check_revoked()
            except Exception:  # the watcher must outlive a bad directory read
                log.exception("revocation check failed")

    def check_revoked(self) -> int:
        """Cut the open connections of keys no longer authorized; return how many were cut."""
        current = self.allowed.current()
        with self.lock:
            gone = {k: ips for k, ips in self.seen.items() if k not in current}
            for k in gone:
                del self.seen[k]
        if not gone:
            return 0
        ips = set().union(*gone.values())
        n = sum(w.cut(ips) for w in list(self.servers))
        self.cut += n
        from . import metrics

        metrics.AUTH_REVOKED_CUT.inc(n)
        log.warning("CURVE key(s) %s revoked: cut %d open connection(s) from %s",
                    ", ".join(k[:8].decode() + "…" for k in gone), n, ", ".join(sorted(ips)))
        return n


class _ServerWatch:
    """The accepted TCP connections (file descriptors) of one server socket, from its monitor."""

    def __init__(self, sock: zmq.Socket) -> None:
        global _monitors
        _monitors += 1
        addr = f"inproc://amrwatch-server-{os.getpid()}-{_monitors}"
        sock.monitor(addr, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
        self.mon = zmq.Socket(sock.context, zmq.PAIR)
        self.mon.connect(addr)
        self.fds: set[int] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name="curve-server-monitor", daemon=True).start()

    def _run(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        try:
            while True:
                ev = recv_monitor_message(self.mon)
                event, fd = int(ev["event"]), int(ev["value"])
                with self.lock:
                    if event == zmq.EVENT_ACCEPTED:
                        self.fds.add(fd)
                    elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                        self.fds.discard(fd)
                    elif event == zmq.EVENT_MONITOR_STOPPED:
                        return
        except zmq.ZMQError:  # the context is ending
            pass
        finally:
            self.mon.close(linger=0)

    def cut(self, ips: set[str]) -> int:
        """shutdown() (not close: the descriptor stays ZeroMQ's) every connection from `ips`."""
        n = 0
        with self.lock:
            fds = list(self.fds)
        for fd in fds:
            try:
                s = _socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            try:
                if s.type != _socket.SOCK_STREAM or s.getpeername()[0] not in ips:
                    continue
                s.shutdown(_socket.SHUT_RDWR)
                n += 1
            except OSError:
                pass
            finally:
                s.close()
        return n

    def stop(self) -> None:
        pass  # the monitor ends with the socket (EVENT_MONITOR_STOPPED) or the context


def server(sock: zmq.Socket, ctx: zmq.Context) -> None:
    """Make `sock` a CURVE server if keys are configured (before bind), its open connections cut
    when a key is revoked."""
    d = key_dir()
    if d is None:
        return
    public, secret = _load(d / "server.key_secret", secret=True)
    if id(ctx) not in _authenticators:
        allowed = _Allowed(d / "authorized")
        auth = _Authenticator(ctx, allowed)
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=allowed)
        _authenticators[id(ctx)] = auth
    auth = _authenticators[id(ctx)]
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    auth.servers.append(_ServerWatch(sock))


def revocation_cuts(ctx: zmq.Context) -> int:
    """Connections cut by revocations so far in `ctx` (tests, status)."""
    auth = _authenticators.get(id(ctx))
    return auth.cut if auth is not None else 0


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
