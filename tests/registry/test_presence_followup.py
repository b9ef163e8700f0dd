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


def test_a_lost_link_ends_the_interval_when_last_heard_and_the_restore_opens_the_next(reg: Registry):
    """The cart's `link_lost` (the acquirer stopped hearing the reader) closes the open interval at the time
    the reader was last heard, not when the loss was noticed; `link_restored` opens the next one, so the outage
    is the hole between them and is not claimed as supervision."""
    a = reg.reader_watching("OP1", "reader-ana", _at(5), actor="recorder")
    lost = reg.reader_link_lost("OP1", "reader-ana", _at(12), actor="recorder")
    assert lost is not None and (lost.id, lost.from_at, lost.until_at, lost.closed_by) == \
        (a.id, _at(5), _at(12), "link_lost")
    # seen again (a refetched copy): nothing open, nothing changes
    assert reg.reader_link_lost("OP1", "reader-ana", _at(12), actor="recorder") is None
    back = reg.reader_watching("OP1", "reader-ana", _at(14), actor="recorder")
    assert back.id != a.id
    reg.close_session("OP1", actor="recorder", ended_at=_at(40))
    log = [(p.from_at, p.until_at, p.closed_by) for p in reg.presence("OP1")]
    assert log == [(_at(5), _at(12), "link_lost"), (_at(14), _at(40), "session_end")]
    assert [t.action for t in reg.audit_trail("reader_presence", str(a.id))] == ["watching", "link_lost"]


def test_upgrading_to_0005_keeps_the_presence_log_and_its_guards(registry_url: str):
    """0005 rebuilds reader_presence on SQLite (a CHECK cannot be altered there): the rows, their ids, the
    append-only triggers and the id sequence must all survive; on PostgreSQL the constraint is swapped."""
    from alembic import command
    from amrwatch.registry.migrate import _config, upgrade

    eng = engine_for(registry_url)
    try:
        with eng.connect() as c, c.begin():
            command.upgrade(_config(c), "0004_presence_followup")
        with eng.begin() as c:
            c.exec_driver_sql(f"INSERT INTO sessions (session_id, started_at, source, status) "
                              f"VALUES ('OP1', '{T0}', 'sim', 'recording')")
            for i in range(1, 4):
                c.exec_driver_sql(f"INSERT INTO reader_presence (session_id, reader, from_at, until_at, closed_by) "
                                  f"VALUES ('OP1', 'reader-{i}', '{_at(i)}', '{_at(i + 5)}', 'reader')")
            with pytest.raises(sa.exc.DBAPIError, match="presence_closed_by|CHECK constraint"):
                with c.begin_nested():
                    c.exec_driver_sql(f"INSERT INTO reader_presence (session_id, reader, from_at, until_at, "
                                      f"closed_by) VALUES ('OP1', 'x', '{_at(1)}', '{_at(2)}', 'link_lost')")
        with eng.connect() as c:
            assert upgrade(c) == ("0004_presence_followup", "0005_presence_link_lost")
    finally:
        eng.dispose()
    with Registry(registry_url) as r:
        assert [(p.id, p.reader, p.closed_by) for p in r.presence("OP1")] == \
            [(1, "reader-1", "reader"), (2, "reader-2", "reader"), (3, "reader-3", "reader")]
        new = r.reader_watching("OP1", "reader-4", _at(30), actor="recorder")
        assert new.id > 3  # the id sequence continues (PostgreSQL may have spent one on the refused insert)
        assert r.reader_link_lost("OP1", "reader-4", _at(31), actor="recorder").closed_by == "link_lost"
    eng = engine_for(registry_url)
    try:
        for stmt in ("UPDATE reader_presence SET until_at = NULL WHERE id = 2",
                     "DELETE FROM reader_presence WHERE id = 1"):
            with pytest.raises(sa.exc.DBAPIError, match="presence rows"):
                with eng.begin() as c:
                    c.exec_driver_sql(stmt)
    finally:
        eng.dispose()
