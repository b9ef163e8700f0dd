"""Session registry: durability settings in effect, audited changes, append-only history,
and pseudonyms that never reach the data directory."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.registry.pseudonyms import PseudonymMap, default_identities_path
from amrwatch.registry.store import (
    PATIENT_TOKEN,
    Registry,
    RegistryError,
    UnknownSession,
    new_patient_token,
)

from ..archive.sessions import emg_frames

T = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def reg(tmp_path: Path):
    r = Registry.in_data_dir(tmp_path / "data")
    yield r
    r.close()


def _new(reg: Registry, sid: str, minutes: int = 0, **kw):
    return reg.create_session(sid, actor="recorder", started_at=T + dt.timedelta(minutes=minutes), source="sim",
                              scenario="persists-unexpected", **kw)


def test_wal_full_sync_and_foreign_keys_are_in_effect(reg: Registry, tmp_path: Path):
    _new(reg, "S1")
    assert reg.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert reg.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    other = sqlite3.connect(tmp_path / "data" / "registry.sqlite")
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file itself
    other.close()
    assert (tmp_path / "data" / "registry.sqlite-wal").exists()
    with pytest.raises(UnknownSession, match="replay_of: no session 'NOPE'"):
        _new(reg, "S2", replay_of="NOPE")


def test_sessions_listed_newest_last_and_survive_reopening(tmp_path: Path):
    path = tmp_path / "data" / "registry.sqlite"
    reg = Registry(path)
    _new(reg, "LATER", minutes=10)
    _new(reg, "EARLY", minutes=0, montage={"channels": ["MENT"]}, settings={"speed": 2.0})
    _new(reg, "REPLAY", minutes=20, replay_of="EARLY")
    reg.close()
    reg = Registry(path)
    rows = reg.list()
    assert [r.session_id for r in rows] == ["EARLY", "LATER", "REPLAY"]
    assert rows[0].montage == {"channels": ["MENT"]} and rows[0].settings == {"speed": 2.0}
    assert rows[2].replay_of == "EARLY" and rows[2].status == "recording"
    reg.close()


def test_every_change_is_audited_with_who_what_when(reg: Registry):
    _new(reg, "S1")
    reg.update_session("S1", actor="predictor", model_sha256="b" * 64, model_synthetic=True)
    reg.close_session("S1", actor="recorder", ended_at=T + dt.timedelta(hours=2))
    reg.mark_corrupt("S1", "seg-000001.amrlog record 17: crc", actor="verify")
    trail = reg.audit_trail("sessions", "S1")
    assert [(a.actor, a.action) for a in trail] == [("recorder", "create"), ("predictor", "update"),
                                                    ("recorder", "close"), ("verify", "mark_corrupt")]
    assert trail[1].old == {"model_sha256": None, "model_synthetic": None}
    assert trail[1].new == {"model_sha256": "b" * 64, "model_synthetic": True}
    assert trail[2].new == {"status": "closed", "ended_at": "2026-11-24T10:00:00.000000Z"}
    assert trail[3].old["status"] == "closed" and trail[3].new["status"] == "corrupt"
    assert [a.supersedes for a in trail] == [None, trail[0].id, trail[1].id, trail[2].id]
    assert all(dt.datetime.fromisoformat(a.at.replace("Z", "+00:00")) for a in trail)
    row = reg.get("S1")
    assert (row.status, row.status_reason) == ("corrupt", "seg-000001.amrlog record 17: crc")


def test_audit_rows_cannot_be_changed_or_deleted(reg: Registry):
    _new(reg, "S1")
    for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit",
                "DELETE FROM sessions", "UPDATE sessions SET started_at = '2020-01-01T00:00:00Z'"):
        with pytest.raises(sqlite3.IntegrityError):
            reg.conn.execute(sql)
    assert reg.audit_trail()[0].actor == "recorder"
    assert reg.get("S1").started_at == "2026-11-24T08:00:00.000000Z"


def test_status_transitions_are_checked(reg: Registry):
    _new(reg, "S1")
    reg.mark_corrupt("S1", "recovery refused", actor="recorder")
    with pytest.raises(RegistryError, match="session 'S1' is corrupt; close needs status recording"):
        reg.close_session("S1", actor="recorder")
    with pytest.raises(UnknownSession, match="no session 'S9'"):
        reg.close_session("S9", actor="recorder")
    n = len(reg.audit_trail())
    with pytest.raises(RegistryError):
        reg.mark_corrupt("S1", "again", actor="recorder")
    assert len(reg.audit_trail()) == n  # a refused change leaves no audit row


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"session_id": "../etc"}, "session_id must be 1-64 characters of A-Z a-z 0-9 _ -; got '../etc'"),
        ({"started_at": "yesterday"}, "started_at must be an ISO 8601 time with a UTC offset; got 'yesterday'"),
        ({"started_at": dt.datetime(2026, 1, 1)}, "started_at must be a timezone-aware time"),
        ({"source": ""}, "source must be 1-256 characters"),
        ({"model_sha256": "xyz"}, "model_sha256 must be 64 lowercase hex digits"),
        ({"patient_token": "HN-1234567"}, "patient_token must be a token from new_patient_token()"),
        ({"montage": [1, 2]}, "montage must be a JSON object (dict); got list"),
        ({"actor": ""}, "actor must be 1-64 characters"),
    ],
)
def test_bad_inputs_name_the_field_and_the_value(reg: Registry, kw, needle):
    args = dict(session_id="S1", actor="recorder", started_at=T, source="sim")
    args.update(kw)
    sid = args.pop("session_id")
    with pytest.raises(RegistryError) as err:
        reg.create_session(sid, **args)
    assert needle in str(err.value)
    assert reg.list() == []


def test_outcome_corrections_are_new_rows_pointing_at_the_old(reg: Registry):
    _new(reg, "S1")
    first = reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=2, outcome_class="improved")
    fixed = reg.add_outcome("S1", actor="dr_kim", timepoint="3m", cohen_grade=0, outcome_class="cured",
                            relief_date="2027-01-15", supersedes=first.id)
    assert fixed.supersedes == first.id
    assert reg.outcomes("S1") == [fixed]
    assert reg.outcomes("S1", include_superseded=True) == [first, fixed]
    with pytest.raises(RegistryError, match="already corrected"):
        reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=1, supersedes=first.id)
    with pytest.raises(sqlite3.IntegrityError):
        reg.conn.execute("UPDATE outcomes SET cohen_grade = 4")
    with pytest.raises(RegistryError, match="cohen_grade must be an integer from 0 .no spasm. to 4; got 5"):
        reg.add_outcome("S1", actor="dr_lee", timepoint="1y", cohen_grade=5)
    with pytest.raises(RegistryError, match=r"timepoint must be one of \['1w', '3m', '6m', '1y'\]; got '2y'"):
        reg.add_outcome("S1", actor="dr_lee", timepoint="2y", cohen_grade=0)
    audit = reg.audit_trail("outcomes")
    assert [a.action for a in audit] == ["create", "correct"]
    assert audit[1].supersedes == audit[0].id and audit[1].old["cohen_grade"] == 2


def test_patient_tokens_are_random_not_derived():
    tokens = {new_patient_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(PATIENT_TOKEN.match(t) for t in tokens)


def test_hospital_numbers_never_reach_the_data_directory(tmp_path: Path):
    data = tmp_path / "data"
    hn = "HN-7734-0091-XQ"
    pmap = PseudonymMap.beside(data)
    token = pmap.token_for(hn, actor="clerk")
    assert pmap.token_for(hn, actor="clerk") == token  # the same patient keeps the token
    assert pmap.token_for("HN-0000-0001", actor="clerk") != token
    assert hn not in token and PATIENT_TOKEN.match(token)
    reg = Registry.in_data_dir(data)
    _new(reg, "S1", patient_token=token)
    w = ArchiveWriter(session_path(data, "S1"), meta={"patient_token": token})
    for i in range(3):
        w.append_message(emg_frames(i))
    w.close()
    reg.close_session("S1", actor="recorder")
    reg.close()
    assert pmap.hospital_number(token, actor="follow_up_nurse") == hn
    pmap.close()

    needles = [hn.encode(), hn.encode("utf-16-le"), hn.lower().encode()]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"registry.sqlite", "seg-000000.amrlog", "checkpoint.json"}
    for p in files:
        blob = p.read_bytes()
        assert not any(n in blob for n in needles), p
    assert any(token.encode() in p.read_bytes() for p in files)  # the token is there, so the grep can see
    identity_files = list(tmp_path.glob("amrwatch-identities.sqlite*"))
    assert identity_files and all(not f.is_relative_to(data) for f in identity_files)
    assert any(hn.encode() in f.read_bytes() for f in identity_files)


def test_pseudonym_map_refuses_to_live_in_the_data_directory(tmp_path: Path):
    data = tmp_path / "data"
    with pytest.raises(RegistryError, match="is inside the data directory"):
        PseudonymMap(data / "ids.sqlite", data_dir=data)
    assert default_identities_path(data) == (tmp_path / "amrwatch-identities.sqlite").resolve()


def test_pseudonym_lookups_are_logged_without_the_number(tmp_path: Path):
    pmap = PseudonymMap(tmp_path / "ids.sqlite")
    token = pmap.token_for("12345678", actor="clerk")
    pmap.hospital_number(token, actor="nurse")
    rows = pmap.conn.execute("SELECT actor, action, token FROM access_log ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("clerk", "link", token), ("nurse", "lookup_token", token)]
    with pytest.raises(sqlite3.IntegrityError):
        pmap.conn.execute("DELETE FROM access_log")
    with pytest.raises(RegistryError, match="hospital_number must be 1-64 printable characters"):
        pmap.token_for("   ", actor="clerk")
    pmap.close()
