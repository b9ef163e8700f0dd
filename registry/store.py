"""The session registry: what was recorded, with what montage, settings and
model, for which pseudonymous patient — and who changed what, when.

SQLite in WAL mode with synchronous=FULL: a registry row that says a
session exists survives a power cut as surely as the session's archive.
Every change writes an `audit` row in the same transaction; audit rows
(and outcome and session-summary rows) can never be updated or deleted — triggers forbid it,
so a correction is a new row pointing at the one it corrects.

No hospital record number, name or birth date is ever stored here: patients
appear only as random tokens (see pseudonyms.py for the separate map).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any
from collections.abc import Iterator

import sqlalchemy as sa

from amrwatch.registry.vocab import (  # noqa: F401 - re-exported: the registry's names live here too
    COMPLICATIONS,
    OUTCOME_CLASSES,
    PRESENCE_CLOSED_BY,
    RECORDING_TIMEPOINTS,
    REGISTRY_FILE,
    STATUSES,
    TIMEPOINTS,
)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: "pt_" and 24 hex digits: 96 random bits, and a shape no hospital number has.
PATIENT_TOKEN = re.compile(r"^pt_[0-9a-f]{24}$")

#: PRAGMA user_version of a cart's SQLite registry (the Alembic revision is the real version; see migrate.py).
SCHEMA_VERSION = 3

class RegistryError(ValueError):
    """A registry call that cannot be done as asked; the text says why and what to do."""


class OutcomeConflict(RegistryError):
    """Another writer entered the same follow-up first; the message says how to reconcile."""


class UnknownSession(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def new_patient_token() -> str:
    """A fresh pseudonym: 96 bits from the OS's CSPRNG, derived from nothing."""
    return "pt_" + secrets.token_hex(12)


def utc_now_iso() -> str:
    return _iso(dt.datetime.now(dt.UTC))


def _iso(t: dt.datetime | str, field: str = "time") -> str:
    if isinstance(t, str):
        try:
            t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise RegistryError(f"{field} must be an ISO 8601 time with a UTC offset; got {t!r}") from None
    if not isinstance(t, dt.datetime) or t.tzinfo is None:
        raise RegistryError(f"{field} must be a timezone-aware time; got {t!r}")
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(value: Any, field: str) -> str:
    if not isinstance(value, dict):
        raise RegistryError(f"{field} must be a JSON object (dict); got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise RegistryError(f"{field} must be JSON-serialisable: {err}") from None


def _check(pattern: re.Pattern, value: Any, field: str, what: str, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise RegistryError(f"{field} must be {what}; got {value!r}")
    return value


def check_actor(actor: Any) -> str:
    from amrwatch.freetext import identifier_problem

    actor = _check(_NAME, actor, "actor", "1-64 characters of A-Z a-z 0-9 _ . : - naming who makes the change",
                   optional=False)
    problem = identifier_problem("actor", actor)
    if problem:
        raise RegistryError(problem)
    return actor


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    started_at: str
    ended_at: str | None
    source: str
    scenario: str | None
    replay_of: str | None
    montage: dict
    settings: dict
    model_sha256: str | None
    model_synthetic: bool | None
    patient_token: str | None
    status: str
    status_reason: str | None
    cart: str | None = None
    site: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: str
    actor: str
    action: str
    table_name: str
    row_key: str
    old: dict | None
    new: dict | None
    supersedes: int | None
    origin: str | None = None
    origin_id: int | None = None


@dataclass(frozen=True)
class SummaryRow:
    id: int
    session_id: str
    summary: dict
    recorded_at: str
    actor: str
    supersedes: int | None
    origin: str | None = None
    origin_id: int | None = None


@dataclass(frozen=True)
class OutcomeRow:
    id: int
    session_id: str
    timepoint: str
    cohen_grade: int
    outcome_class: str | None
    relief_date: str | None
    complications: dict
    recorded_at: str
    actor: str
    supersedes: int | None
    origin: str | None = None
    origin_id: int | None = None


@dataclass(frozen=True)
class PresenceRow:
    """A remote reader watching a session: from_at None when its `watching` was never received (only its
    `left`); until_at None while it watches; closed_by 'reader' (it said it left) or 'session_end'."""
    id: int
    session_id: str
    reader: str
    from_at: str | None
    until_at: str | None
    closed_by: str | None


@dataclass(frozen=True)
class FollowupRow:
    id: int
    operation_session_id: str
    recording_session_id: str
    timepoint: str
    linked_at: str
    actor: str


_SESSION_COLS = ("session_id", "started_at", "ended_at", "source", "scenario", "replay_of", "montage", "settings",
                 "model_sha256", "model_synthetic", "patient_token", "status", "status_reason", "cart", "site")
#: Fields `update_session` may change (status goes through close_session / mark_corrupt).
MUTABLE_FIELDS = ("scenario", "montage", "settings", "model_sha256", "model_synthetic", "patient_token")


def _session_from_row(r) -> SessionRow:
    d = dict(r)
    d["montage"] = json.loads(d["montage"])
    d["settings"] = json.loads(d["settings"])
    d["model_synthetic"] = None if d["model_synthetic"] is None else bool(d["model_synthetic"])
    return SessionRow(**d)


def _plain(row: SessionRow) -> dict:
    return row.as_dict()


def private_file(path: Path) -> None:
    """Create `path` (and missing parent directories) readable by its owner only: 0600 in 0700 directories.
    The registry and the pseudonym map hold who was operated on and when; SQLite gives its -wal and -shm
    files the database file's permissions. An existing file is narrowed to 0600, never widened."""
    path = Path(path)
    for parent in reversed([p for p in path.parents if not p.exists()]):
        parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect_durable(path: Path) -> sqlite3.Connection:
    """A connection with WAL, synchronous=FULL and foreign keys, each read back:
    a filesystem that refuses WAL is an error, not a silent downgrade. The file is private (0600)."""
    private_file(path)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.row_factory = sqlite3.Row
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    if str(mode).lower() != "wal" or sync != 2 or fk != 1:
        conn.close()
        raise RegistryError(f"{path}: SQLite did not accept journal_mode=WAL, synchronous=FULL, foreign_keys=ON "
                            f"(got {mode}, {sync}, {fk}); put the data directory on a local filesystem")
    return conn


def registry_target(registry: str | None, data_dir: Path | None) -> str | Path:
    """The registry to open: --registry, else $AMRWATCH_REGISTRY, else DATA_DIR/registry.sqlite."""
    from amrwatch import config

    chosen = registry or config.registry_url()
    if chosen:
        return chosen
    return Path(data_dir if data_dir is not None else config.data_dir()) / REGISTRY_FILE


def _display(url: sa.URL) -> str:
    from amrwatch.registry.migrate import display_url

    return display_url(url)


def _is_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def engine_for(target: str | Path) -> sa.Engine:
    """An engine for a SQLite file (Path or sqlite:///PATH) or a PostgreSQL URL (postgresql://..., psycopg 3).

    SQLite: WAL, synchronous=FULL, foreign keys on every connection, each read back (a filesystem that refuses
    WAL is an error, not a silent downgrade); writes take the write lock at BEGIN (IMMEDIATE), so two writers
    queue instead of failing half-way. The file is private (0600)."""
    if _is_url(target):
        url = sa.engine.make_url(str(target))
        if url.get_backend_name() == "postgresql":
            if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
                url = url.set(drivername="postgresql+psycopg")
            return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
        if url.get_backend_name() != "sqlite" or not url.database:
            raise RegistryError(f"registry must be postgresql://USER@HOST/DB or sqlite:///PATH; got {target!r}")
        target = Path(url.database)
    path = Path(target)
    private_file(path)
    eng = sa.create_engine(f"sqlite+pysqlite:///{path}", connect_args={"timeout": 10.0})

    @sa.event.listens_for(eng, "connect")
    def _durable(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we say BEGIN ourselves (below)
        mode = dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        dbapi_conn.execute("PRAGMA synchronous=FULL")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA busy_timeout=10000")
        sync = dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]
        fk = dbapi_conn.execute("PRAGMA foreign_keys").fetchone()[0]
        if str(mode).lower() != "wal" or sync != 2 or fk != 1:
            raise RegistryError(f"{path}: SQLite did not accept journal_mode=WAL, synchronous=FULL, foreign_keys=ON "
                                f"(got {mode}, {sync}, {fk}); put the data directory on a local filesystem")

    @sa.event.listens_for(eng, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return eng


class Registry:
    """A registry: a cart's SQLite file (DATA_DIR/registry.sqlite) or a PostgreSQL database (a URL).

    One instance is used by one thread. Every change is one transaction with its audit row; a change that a
    constraint refuses (another writer got there first) rolls back whole and raises RegistryError saying what
    to do."""

    def __init__(self, target: Path | str):
        self.url = str(target) if _is_url(target) else None
        self.engine = engine_for(target)
        self.dialect = self.engine.dialect.name
        self.path: Path | None = None if self.dialect != "sqlite" else Path(self.engine.url.database)
        self.where = str(self.path) if self.path is not None else _display(self.engine.url)
        self._cur: sa.Connection | None = None
        self._raw: sqlite3.Connection | None = None
        self._order = "rowid" if self.dialect == "sqlite" else "session_id"
        try:
            self._check_version()
        except Exception:
            self.engine.dispose()
            raise

    def _check_version(self) -> None:
        from amrwatch.registry import migrate

        with self.engine.connect() as c:
            try:
                rev = migrate.current(c)
            except sa.exc.DBAPIError as err:
                raise RegistryError(f"cannot read the registry at {self.where}: {err.orig}") from None
            if rev == migrate.HEAD:
                return
            if rev is not None and rev not in migrate.revisions():
                raise RegistryError(str(migrate.SchemaMismatch(rev, c, newer=True)))
            if self.dialect != "sqlite":
                raise RegistryError(str(migrate.SchemaMismatch(rev, c)))
            migrate.upgrade(c)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Registry:
        return cls(Path(data_dir) / REGISTRY_FILE)

    @classmethod
    def existing(cls, data_dir: Path) -> Registry:
        """DATA_DIR's registry, which must exist: a typo in --data is an error, not a new empty registry."""
        path = Path(data_dir) / REGISTRY_FILE
        if not path.is_file():
            raise RegistryError(f"no registry at {path}; give the data directory with --data DIR (the recorder "
                                "creates the registry with the first session)")
        return cls(path)

    @classmethod
    def open(cls, registry: str | None, data_dir: Path | None) -> Registry:
        """--registry URL, else $AMRWATCH_REGISTRY, else DATA_DIR's existing SQLite registry."""
        target = registry_target(registry, data_dir)
        if isinstance(target, Path):
            return cls.existing(target.parent)
        return cls(target)

    @property
    def conn(self) -> sqlite3.Connection:
        """A raw sqlite3 connection to the same file, for inspection and tests (SQLite registries only)."""
        if self.path is None:
            raise RegistryError(f"{self.where} is not a SQLite registry")
        if self._raw is None:
            self._raw = connect_durable(self.path)
        return self._raw

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def batch(self):
        """Many changes in one transaction (all or none, one fsync): `with reg.batch(): ...`."""
        return self._tx()

    # --------------------------------------------------------------- sessions

    def create_session(
        self,
        session_id: str,
        *,
        actor: str,
        started_at: dt.datetime | str,
        source: str,
        scenario: str | None = None,
        replay_of: str | None = None,
        montage: dict | None = None,
        settings: dict | None = None,
        model_sha256: str | None = None,
        model_synthetic: bool | None = None,
        patient_token: str | None = None,
        cart: str | None = None,
        site: str | None = None,
    ) -> SessionRow:
        actor = check_actor(actor)
        _check(_NAME, cart, "cart", "a cart name (A-Z a-z 0-9 _ . : -, up to 64)")
        _check(_NAME, site, "site", "a site name (A-Z a-z 0-9 _ . : -, up to 64)")
        _check(_SESSION_ID, session_id, "session_id", "1-64 characters of A-Z a-z 0-9 _ -", optional=False)
        if not isinstance(source, str) or not (1 <= len(source) <= 256):
            raise RegistryError(f"source must be 1-256 characters (e.g. 'sim', 'edf:PATH'); got {source!r}")
        _check(_NAME, scenario, "scenario", "a scenario name (A-Z a-z 0-9 _ . : -, up to 64)")
        _check(_SESSION_ID, replay_of, "replay_of", "the id of an archived session")
        fields = self._mutable_checked({"scenario": scenario, "montage": montage or {}, "settings": settings or {},
                                        "model_sha256": model_sha256, "model_synthetic": model_synthetic,
                                        "patient_token": patient_token})
        row = {"session_id": session_id, "started_at": _iso(started_at, "started_at"), "ended_at": None,
               "source": source, "replay_of": replay_of, "status": "recording", "status_reason": None,
               "cart": cart, "site": site, **fields}
        with self._tx():
            if self._row(session_id) is not None:
                raise RegistryError(f"session_id {session_id!r} is already registered; session ids are unique")
            if replay_of is not None and self._row(replay_of) is None:
                raise UnknownSession(f"replay_of: no session {replay_of!r} in the registry")
            self._exec(f"INSERT INTO sessions ({', '.join(_SESSION_COLS)}) VALUES "
                       f"({', '.join(':' + c for c in _SESSION_COLS)})", {c: row[c] for c in _SESSION_COLS})
            created = self._get(session_id)
            self._audit(actor, "create", "sessions", session_id, None, _plain(created))
        return created

    def update_session(self, session_id: str, *, actor: str, **changes: Any) -> SessionRow:
        """Change any of MUTABLE_FIELDS (e.g. the model once the predictor loaded it, the patient token once known)."""
        actor = check_actor(actor)
        unknown = set(changes) - set(MUTABLE_FIELDS)
        if unknown or not changes:
            raise RegistryError(f"update_session changes {list(MUTABLE_FIELDS)}; got {sorted(changes) or 'nothing'}")
        fields = self._mutable_checked(changes)
        return self._change(session_id, actor, "update", fields)

    def close_session(self, session_id: str, *, actor: str, ended_at: dt.datetime | str | None = None) -> SessionRow:
        actor = check_actor(actor)
        ended = _iso(ended_at, "ended_at") if ended_at is not None else utc_now_iso()
        with self._tx():
            row = self._change(session_id, actor, "close", {"status": "closed", "ended_at": ended},
                               allowed_from=("recording",))
            # Readers still watching when the session ends: their interval ends with it, flagged as such.
            for p in self._q("SELECT * FROM reader_presence WHERE session_id = :s AND until_at IS NULL ORDER BY id",
                             {"s": session_id}):
                self._close_presence(PresenceRow(**dict(p)), ended, "session_end", actor)
        return row

    def mark_corrupt(self, session_id: str, reason: str, *, actor: str) -> SessionRow:
        """The archive failed verification or recovery: the session stays listed, flagged, never deleted."""
        actor = check_actor(actor)
        if not isinstance(reason, str) or not (1 <= len(reason) <= 2000):
            raise RegistryError(f"reason must be 1-2000 characters saying what is wrong; got {reason!r}")
        return self._change(session_id, actor, "mark_corrupt", {"status": "corrupt", "status_reason": reason},
                            allowed_from=("recording", "closed"))

    def get(self, session_id: str) -> SessionRow:
        row = self._row(session_id)
        if row is None:
            raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
        return _session_from_row(row)

    def find(self, session_id: str) -> SessionRow | None:
        row = self._row(session_id)
        return None if row is None else _session_from_row(row)

    def list(self, status: str | None = None) -> list[SessionRow]:
        """All sessions, oldest first (newest last), optionally of one status."""
        if status is not None and status not in STATUSES:
            raise RegistryError(f"status must be one of {list(STATUSES)}; got {status!r}")
        sql = "SELECT * FROM sessions"
        args: dict[str, Any] = {}
        if status is not None:
            sql += " WHERE status = :status"
            args["status"] = status
        sql += f" ORDER BY started_at, {self._order}"
        return [_session_from_row(r) for r in self._q(sql, args)]

    # --------------------------------------------------------------- outcomes

    def add_outcome(
        self,
        session_id: str,
        *,
        actor: str,
        timepoint: str,
        cohen_grade: int,
        outcome_class: str | None = None,
        relief_date: dt.date | str | None = None,
        complications: dict | list | None = None,
        supersedes: int | None = None,
    ) -> OutcomeRow:
        """A follow-up outcome; with `supersedes`, a correction of an earlier row (which stays, marked superseded)."""
        actor = check_actor(actor)
        if timepoint not in TIMEPOINTS:
            raise RegistryError(f"timepoint must be one of {list(TIMEPOINTS)}; got {timepoint!r}")
        if isinstance(cohen_grade, bool) or not isinstance(cohen_grade, int) or not (0 <= cohen_grade <= 4):
            raise RegistryError(f"cohen_grade must be an integer from 0 (no spasm) to 4; got {cohen_grade!r}")
        if outcome_class is not None and outcome_class not in OUTCOME_CLASSES:
            raise RegistryError(f"outcome_class must be one of {list(OUTCOME_CLASSES)}; got {outcome_class!r}")
        if outcome_class is not None and (cohen_grade == 0) != (outcome_class == "cured"):
            raise RegistryError(
                f"outcome_class {outcome_class!r} contradicts cohen_grade {cohen_grade}: grade 0 (no spasm) is "
                "'cured' and 'cured' is grade 0; correct one of them")
        relief = None
        if relief_date is not None:
            try:
                relief = dt.date.fromisoformat(str(relief_date)).isoformat()
            except ValueError:
                raise RegistryError(f"relief_date must be a date YYYY-MM-DD; got {relief_date!r}") from None
        comp = _json(_complications(complications), "complications")
        with self._tx():
            session = self._row(session_id, lock=True)
            if session is None:
                raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
            surgery = session["started_at"][:10]
            if relief is not None and relief < surgery:
                raise RegistryError(f"relief_date {relief} is before the operation (session {session_id} started on "
                                    f"{surgery}); the spasm cannot stop before surgery — check the date")
            old = None
            if supersedes is not None:
                prev = self._one("SELECT * FROM outcomes WHERE id = :id", {"id": supersedes})
                if prev is None or prev["session_id"] != session_id:
                    raise RegistryError(f"supersedes must be the id of an outcome of session {session_id!r}; "
                                        f"got {supersedes!r}")
                if self._one("SELECT 1 AS x FROM outcomes WHERE supersedes = :id", {"id": supersedes}):
                    raise RegistryError(f"outcome {supersedes} was already corrected; correct the newest row instead")
                old = _outcome(prev)
                if prev["timepoint"] != timepoint:
                    raise RegistryError(f"outcome {supersedes} is the {prev['timepoint']} follow-up; a correction keeps "
                                        f"the timepoint (got {timepoint!r}); add the {timepoint} outcome instead")
            else:
                current = self._one(
                    "SELECT id FROM outcomes o WHERE session_id = :s AND timepoint = :t AND NOT EXISTS "
                    "(SELECT 1 FROM outcomes n WHERE n.supersedes = o.id)", {"s": session_id, "t": timepoint})
                if current is not None:
                    raise RegistryError(f"session {session_id} already has a {timepoint} outcome (id {current['id']}); "
                                        "correct it (`amrwatch outcome edit`) instead of adding a second one")
            try:
                new_id = self._insert_returning_id(
                    "INSERT INTO outcomes (session_id, timepoint, cohen_grade, outcome_class, relief_date, "
                    "complications, recorded_at, actor, supersedes) VALUES (:s, :t, :g, :c, :r, :comp, :at, :actor, "
                    ":sup) RETURNING id",
                    {"s": session_id, "t": timepoint, "g": cohen_grade, "c": outcome_class, "r": relief,
                     "comp": comp, "at": utc_now_iso(), "actor": actor, "sup": supersedes})
            except sa.exc.IntegrityError:
                raise OutcomeConflict(
                    f"another writer recorded the {timepoint} outcome of session {session_id} at the same moment"
                    + (f" (or corrected outcome {supersedes} first)" if supersedes is not None else "")
                    + f"; nothing of yours was written. Look at it (`amrwatch outcome list {session_id}`) and, if "
                    "yours differs, correct the newest row with `amrwatch outcome edit`") from None
            row = _outcome(self._one("SELECT * FROM outcomes WHERE id = :id", {"id": new_id}))
            self._audit(actor, "correct" if supersedes is not None else "create", "outcomes", str(row.id),
                        asdict(old) if old else None, asdict(row),
                        history_key=str(supersedes) if supersedes is not None else None)
        return row

    def outcomes(self, session_id: str, *, include_superseded: bool = False) -> list[OutcomeRow]:
        sql = "SELECT * FROM outcomes o WHERE session_id = :s"
        if not include_superseded:
            sql += " AND NOT EXISTS (SELECT 1 FROM outcomes n WHERE n.supersedes = o.id)"
        return [_outcome(r) for r in self._q(sql + " ORDER BY id", {"s": session_id})]

    def current_outcomes(self) -> dict[str, list[OutcomeRow]]:
        """Every session's current (not superseded) outcomes, in one query, for cohort tables."""
        out: dict[str, list[OutcomeRow]] = {}
        for r in self._q("SELECT * FROM outcomes o WHERE NOT EXISTS "
                         "(SELECT 1 FROM outcomes n WHERE n.supersedes = o.id) ORDER BY id"):
            row = _outcome(r)
            out.setdefault(row.session_id, []).append(row)
        return out

    # --------------------------------------------------------------- presence

    def reader_watching(self, session_id: str, reader: str, at: dt.datetime | str, *, actor: str) -> PresenceRow:
        """A remote reader started watching the session at `at` (its `reader_note` kind 'watching'). Already
        watching: the open interval stands. A `left` of this reader already stored without its start (it
        arrived first): that interval gets this start."""
        actor, reader, at = self._presence_args(actor, reader, at)
        with self._tx():
            open_ = self._open_presence(session_id, reader)
            if open_ is not None:
                return PresenceRow(**dict(open_))
            startless = self._one("SELECT * FROM reader_presence WHERE session_id = :s AND reader = :r AND "
                                  "from_at IS NULL AND until_at >= :at ORDER BY id", {"s": session_id, "r": reader,
                                                                                      "at": at})
            if startless is not None:
                before = PresenceRow(**dict(startless))
                self._exec("UPDATE reader_presence SET from_at = :at WHERE id = :id", {"at": at, "id": before.id})
                after = self._presence_row(before.id)
                self._audit(actor, "watching", "reader_presence", str(before.id), asdict(before), asdict(after))
                return after
            new_id = self._insert_returning_id(
                "INSERT INTO reader_presence (session_id, reader, from_at) VALUES (:s, :r, :at) RETURNING id",
                {"s": session_id, "r": reader, "at": at})
            row = self._presence_row(new_id)
            self._audit(actor, "watching", "reader_presence", str(new_id), None, asdict(row))
        return row

    def reader_left(self, session_id: str, reader: str, at: dt.datetime | str, *, actor: str) -> PresenceRow:
        """The reader stopped watching at `at` (kind 'left'): its open interval closes, by the reader. Without
        an open interval (its `watching` not received, or not yet), a row with an unknown start is kept, so
        the `left` is not lost and a late `watching` can fill the start in."""
        actor, reader, at = self._presence_args(actor, reader, at)
        with self._tx():
            open_ = self._open_presence(session_id, reader)
            if open_ is not None:
                return self._close_presence(PresenceRow(**dict(open_)), at, "reader", actor)
            same = self._one("SELECT * FROM reader_presence WHERE session_id = :s AND reader = :r AND "
                             "until_at = :at AND closed_by = 'reader'", {"s": session_id, "r": reader, "at": at})
            if same is not None:  # the same `left` again (refetched after a restart): already in the log
                return PresenceRow(**dict(same))
            new_id = self._insert_returning_id(
                "INSERT INTO reader_presence (session_id, reader, until_at, closed_by) VALUES (:s, :r, :at, "
                "'reader') RETURNING id", {"s": session_id, "r": reader, "at": at})
            row = self._presence_row(new_id)
            self._audit(actor, "left", "reader_presence", str(new_id), None, asdict(row))
        return row

    def reader_link_lost(self, session_id: str, reader: str, last_heard: dt.datetime | str, *,
                         actor: str) -> PresenceRow | None:
        """The cart stopped hearing the reader (`reader_note` kind 'link_lost', the acquirer's word, not the
        reader's): its open interval ends when the cart last heard it, closed by 'link_lost'. A later
        'link_restored' opens a new interval (`reader_watching`), so the outage is the hole between the two.
        None when no interval is open (the reader had already left, or this note was seen before)."""
        actor, reader, at = self._presence_args(actor, reader, last_heard)
        with self._tx():
            open_ = self._open_presence(session_id, reader)
            if open_ is None:
                return None
            return self._close_presence(PresenceRow(**dict(open_)), at, "link_lost", actor)

    def _presence_args(self, actor: str, reader: str, at: dt.datetime | str) -> tuple[str, str, str]:
        """A presence note's actor, reader (its CURVE key name) and time, each checked with the reason."""
        return (check_actor(actor),
                _check(_NAME, reader, "reader", "a reader name (its CURVE key name: A-Z a-z 0-9 _ . : -, up to 64)",
                       optional=False),
                _iso(at, "at"))

    def _open_presence(self, session_id: str, reader: str):
        """In the caller's transaction: the reader's open interval in the session, if any (the session must
        exist)."""
        if self._row(session_id) is None:
            raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
        return self._one("SELECT * FROM reader_presence WHERE session_id = :s AND reader = :r AND "
                         "until_at IS NULL ORDER BY id DESC", {"s": session_id, "r": reader})

    def presence(self, session_id: str) -> list[PresenceRow]:
        """The session's presence log, in the order the intervals were opened."""
        return [PresenceRow(**dict(r)) for r in self._q(
            "SELECT * FROM reader_presence WHERE session_id = :s ORDER BY id", {"s": session_id})]

    def _presence_row(self, pid: int) -> PresenceRow:
        return PresenceRow(**dict(self._one("SELECT * FROM reader_presence WHERE id = :id", {"id": pid})))

    def _close_presence(self, before: PresenceRow, at: str, closed_by: str, actor: str) -> PresenceRow:
        if before.from_at is not None and at < before.from_at:
            at = before.from_at  # a clock step back between the two notes: never an interval of negative length
        self._exec("UPDATE reader_presence SET until_at = :at, closed_by = :by WHERE id = :id",
                   {"at": at, "by": closed_by, "id": before.id})
        after = self._presence_row(before.id)
        self._audit(actor, "left" if closed_by == "reader" else closed_by, "reader_presence", str(before.id),
                    asdict(before), asdict(after))
        return after

    # -------------------------------------------------------- follow-up recordings

    def link_recording(self, operation_session_id: str, recording_session_id: str, *, timepoint: str,
                       actor: str) -> FollowupRow:
        """Link a postoperative AMR recording (its own session: recorded, or analysed from a file) to the
        operation's session at a follow-up point. One recording per operation and point; a recording belongs
        to one operation; it must have started after the operation."""
        actor = check_actor(actor)
        if timepoint not in RECORDING_TIMEPOINTS:
            raise RegistryError(f"timepoint must be one of {list(RECORDING_TIMEPOINTS)}; got {timepoint!r}")
        if operation_session_id == recording_session_id:
            raise RegistryError(f"recording {recording_session_id!r} is the operation itself; link the session of "
                                "the postoperative recording")
        with self._tx():
            op_row = self._row(operation_session_id, lock=True)
            if op_row is None:
                raise UnknownSession(f"operation: no session {operation_session_id!r} in the registry; "
                                     "`amrwatch sessions` lists them")
            rec_row = self._row(recording_session_id)
            if rec_row is None:
                raise UnknownSession(f"recording: no session {recording_session_id!r} in the registry; record or "
                                     "analyse the recording first (`amrwatch analyze FILE`), then link it")
            if rec_row["started_at"] <= op_row["started_at"]:
                raise RegistryError(f"recording {recording_session_id} started at {rec_row['started_at']}, not after "
                                    f"the operation {operation_session_id} ({op_row['started_at']}); a follow-up "
                                    "recording comes after the operation")
            taken = self._one("SELECT * FROM followup_recordings WHERE (operation_session_id = :o AND timepoint = :t)"
                              " OR recording_session_id = :r",
                              {"o": operation_session_id, "t": timepoint, "r": recording_session_id})
            if taken is not None:
                t = FollowupRow(**dict(taken))
                raise RegistryError(f"already linked: recording {t.recording_session_id} is the {t.timepoint} "
                                    f"follow-up of operation {t.operation_session_id} (link {t.id}); links are "
                                    "append-only")
            new_id = self._insert_returning_id(
                "INSERT INTO followup_recordings (operation_session_id, recording_session_id, timepoint, linked_at, "
                "actor) VALUES (:o, :r, :t, :at, :actor) RETURNING id",
                {"o": operation_session_id, "r": recording_session_id, "t": timepoint, "at": utc_now_iso(),
                 "actor": actor})
            row = FollowupRow(**dict(self._one("SELECT * FROM followup_recordings WHERE id = :id", {"id": new_id})))
            self._audit(actor, "link", "followup_recordings", str(new_id), None, asdict(row))
        return row

    def followup_recordings(self, operation_session_id: str | None = None) -> list[FollowupRow]:
        """Links of one operation (or all), oldest first."""
        sql, args = "SELECT * FROM followup_recordings", {}
        if operation_session_id is not None:
            sql += " WHERE operation_session_id = :o"
            args["o"] = operation_session_id
        return [FollowupRow(**dict(r)) for r in self._q(sql + " ORDER BY id", args)]

    # -------------------------------------------------------------- summaries

    def set_summary(self, session_id: str, summary: dict, *, actor: str) -> SummaryRow:
        """Store what the session contributes to the cohort (summary.summarize); a later call supersedes."""
        from amrwatch.registry.summary import SummaryError, check_summary

        actor = check_actor(actor)
        try:
            body = check_summary(summary)
        except SummaryError as err:
            raise RegistryError(str(err)) from None
        text = _json(body, "summary")
        with self._tx():
            if self._row(session_id) is None:
                raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
            prev = self._current_summary(session_id)
            new_id = self._insert_returning_id(
                "INSERT INTO session_summaries (session_id, summary, recorded_at, actor, supersedes) "
                "VALUES (:s, :summary, :at, :actor, :sup) RETURNING id",
                {"s": session_id, "summary": text, "at": utc_now_iso(), "actor": actor,
                 "sup": prev.id if prev else None})
            row = _summary(self._one("SELECT * FROM session_summaries WHERE id = :id", {"id": new_id}))
            self._audit(actor, "correct" if prev else "create", "session_summaries", session_id,
                        prev.summary if prev else None, row.summary)
        return row

    def summary(self, session_id: str) -> SummaryRow | None:
        """The session's current summary, or None if none was stored."""
        return self._current_summary(session_id)

    def summary_history(self, session_id: str) -> list[SummaryRow]:
        return [_summary(r) for r in self._q(
            "SELECT * FROM session_summaries WHERE session_id = :s ORDER BY id", {"s": session_id})]

    def current_summaries(self) -> dict[str, SummaryRow]:
        """Every session's current summary, in one query."""
        return {row.session_id: row for row in map(_summary, self._q(
            "SELECT * FROM session_summaries s WHERE NOT EXISTS "
            "(SELECT 1 FROM session_summaries n WHERE n.supersedes = s.id) ORDER BY id"))}

    def _current_summary(self, session_id: str) -> SummaryRow | None:
        r = self._one("SELECT * FROM session_summaries s WHERE session_id = :s AND NOT EXISTS "
                      "(SELECT 1 FROM session_summaries n WHERE n.supersedes = s.id)", {"s": session_id})
        return None if r is None else _summary(r)

    # ------------------------------------------------------------------ audit

    def audit_trail(self, table_name: str | None = None, row_key: str | None = None) -> list[AuditRow]:
        sql, args = "SELECT * FROM audit WHERE 1=1", {}
        if table_name is not None:
            sql += " AND table_name = :t"
            args["t"] = table_name
        if row_key is not None:
            sql += " AND row_key = :k"
            args["k"] = row_key
        return [_audit(r) for r in self._q(sql + " ORDER BY id", args)]

    # -------------------------------------------------------------- internals

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE); inside one (batch), a SAVEPOINT, so a refused
        change rolls back alone and the batch commits at its end. Database errors surface as the driver's own
        exception (sqlite3.Error, psycopg.Error), constraint refusals as RegistryError."""
        if self._cur is not None:
            with self._cur.begin_nested():
                yield self._cur
            return
        try:
            with self.engine.connect() as c:
                c.execution_options(write=True)
                self._cur = c
                try:
                    with c.begin():
                        yield c
                finally:
                    self._cur = None
        except sa.exc.IntegrityError as err:
            raise RegistryError(f"the registry refused the change, nothing was written: {err.orig}") from None
        except sa.exc.DBAPIError as err:
            raise self._driver_error(err) from err

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        if self._cur is not None:
            yield self._cur
            return
        try:
            with self.engine.connect() as c:
                yield c
        except sa.exc.DBAPIError as err:
            raise self._driver_error(err) from err

    def _driver_error(self, err: sa.exc.DBAPIError) -> BaseException:
        """SQLite: the sqlite3 error itself (the recorder tells a full disk from a refusal by it). A server: a
        RegistryError naming the registry and what it said (a missing privilege, a lost connection)."""
        if self.dialect == "sqlite":
            return err.orig
        first = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__
        hint = (" (the role in the registry URL lacks this privilege: README, \"Connection settings\")"
                if "permission denied" in first else "")
        return RegistryError(f"registry {self.where}: {first}{hint}; nothing was written")

    def _q(self, sql: str, params: dict | None = None) -> list:
        with self._reading() as c:
            return list(c.execute(sa.text(sql), params or {}).mappings())

    def _one(self, sql: str, params: dict | None = None):
        rows = self._q(sql, params)
        return rows[0] if rows else None

    def _exec(self, sql: str, params: dict | None = None) -> sa.CursorResult:
        assert self._cur is not None, "a change outside a transaction"
        return self._cur.execute(sa.text(sql), params or {})

    def _insert_returning_id(self, sql: str, params: dict) -> int:
        return int(self._exec(sql, params).scalar_one())

    def _row(self, session_id: str, lock: bool = False):
        """The session's row; with `lock`, writers of one session queue until the transaction ends. PostgreSQL:
        a transaction-scoped advisory lock on the session id (unlike FOR UPDATE it needs no UPDATE privilege, so
        a clinic role that may only insert outcomes can take it); SQLite's BEGIN IMMEDIATE already holds the
        whole database. The unique index on first entries backs it up."""
        if lock and self.dialect == "postgresql" and self._cur is not None:
            self._exec("SELECT pg_advisory_xact_lock(hashtext('amrwatch.session:' || :s))", {"s": session_id})
        return self._one("SELECT * FROM sessions WHERE session_id = :s", {"s": session_id})

    def _get(self, session_id: str) -> SessionRow:
        return _session_from_row(self._row(session_id))

    def _mutable_checked(self, changes: dict) -> dict:
        out = dict(changes)
        if "scenario" in out:
            _check(_NAME, out["scenario"], "scenario", "a scenario name (A-Z a-z 0-9 _ . : -, up to 64)")
        for name in ("montage", "settings"):
            if name in out:
                out[name] = _json(out[name], name)
        if "model_sha256" in out:
            _check(_SHA256, out["model_sha256"], "model_sha256", "64 lowercase hex digits (the ONNX file's SHA-256)")
        if "model_synthetic" in out:
            v = out["model_synthetic"]
            if v is not None and not isinstance(v, bool):
                raise RegistryError(f"model_synthetic must be true, false or null; got {v!r}")
            out["model_synthetic"] = None if v is None else int(v)
        if "patient_token" in out:
            _check(PATIENT_TOKEN, out["patient_token"], "patient_token",
                   "a token from new_patient_token() ('pt_' + 24 hex digits) — never a hospital number")
        return out

    def _change(self, session_id: str, actor: str, action: str, fields: dict,
                allowed_from: tuple[str, ...] | None = None) -> SessionRow:
        with self._tx():
            before_row = self._row(session_id)
            if before_row is None:
                raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
            before = _session_from_row(before_row)
            if allowed_from is not None and before.status not in allowed_from:
                raise RegistryError(f"session {session_id!r} is {before.status}; {action} needs status "
                                    f"{' or '.join(allowed_from)}")
            sets = ", ".join(f"{k} = :{k}" for k in fields)
            self._exec(f"UPDATE sessions SET {sets} WHERE session_id = :session_id", {**fields, "session_id": session_id})
            after = self._get(session_id)
            old = {k: getattr(before, k) for k in fields}
            new = {k: getattr(after, k) for k in fields}
            self._audit(actor, action, "sessions", session_id, old, new)
        return after

    def _audit(self, actor: str, action: str, table: str, key: str, old: dict | None, new: dict | None,
               history_key: str | None = None) -> None:
        """`supersedes` points at the newest earlier audit row of the same row (or of the row corrected)."""
        prev = self._exec("SELECT max(id) FROM audit WHERE table_name = :t AND row_key = :k",
                          {"t": table, "k": history_key or key}).scalar()
        self._exec(
            "INSERT INTO audit (at, actor, action, table_name, row_key, old, new, supersedes) "
            "VALUES (:at, :actor, :action, :t, :k, :old, :new, :sup)",
            {"at": utc_now_iso(), "actor": actor, "action": action, "t": table, "k": key,
             "old": None if old is None else json.dumps(old, sort_keys=True),
             "new": None if new is None else json.dumps(new, sort_keys=True), "sup": prev})


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    Inside an open transaction (Registry.batch) it is a SAVEPOINT instead, so a
    refused change rolls back alone and the batch commits, with one fsync, at its end.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.nested = False

    def __enter__(self):
        self.nested = self.conn.in_transaction
        self.conn.execute("SAVEPOINT registry_change" if self.nested else "BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.nested:
            if exc_type is not None:
                self.conn.execute("ROLLBACK TO registry_change")
            self.conn.execute("RELEASE registry_change")
        elif exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def _split_sql(script: str) -> list[str]:
    """Statements of the schema script (triggers hold ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            out.append(text)
            buf = []
    return out


def _complications(value: Any) -> dict:
    """{name: true} for names from COMPLICATIONS; a list of names is accepted too."""
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        value = {name: True for name in value}
    if not isinstance(value, dict):
        raise RegistryError(f"complications must be a list of names from {list(COMPLICATIONS)}; got {value!r}")
    unknown = [k for k in value if k not in COMPLICATIONS]
    if unknown:
        raise RegistryError(f"complications must be among {list(COMPLICATIONS)}; got {unknown}")
    bad = [k for k, v in value.items() if v is not True]
    if bad:
        raise RegistryError(f"complications are recorded as present (true); got {{{', '.join(f'{k!r}: {value[k]!r}' for k in bad)}}}")
    return dict(sorted(value.items()))


def _summary(r) -> SummaryRow:
    d = dict(r)
    d["summary"] = json.loads(d["summary"])
    return SummaryRow(**d)


def _outcome(r) -> OutcomeRow:
    d = dict(r)
    d["complications"] = json.loads(d["complications"])
    return OutcomeRow(**d)


def _audit(r) -> AuditRow:
    d = dict(r)
    d["old"] = None if d["old"] is None else json.loads(d["old"])
    d["new"] = None if d["new"] is None else json.loads(d["new"])
    return AuditRow(**d)
