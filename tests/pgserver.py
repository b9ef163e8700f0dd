"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, initdb in a temporary directory,
listening on a free loopback port, owned by an unprivileged user (the server refuses to run as root).

Started once per test process (a session-scoped fixture), stopped at the end; each test gets its own
database in it, so tests never see each other's rows and can run in parallel.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import free_port


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _run_as() -> str | None:
    """The user the server runs as when we are root: `postgres` if it exists, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PgServer:
    def __init__(self) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (apt-get install postgresql; "
                                    "scripts/install-test-servers does it)")
        self.bindir = bindir
        self.user = _run_as()
        self.tmp = Path(tempfile.mkdtemp(prefix="amrwatch-pg-"))
        self.data = self.tmp / "cluster"
        self.port = free_port()
        self.log = self.tmp / "server.log"
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chmod(self.tmp, 0o700)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                 "--locale=C.UTF-8")
        # fsync off: a throwaway test cluster; durability is the server's, not what these tests check
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", "-o",
                 f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.tmp} "
                 "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.tmp)
        if out.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr[-2000:]}\n{log[-2000:]}")

    def new_database(self) -> str:
        """A fresh empty database; its URL (no password: trust on loopback, throwaway)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url.replace("postgresql://", "postgresql://", 1), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
