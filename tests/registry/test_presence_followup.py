"""The presence log (issue #19) and follow-up recording links (issue #17) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from amrwatch.registry.store import Registry, RegistryError, UnknownSession, engine_for

T0 = "2026-03-02T08:00:00.000000Z"


def _at(minute: int) -> str:
    return f"2026-03-02T08:{minute:02d}:00.000000Z"


@pytest.fixture
def reg(migrated_url: str):
    with Registry(migrated_url) as r:
        r.create_session("OP1", actor="recorder", started_at=T0, source="sim")
        yield r


def test_presence_intervals_open_close_and_end_with_the_session(reg: Registry):
    a = reg.reader_watching("OP1", "reader-ana", _at(5), actor="recorder")
    assert (a.from_at, a.until_at, a.closed_by) == (_at(5), None, None)
    # a second 'watching' while watching keeps the interval
    assert reg.reader_watching("OP1", "reader-ana", _at(6), actor="recorder").id == a.id
    b = reg.reader_watching("OP1", "reader-bo", _at(7), actor="recorder")
    left = reg.reader_left("OP1", "reader-ana", _at(20), actor="recorder")
    assert (left.id, left.from_at, left.until_at, left.closed_by) == (a.id, _at(5), _at(20), "reader")
    again = reg.reader_watching("OP1", "reader-ana", _at(30), actor="recorder")
    assert again.id not in (a.id, b.id)
    reg.close_session("OP1", actor="recorder", ended_at=_at(45))
    log = {(p.reader, p.from_at): (p.until_at, p.closed_by) for p in reg.presence("OP1")}
    assert log == {("reader-ana", _at(5)): (_at(20), "reader"),
                   ("reader-bo", _at(7)): (_at(45), "session_end"),
                   ("reader-ana", _at(30)): (_at(45), "session_end")}
    trail = [(t.action, t.row_key) for t in reg.audit_trail("reader_presence")]
    assert ("session_end", str(b.id)) in trail and ("left", str(a.id)) in trail
    assert [t.action for t in reg.audit_trail("reader_presence", str(a.id))] == ["watching", "left"]


def test_a_left_before_its_watching_keeps_an_unknown_start_until_the_watching_arrives(reg: Registry):
    early = reg.reader_left("OP1", "reader-ana", _at(20), actor="recorder")
    assert (early.from_at, early.until_at, early.closed_by) == (None, _at(20), "reader")
    filled = reg.reader_watching("OP1", "reader-ana", _at(5), actor="recorder")
    assert (filled.id, filled.from_at, filled.until_at) == (early.id, _at(5), _at(20))
    # the same `left` again (refetched after a recorder restart) adds nothing
    assert reg.reader_left("OP1", "reader-ana", _at(20), actor="recorder").id == early.id
    assert len(reg.presence("OP1")) == 1
    # a later watching opens a new interval, not rewriting the closed one
    assert reg.reader_watching("OP1", "reader-ana", _at(25), actor="recorder").id != early.id


def test_presence_refuses_bad_input_and_unknown_sessions(reg: Registry):
    with pytest.raises(RegistryError, match="reader must be a reader name.*got 'a b'"):
        reg.reader_watching("OP1", "a b", _at(5), actor="recorder")
    with pytest.raises(RegistryError, match="at must be an ISO 8601 time.*'yesterday'"):
        reg.reader_left("OP1", "reader-ana", "yesterday", actor="recorder")
    with pytest.raises(UnknownSession, match="no session 'NOPE'"):
        reg.reader_watching("NOPE", "reader-ana", _at(5), actor="recorder")
    assert reg.presence("OP1") == []


def test_a_closed_interval_cannot_be_changed_or_deleted_by_any_client(reg: Registry, migrated_url: str):
    p = reg.reader_watching("OP1", "reader-ana", _at(5), actor="recorder")
    reg.reader_left("OP1", "reader-ana", _at(9), actor="recorder")
    eng = engine_for(migrated_url)
    try:
        for stmt in (f"UPDATE reader_presence SET until_at = '{_at(50)}' WHERE id = {p.id}",
                     f"UPDATE reader_presence SET reader = 'someone' WHERE id = {p.id}",
                     f"DELETE FROM reader_presence WHERE id = {p.id}"):
            with pytest.raises(sa.exc.DBAPIError, match="presence rows"):
                with eng.begin() as c:
                    c.exec_driver_sql(stmt)
    finally:
        eng.dispose()
    assert reg.presence("OP1")[0].until_at == _at(9)


def test_follow_up_recording_links(reg: Registry, migrated_url: str):
    reg.create_session("REC1M", actor="recorder", started_at="2026-04-02T09:00:00Z", source="edf:/x.edf")
    reg.create_session("BEFORE", actor="recorder", started_at="2026-03-01T09:00:00Z", source="sim")
    reg.create_session("REC3M", actor="recorder", started_at="2026-06-02T09:00:00Z", source="sim")
    link = reg.link_recording("OP1", "REC1M", timepoint="1m", actor="dr_x")
    assert (link.operation_session_id, link.recording_session_id, link.timepoint, link.actor) == \
        ("OP1", "REC1M", "1m", "dr_x")
    assert [a.action for a in reg.audit_trail("followup_recordings", str(link.id))] == ["link"]
    with pytest.raises(RegistryError, match=r"timepoint must be one of \['1w', '1m', '3m', '6m', '1y'\]; got '2m'"):
        reg.link_recording("OP1", "REC3M", timepoint="2m", actor="dr_x")
    with pytest.raises(RegistryError, match="already linked: recording REC1M is the 1m follow-up"):
        reg.link_recording("OP1", "REC3M", timepoint="1m", actor="dr_x")
    with pytest.raises(RegistryError, match="already linked"):
        reg.link_recording("OP1", "REC1M", timepoint="3m", actor="dr_x")
    with pytest.raises(RegistryError, match="not after the operation"):
        reg.link_recording("OP1", "BEFORE", timepoint="3m", actor="dr_x")
    with pytest.raises(RegistryError, match="is the operation itself"):
        reg.link_recording("OP1", "OP1", timepoint="3m", actor="dr_x")
    with pytest.raises(UnknownSession, match="recording: no session 'NOPE'"):
        reg.link_recording("OP1", "NOPE", timepoint="3m", actor="dr_x")
    reg.link_recording("OP1", "REC3M", timepoint="3m", actor="dr_x")
    assert [(f.timepoint, f.recording_session_id) for f in reg.followup_recordings("OP1")] == \
        [("1m", "REC1M"), ("3m", "REC3M")]
    eng = engine_for(migrated_url)
    try:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with eng.begin() as c:
                c.exec_driver_sql("DELETE FROM followup_recordings")
    finally:
        eng.dispose()
