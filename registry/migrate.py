"""Schema versions: which revision a registry is at, and bringing it to the one this code reads.

Alembic keeps the revision in the `alembic_version` table. Registries made
before Alembic (SQLite `PRAGMA user_version` 1 or 2, no `alembic_version`)
are stamped with the matching revision first, so they upgrade in place.
A cart's own SQLite registry is brought up to date when it is opened (as it
always was: the recorder must start without an operator). A server registry
(PostgreSQL) is shared: it is changed only by `amrwatch registry migrate`, and
a registry at another revision is refused with that command.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from amrwatch.registry.schema import HEAD

_LEGACY = {1: "0001_base", 2: "0002_summaries"}
#: PRAGMA user_version written alongside the revision, so an amrwatch from before Alembic refuses a newer file.
SQLITE_USER_VERSION = 3


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def revisions() -> list[str]:
    """All revisions, oldest first."""
    script = ScriptDirectory.from_config(_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current(conn: sa.Connection) -> str | None:
    """The registry's revision; None for an empty database."""
    rev = MigrationContext.configure(conn).get_current_revision()
    if rev is None and conn.dialect.name == "sqlite":
        legacy = conn.exec_driver_sql("PRAGMA user_version").scalar()
        if legacy in _LEGACY and sa.inspect(conn).has_table("sessions"):
            return _LEGACY[legacy]
    return rev


def upgrade(conn: sa.Connection) -> tuple[str | None, str]:
    """Bring the registry on `conn` to HEAD in one transaction; (revision before, after)."""
    before = current(conn)
    if before is not None and before not in revisions():
        raise SchemaMismatch(before, conn, newer=True)
    if conn.in_transaction():
        conn.commit()
    if conn.dialect.name == "sqlite":
        # BEGIN IMMEDIATE (store.engine_for's "write" option): the write lock is taken before Alembic reads the
        # version table, so a second process opening a new registry at the same moment (recorder starting
        # while `amrwatch session list` runs) waits its busy timeout and then finds HEAD, instead of failing
        # with "database is locked" when it tries to upgrade its read snapshot to a write.
        conn.execution_options(write=True)
    with conn.begin():
        if conn.dialect.name == "sqlite" and before is not None \
                and MigrationContext.configure(conn).get_current_revision() is None:
            command.stamp(_config(conn), before)
        command.upgrade(_config(conn), HEAD)
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA user_version={SQLITE_USER_VERSION}")
    return before, HEAD


def display_url(url: sa.URL) -> str:
    """The URL as the user writes it (postgresql://, not the driver's name), password hidden."""
    if url.drivername.startswith("postgresql"):
        url = url.set(drivername="postgresql")
    return url.render_as_string(hide_password=True)


class SchemaMismatch(RuntimeError):
    def __init__(self, rev: str | None, conn: sa.Connection, *, newer: bool = False) -> None:
        where = display_url(conn.engine.url)
        self.revision = rev
        if newer:
            msg = (f"registry {where} has schema revision {rev}, newer than this amrwatch reads ({HEAD}); "
                   "upgrade amrwatch")
        else:
            msg = (f"registry {where} is at schema revision {rev or 'none (empty database)'}; this amrwatch needs "
                   f"{HEAD}. Run: amrwatch registry migrate --registry '{where}'")
        super().__init__(msg)


def migrate_url(target) -> tuple[str | None, str]:
    """`amrwatch registry migrate`: bring the registry at `target` (URL or SQLite path) to HEAD."""
    from amrwatch.registry.store import engine_for

    eng = engine_for(target)
    try:
        with eng.connect() as c:
            return upgrade(c)
    finally:
        eng.dispose()
