"""The only place a patient token meets a hospital record number.

It is a separate SQLite file that must live outside the data directory, so
the archive and registry can be copied, shared for research or replayed
without ever carrying an identifier. Tokens are random (registry.
new_patient_token), never derived from the number: without this file there
is no way back.
"""

from __future__ import annotations

import os
from pathlib import Path

from amrwatch.registry.store import (
    PATIENT_TOKEN,
    RegistryError,
    Transaction,
    check_actor,
    connect_durable,
    new_patient_token,
    utc_now_iso,
)

IDENTITIES_FILE = "amrwatch-identities.sqlite"
MAX_HOSPITAL_NUMBER = 64

_SCHEMA = (
    """CREATE TABLE identities (
        token           TEXT PRIMARY KEY,
        hospital_number TEXT NOT NULL UNIQUE,
        created_at      TEXT NOT NULL,
        created_by      TEXT NOT NULL
    )""",
    # Who linked or looked up which token; the number itself is not repeated here.
    """CREATE TABLE access_log (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL CHECK (action IN ('link', 'lookup_token', 'lookup_number')),
        token   TEXT
    )""",
    """CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
       BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END""",
    """CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
       BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END""",
    """CREATE TRIGGER identities_no_update BEFORE UPDATE ON identities
       BEGIN SELECT RAISE(ABORT, 'a token keeps its hospital number; link a new token instead'); END""",
)


def default_identities_path(data_dir: Path) -> Path:
    """Next to the data directory, never inside it: DATA_DIR/../amrwatch-identities.sqlite."""
    return Path(data_dir).resolve().parent / IDENTITIES_FILE


def _inside(path: Path, directory: Path) -> bool:
    p, d = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return p == d or d in p.parents


def _number(hospital_number: object) -> str:
    if not isinstance(hospital_number, str):
        raise RegistryError(f"hospital_number must be text; got {type(hospital_number).__name__}")
    value = hospital_number.strip()
    if not (1 <= len(value) <= MAX_HOSPITAL_NUMBER) or not value.isprintable():
        raise RegistryError(f"hospital_number must be 1-{MAX_HOSPITAL_NUMBER} printable characters; "
                            f"got {len(value)} characters")
    return value


class PseudonymMap:
    """token <-> hospital record number, in its own file outside the data directory."""

    def __init__(self, path: Path, *, data_dir: Path | None = None):
        self.path = Path(path)
        if data_dir is not None and _inside(self.path, data_dir):
            raise RegistryError(f"pseudonym map path {str(self.path)!r} is inside the data directory "
                                f"{str(data_dir)!r}; it must live outside it (default: "
                                f"{default_identities_path(data_dir)})")
        self.conn = connect_durable(self.path)  # 0600 in 0700 directories
        if self.conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            with Transaction(self.conn):
                for stmt in _SCHEMA:
                    self.conn.execute(stmt)
                self.conn.execute("PRAGMA user_version=1")

    @classmethod
    def beside(cls, data_dir: Path) -> PseudonymMap:
        return cls(default_identities_path(data_dir), data_dir=data_dir)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PseudonymMap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def token_for(self, hospital_number: str, *, actor: str) -> str:
        """The patient's token, created (random) the first time the number is seen."""
        actor = check_actor(actor)
        number = _number(hospital_number)
        with Transaction(self.conn):
            row = self.conn.execute("SELECT token FROM identities WHERE hospital_number = ?", (number,)).fetchone()
            if row is not None:
                self._log(actor, "lookup_number", row["token"])
                return row["token"]
            token = new_patient_token()
            self.conn.execute("INSERT INTO identities (token, hospital_number, created_at, created_by) "
                              "VALUES (?, ?, ?, ?)", (token, number, utc_now_iso(), actor))
            self._log(actor, "link", token)
        return token

    def hospital_number(self, token: str, *, actor: str) -> str:
        """Re-identification, for follow-up; every call is logged with who asked."""
        actor = check_actor(actor)
        if not isinstance(token, str) or not PATIENT_TOKEN.match(token):
            raise RegistryError(f"token must be 'pt_' + 24 hex digits; got {token!r}")
        with Transaction(self.conn):
            row = self.conn.execute("SELECT hospital_number FROM identities WHERE token = ?", (token,)).fetchone()
            if row is None:
                raise RegistryError(f"token {token} is not in {self.path}")
            self._log(actor, "lookup_token", token)
        return row["hospital_number"]

    def _log(self, actor: str, action: str, token: str | None) -> None:
        self.conn.execute("INSERT INTO access_log (at, actor, action, token) VALUES (?, ?, ?, ?)",
                          (utc_now_iso(), actor, action, token))
