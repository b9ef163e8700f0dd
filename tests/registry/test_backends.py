"""The registry on SQLite and on a real PostgreSQL server: one schema, one set of migrations, the same rules."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from amrwatch.registry import migrate
from amrwatch.registry.schema import HEAD, metadata
from amrwatch.registry.store import OutcomeConflict, Registry, RegistryError, engine_for

T0 = "2026-03-02T08:00:00Z"


def _raw(url: str):
    """A connection that is not the Registry's: the statements a careless or hostile client would send."""
    return engine_for(url)


def test_migrate_builds_exactly_the_schema_definition(migrated_url: str):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    eng = _raw(migrated_url)
    with eng.connect() as c:
        assert migrate.current(c) == HEAD
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    eng.dispose()
    # alembic_version is Alembic's own table; anything else is drift between schema.py and the migrations
    assert diff == [], diff


def test_a_server_registry_at_another_revision_is_refused_with_the_command_to_run(registry_url: str, backend):
    if backend == "sqlite":
        # the cart's own file is migrated on open, as before: the recorder starts without an operator
        with Registry(registry_url) as reg:
            reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
        return
    with pytest.raises(RegistryError) as err:
        Registry(registry_url)
    assert "none (empty database)" in str(err.value)
    assert "amrwatch registry migrate --registry 'postgresql://postgres@127.0.0.1" in str(err.value)
    eng = _raw(registry_url)
    with eng.connect() as c:
        before, after = migrate.upgrade(c)
    assert (before, after) == (None, HEAD)
    # back one revision, by hand, as a half-upgraded server would be
    with eng.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0002_summaries'")
    with pytest.raises(RegistryError, match=r"at schema revision 0002_summaries; this amrwatch needs " + HEAD):
        Registry(registry_url)
    with eng.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(RegistryError, match="newer than this amrwatch reads.*upgrade amrwatch"):
        Registry(registry_url)
    eng.dispose()


def test_migrate_twice_changes_nothing(migrated_url: str):
    assert migrate.migrate_url(migrated_url) == (HEAD, HEAD)


@pytest.mark.parametrize("statement", [
    "UPDATE audit SET actor = 'someone_else'",
    "DELETE FROM audit",
    "UPDATE outcomes SET cohen_grade = 4",
    "DELETE FROM outcomes",
    "UPDATE session_summaries SET summary = '{}'",
    "DELETE FROM sessions",
    "UPDATE sessions SET started_at = '2020-01-01T00:00:00.000000Z'",
])
def test_append_only_tables_refuse_changes_on_both_backends(migrated_url: str, statement: str):
    with Registry(migrated_url) as reg:
        reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
        reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=1, outcome_class="improved")
        reg.set_summary("S1", {"course": "persisted"}, actor="recorder")
        trail = [(a.id, a.actor, a.action) for a in reg.audit_trail()]
    eng = _raw(migrated_url)
    with pytest.raises(sa.exc.DBAPIError) as err, eng.begin() as c:
        c.exec_driver_sql(statement)
    assert "append-only" in str(err.value) or "never" in str(err.value)
    if "postgresql" in migrated_url:
        assert isinstance(err.value.orig, psycopg.errors.RestrictViolation)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with eng.begin() as c:
                c.exec_driver_sql("TRUNCATE audit CASCADE")
    eng.dispose()
    with Registry(migrated_url) as reg:
        assert [(a.id, a.actor, a.action) for a in reg.audit_trail()] == trail
        assert [o.cohen_grade for o in reg.outcomes("S1")] == [1]


def test_the_registry_rules_hold_on_both_backends(migrated_url: str):
    with Registry(migrated_url) as reg:
        reg.create_session("S1", actor="recorder", started_at=T0, source="sim", montage={"amr": ["ch1"]})
        with pytest.raises(RegistryError, match="already registered"):
            reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
        reg.close_session("S1", actor="recorder", ended_at="2026-03-02T10:00:00Z")
        first = reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=1, outcome_class="improved")
        with pytest.raises(RegistryError, match="already has a 3m outcome"):
            reg.add_outcome("S1", actor="dr_kim", timepoint="3m", cohen_grade=0, outcome_class="cured")
        fixed = reg.add_outcome("S1", actor="dr_kim", timepoint="3m", cohen_grade=0, outcome_class="cured",
                                supersedes=first.id)
        assert [o.id for o in reg.outcomes("S1")] == [fixed.id]
        assert [o.id for o in reg.outcomes("S1", include_superseded=True)] == [first.id, fixed.id]
        with pytest.raises(RegistryError, match="already corrected"):
            reg.add_outcome("S1", actor="dr_kim", timepoint="3m", cohen_grade=1, outcome_class="improved",
                            supersedes=first.id)
        # a batch: the refused change rolls back alone, the rest commits
        with reg.batch():
            reg.create_session("S2", actor="recorder", started_at=T0, source="sim")
            with pytest.raises(RegistryError):
                reg.add_outcome("S9", actor="dr_kim", timepoint="1w", cohen_grade=0)
        assert [s.session_id for s in reg.list()] == ["S1", "S2"]
        assert reg.get("S1").montage == {"amr": ["ch1"]} and reg.get("S1").status == "closed"
        actions = [(a.table_name, a.action) for a in reg.audit_trail()]
        assert actions == [("sessions", "create"), ("sessions", "close"), ("outcomes", "create"),
                           ("outcomes", "correct"), ("sessions", "create")]


def test_a_first_entry_raced_past_the_check_is_stopped_by_the_constraint(migrated_url: str):
    """The unique index on (session, timepoint) of first entries holds even for a writer that skips the check."""
    with Registry(migrated_url) as reg:
        reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
        reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=1, outcome_class="improved")
    eng = _raw(migrated_url)
    with pytest.raises(sa.exc.IntegrityError):
        with eng.begin() as c:
            c.exec_driver_sql("INSERT INTO outcomes (session_id, timepoint, cohen_grade, recorded_at, actor) "
                              "VALUES ('S1', '3m', 0, '2026-06-01T00:00:00Z', 'x')")
    eng.dispose()
    assert issubclass(OutcomeConflict, RegistryError)


def test_the_documented_least_privilege_roles_work_and_cannot_rewrite_history(pg_server, tmp_path):
    """The README's roles, created for real: a clinic role adds outcomes and cannot touch the audit or a session."""
    import re
    from pathlib import Path

    url = pg_server.new_database()
    migrate.migrate_url(url)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"```sql\n(CREATE ROLE amrwatch_owner.*?)```", readme, re.S).group(1)
    suffix = url.rsplit("/", 1)[1]
    sql = block.replace("amrwatch_", f"amrwatch_{suffix}_").replace("DATABASE amrwatch ", f'DATABASE "{suffix}" ')
    with psycopg.connect(url, autocommit=True) as c:
        no_comments = "\n".join(line.split("--")[0] for line in sql.splitlines())
        for stmt in [s.strip() for s in no_comments.split(";")]:
            if stmt:
                c.execute(stmt)
    with Registry(url) as reg:
        reg.create_session("S1", actor="recorder", started_at=T0, source="sim")
    clinic = url.replace("postgres@", f"amrwatch_{suffix}_clinic@")
    with Registry(clinic) as reg:
        reg.add_outcome("S1", actor="dr_lee", timepoint="3m", cohen_grade=1, outcome_class="improved")
        assert [a.action for a in reg.audit_trail("outcomes")] == ["create"]
        with pytest.raises(RegistryError):
            reg.create_session("S2", actor="dr_lee", started_at=T0, source="sim")
    with psycopg.connect(clinic) as c:
        for stmt in ("UPDATE audit SET actor = 'x'", "UPDATE sessions SET status = 'corrupt'", "DELETE FROM outcomes"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
            c.rollback()
