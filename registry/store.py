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
from typing import Any

SCHEMA_VERSION = 2
REGISTRY_FILE = "registry.sqlite"

STATUSES = ("recording", "closed", "corrupt")
TIMEPOINTS = ("1w", "3m", "6m", "1y")
OUTCOME_CLASSES = ("cured", "improved", "unchanged", "worse")
#: Complications an outcome may record (docs/domain.md); stored as {name: true}.
COMPLICATIONS = ("facial_palsy_immediate", "facial_palsy_delayed", "hearing_loss", "csf_leak")

_SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: "pt_" and 24 hex digits: 96 random bits, and a shape no hospital number has.
PATIENT_TOKEN = re.compile(r"^pt_[0-9a-f]{24}$")

_SCHEMA = """
CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 64),
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    source          TEXT NOT NULL,
    scenario        TEXT,
    replay_of       TEXT REFERENCES sessions(session_id),
    montage         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(montage)),
    settings        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    model_sha256    TEXT,
    model_synthetic INTEGER CHECK (model_synthetic IN (0, 1)),
    patient_token   TEXT CHECK (patient_token IS NULL OR patient_token GLOB 'pt_[0-9a-f]*'),
    status          TEXT NOT NULL CHECK (status IN ('recording', 'closed', 'corrupt')),
    status_reason   TEXT
);
CREATE INDEX sessions_started ON sessions(started_at);
CREATE INDEX sessions_patient ON sessions(patient_token);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 64),
    action      TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    row_key     TEXT NOT NULL,
    old         TEXT CHECK (old IS NULL OR json_valid(old)),
    new         TEXT CHECK (new IS NULL OR json_valid(new)),
    supersedes  INTEGER REFERENCES audit(id)
);
CREATE INDEX audit_row ON audit(table_name, row_key);

CREATE TABLE outcomes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT NOT NULL REFERENCES sessions(session_id),
    timepoint       TEXT NOT NULL CHECK (timepoint IN ('1w', '3m', '6m', '1y')),
    cohen_grade     INTEGER NOT NULL CHECK (cohen_grade BETWEEN 0 AND 4),
    outcome_class   TEXT CHECK (outcome_class IS NULL OR outcome_class IN ('cured', 'improved', 'unchanged', 'worse')),
    relief_date     TEXT,
    complications   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(complications)),
    recorded_at     TEXT NOT NULL,
    actor           TEXT NOT NULL,
    supersedes      INTEGER UNIQUE REFERENCES outcomes(id)
);
CREATE INDEX outcomes_session ON outcomes(session_id, timepoint);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: add a new row instead of changing one'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: they are never deleted'); END;
CREATE TRIGGER outcomes_no_update BEFORE UPDATE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome rows are append-only: a correction is a new row that supersedes the old one'); END;
CREATE TRIGGER outcomes_no_delete BEFORE DELETE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome rows are append-only: a correction is a new row that supersedes the old one'); END;
CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
BEGIN SELECT RAISE(ABORT, 'sessions are never deleted: mark them corrupt instead'); END;
CREATE TRIGGER sessions_fixed_identity BEFORE UPDATE OF session_id, started_at, source, replay_of ON sessions
WHEN NEW.session_id IS NOT OLD.session_id OR NEW.started_at IS NOT OLD.started_at
  OR NEW.source IS NOT OLD.source OR NEW.replay_of IS NOT OLD.replay_of
BEGIN SELECT RAISE(ABORT, 'a session''s id, start time, source and replay_of never change'); END;
"""

#: Schema changes by the version they lead to; a registry is upgraded in place, in one transaction.
_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE session_summaries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL REFERENCES sessions(session_id),
    summary     TEXT NOT NULL CHECK (json_valid(summary)),
    recorded_at TEXT NOT NULL,
    actor       TEXT NOT NULL,
    supersedes  INTEGER UNIQUE REFERENCES session_summaries(id)
);
CREATE INDEX summaries_session ON session_summaries(session_id);

CREATE TRIGGER summaries_no_update BEFORE UPDATE ON session_summaries
BEGIN SELECT RAISE(ABORT, 'summary rows are append-only: a correction is a new row that supersedes the old one'); END;
CREATE TRIGGER summaries_no_delete BEFORE DELETE ON session_summaries
BEGIN SELECT RAISE(ABORT, 'summary rows are append-only: a correction is a new row that supersedes the old one'); END;
""",
}


class RegistryError(ValueError):
    """A registry call that cannot be done as asked; the text says why and what to do."""


class UnknownSession(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def new_patient_token() -> str:
    """A fresh pseudonym: 96 bits from the OS's CSPRNG, derived from nothing."""
    return "pt_" + secrets.token_hex(12)


def utc_now_iso() -> str:
    return _iso(dt.datetime.now(dt.timezone.utc))


def _iso(t: dt.datetime | str, field: str = "time") -> str:
    if isinstance(t, str):
        try:
            t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise RegistryError(f"{field} must be an ISO 8601 time with a UTC offset; got {t!r}") from None
    if not isinstance(t, dt.datetime) or t.tzinfo is None:
        raise RegistryError(f"{field} must be a timezone-aware time; got {t!r}")
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


@dataclass(frozen=True)
class SummaryRow:
    id: int
    session_id: str
    summary: dict
    recorded_at: str
    actor: str
    supersedes: int | None


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


_SESSION_COLS = ("session_id", "started_at", "ended_at", "source", "scenario", "replay_of", "montage", "settings",
                 "model_sha256", "model_synthetic", "patient_token", "status", "status_reason")
#: Fields `update_session` may change (status goes through close_session / mark_corrupt).
MUTABLE_FIELDS = ("scenario", "montage", "settings", "model_sha256", "model_synthetic", "patient_token")


def _session_from_row(r: sqlite3.Row) -> SessionRow:
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


class Registry:
    """The registry at DATA_DIR/registry.sqlite. One connection; not shared between threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn = connect_durable(self.path)
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path} has registry schema version {version}; this amrwatch reads "
                                f"version {SCHEMA_VERSION}. Upgrade amrwatch")
        if version < SCHEMA_VERSION:
            with self._tx():
                if version == 0:
                    for stmt in _split_sql(_SCHEMA):
                        self.conn.execute(stmt)
                    version = 1
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for stmt in _split_sql(_MIGRATIONS[target]):
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def batch(self) -> Transaction:
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
    ) -> SessionRow:
        actor = check_actor(actor)
        _check(_SESSION_ID, session_id, "session_id", "1-64 characters of A-Z a-z 0-9 _ -", optional=False)
        if not isinstance(source, str) or not (1 <= len(source) <= 256):
            raise RegistryError(f"source must be 1-256 characters (e.g. 'sim', 'edf:PATH'); got {source!r}")
        _check(_NAME, scenario, "scenario", "a scenario name (A-Z a-z 0-9 _ . : -, up to 64)")
        _check(_SESSION_ID, replay_of, "replay_of", "the id of an archived session")
        fields = self._mutable_checked({"scenario": scenario, "montage": montage or {}, "settings": settings or {},
                                        "model_sha256": model_sha256, "model_synthetic": model_synthetic,
                                        "patient_token": patient_token})
        row = {"session_id": session_id, "started_at": _iso(started_at, "started_at"), "ended_at": None,
               "source": source, "replay_of": replay_of, "status": "recording", "status_reason": None, **fields}
        with self._tx():
            if self._row(session_id) is not None:
                raise RegistryError(f"session_id {session_id!r} is already registered; session ids are unique")
            if replay_of is not None and self._row(replay_of) is None:
                raise UnknownSession(f"replay_of: no session {replay_of!r} in the registry")
            self.conn.execute(f"INSERT INTO sessions ({', '.join(_SESSION_COLS)}) VALUES "
                              f"({', '.join('?' for _ in _SESSION_COLS)})", [row[c] for c in _SESSION_COLS])
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
        return self._change(session_id, actor, "close", {"status": "closed", "ended_at": ended},
                            allowed_from=("recording",))

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
        args: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY started_at, rowid"
        return [_session_from_row(r) for r in self.conn.execute(sql, args)]

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
            session = self._row(session_id)
            if session is None:
                raise UnknownSession(f"no session {session_id!r} in the registry; `amrwatch sessions` lists them")
            surgery = session["started_at"][:10]
            if relief is not None and relief < surgery:
                raise RegistryError(f"relief_date {relief} is before the operation (session {session_id} started on "
                                    f"{surgery}); the spasm cannot stop before surgery — check the date")
            old = None
            if supersedes is not None:
                prev = self.conn.execute("SELECT * FROM outcomes WHERE id = ?", (supersedes,)).fetchone()
                if prev is None or prev["session_id"] != session_id:
                    raise RegistryError(f"supersedes must be the id of an outcome of session {session_id!r}; "
                                        f"got {supersedes!r}")
                if self.conn.execute("SELECT 1 FROM outcomes WHERE supersedes = ?", (supersedes,)).fetchone():
                    raise RegistryError(f"outcome {supersedes} was already corrected; correct the newest row instead")
                old = _outcome(prev)
                if prev["timepoint"] != timepoint:
                    raise RegistryError(f"outcome {supersedes} is the {prev['timepoint']} follow-up; a correction keeps "
                                        f"the timepoint (got {timepoint!r}); add the {timepoint} outcome instead")
            else:
                current = self.conn.execute(
                    "SELECT id FROM outcomes o WHERE session_id = ? AND timepoint = ? AND NOT EXISTS "
                    "(SELECT 1 FROM outcomes n WHERE n.supersedes = o.id)", (session_id, timepoint)).fetchone()
                if current is not None:
                    raise RegistryError(f"session {session_id} already has a {timepoint} outcome (id {current['id']}); "
                                        "correct it (`amrwatch outcome edit`) instead of adding a second one")
            cur = self.conn.execute(
                "INSERT INTO outcomes (session_id, timepoint, cohen_grade, outcome_class, relief_date, complications,"
                " recorded_at, actor, supersedes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, timepoint, cohen_grade, outcome_class, relief, comp, utc_now_iso(), actor, supersedes))
            row = _outcome(self.conn.execute("SELECT * FROM outcomes WHERE id = ?", (cur.lastrowid,)).fetchone())
            self._audit(actor, "correct" if supersedes is not None else "create", "outcomes", str(row.id),
                        asdict(old) if old else None, asdict(row),
                        history_key=str(supersedes) if supersedes is not None else None)
        return row

    def outcomes(self, session_id: str, *, include_superseded: bool = False) -> list[OutcomeRow]:
        sql = "SELECT * FROM outcomes o WHERE session_id = ?"
        if not include_superseded:
            sql += " AND NOT EXISTS (SELECT 1 FROM outcomes n WHERE n.supersedes = o.id)"
        return [_outcome(r) for r in self.conn.execute(sql + " ORDER BY id", (session_id,))]

    def current_outcomes(self) -> dict[str, list[OutcomeRow]]:
        """Every session's current (not superseded) outcomes, in one query, for cohort tables."""
        out: dict[str, list[OutcomeRow]] = {}
        for r in self.conn.execute("SELECT * FROM outcomes o WHERE NOT EXISTS "
                                   "(SELECT 1 FROM outcomes n WHERE n.supersedes = o.id) ORDER BY id"):
            row = _outcome(r)
            out.setdefault(row.session_id, []).append(row)
        return out

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
            cur = self.conn.execute(
                "INSERT INTO session_summaries (session_id, summary, recorded_at, actor, supersedes) "
                "VALUES (?, ?, ?, ?, ?)", (session_id, text, utc_now_iso(), actor, prev.id if prev else None))
            row = _summary(self.conn.execute("SELECT * FROM session_summaries WHERE id = ?",
                                             (cur.lastrowid,)).fetchone())
            self._audit(actor, "correct" if prev else "create", "session_summaries", session_id,
                        prev.summary if prev else None, row.summary)
        return row

    def summary(self, session_id: str) -> SummaryRow | None:
        """The session's current summary, or None if none was stored."""
        return self._current_summary(session_id)

    def summary_history(self, session_id: str) -> list[SummaryRow]:
        return [_summary(r) for r in self.conn.execute(
            "SELECT * FROM session_summaries WHERE session_id = ? ORDER BY id", (session_id,))]

    def current_summaries(self) -> dict[str, SummaryRow]:
        """Every session's current summary, in one query."""
        return {row.session_id: row for row in map(_summary, self.conn.execute(
            "SELECT * FROM session_summaries s WHERE NOT EXISTS "
            "(SELECT 1 FROM session_summaries n WHERE n.supersedes = s.id) ORDER BY id"))}

    def _current_summary(self, session_id: str) -> SummaryRow | None:
        r = self.conn.execute("SELECT * FROM session_summaries s WHERE session_id = ? AND NOT EXISTS "
                              "(SELECT 1 FROM session_summaries n WHERE n.supersedes = s.id)", (session_id,)).fetchone()
        return None if r is None else _summary(r)

    # ------------------------------------------------------------------ audit

    def audit_trail(self, table_name: str | None = None, row_key: str | None = None) -> list[AuditRow]:
        sql, args = "SELECT * FROM audit WHERE 1=1", []
        if table_name is not None:
            sql += " AND table_name = ?"
            args.append(table_name)
        if row_key is not None:
            sql += " AND row_key = ?"
            args.append(row_key)
        return [_audit(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    # -------------------------------------------------------------- internals

    def _tx(self):
        return Transaction(self.conn)

    def _row(self, session_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()

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
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.conn.execute(f"UPDATE sessions SET {sets} WHERE session_id = ?", [*fields.values(), session_id])
            after = self._get(session_id)
            old = {k: getattr(before, k) for k in fields}
            new = {k: getattr(after, k) for k in fields}
            self._audit(actor, action, "sessions", session_id, old, new)
        return after

    def _audit(self, actor: str, action: str, table: str, key: str, old: dict | None, new: dict | None,
               history_key: str | None = None) -> None:
        """`supersedes` points at the newest earlier audit row of the same row (or of the row corrected)."""
        prev = self.conn.execute("SELECT max(id) FROM audit WHERE table_name = ? AND row_key = ?",
                                 (table, history_key or key)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO audit (at, actor, action, table_name, row_key, old, new, supersedes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (utc_now_iso(), actor, action, table, key,
             None if old is None else json.dumps(old, sort_keys=True),
             None if new is None else json.dumps(new, sort_keys=True), prev))


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


def _summary(r: sqlite3.Row) -> SummaryRow:
    d = dict(r)
    d["summary"] = json.loads(d["summary"])
    return SummaryRow(**d)


def _outcome(r: sqlite3.Row) -> OutcomeRow:
    d = dict(r)
    d["complications"] = json.loads(d["complications"])
    return OutcomeRow(**d)


def _audit(r: sqlite3.Row) -> AuditRow:
    d = dict(r)
    d["old"] = None if d["old"] is None else json.loads(d["old"])
    d["new"] = None if d["new"] is None else json.loads(d["new"])
    return AuditRow(**d)
