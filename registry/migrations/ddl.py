"""What the migrations must write per dialect: JSON checks and the append-only triggers.

SQLite has `json_valid` and `RAISE(ABORT, ...)` in triggers; PostgreSQL casts to
jsonb (an invalid document fails the cast) and raises from a PL/pgSQL function.
Both refuse the same statements, with the same message.
"""

from __future__ import annotations

from alembic import op


def dialect() -> str:
    return op.get_bind().dialect.name


def json_check(col: str) -> str:
    if dialect() == "postgresql":
        return f"({col})::jsonb IS NOT NULL"
    return f"json_valid({col})"


def token_check(col: str) -> str:
    if dialect() == "postgresql":
        return f"{col} IS NULL OR {col} ~ '^pt_[0-9a-f]+$'"
    return f"{col} IS NULL OR {col} GLOB 'pt_[0-9a-f]*'"


def _quote(message: str) -> str:
    return message.replace("'", "''")


def refuse(name: str, table: str, event: str, message: str, when: str | None = None) -> None:
    """A trigger `name` refusing `event` (UPDATE, DELETE, or 'UPDATE OF a, b') on `table` with `message`."""
    if dialect() == "postgresql":
        op.execute("""
CREATE OR REPLACE FUNCTION amrwatch_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END $$""")
        cond = f" WHEN ({when})" if when else ""
        op.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW{cond} "
                   f"EXECUTE FUNCTION amrwatch_refuse('{_quote(message)}')")
        if event == "DELETE":  # TRUNCATE skips row triggers; refuse it as a statement
            op.execute(f"CREATE TRIGGER {name}_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION amrwatch_refuse('{_quote(message)}')")
        return
    cond = f"\nWHEN {when}" if when else ""
    op.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table}{cond}\n"
               f"BEGIN SELECT RAISE(ABORT, '{_quote(message)}'); END")


def distinct(a: str, b: str) -> str:
    """`a` differs from `b`, NULLs compared as values."""
    return f"{a} IS DISTINCT FROM {b}" if dialect() == "postgresql" else f"{a} IS NOT {b}"
