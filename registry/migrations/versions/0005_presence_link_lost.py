"""A presence interval can be closed by the cart no longer hearing the reader (closed_by 'link_lost').

The acquirer logs a watching reader it has not heard for `--reader-lost-s` as cut off (`reader_note` kind
`link_lost`); the recorder closes the reader's open interval when it was last heard, and a later
`link_restored` opens a new one, so an outage is a hole in the log rather than supervision that did not happen.

SQLite cannot change a CHECK constraint in place: the table is rebuilt (the documented procedure: create the
new table, copy, drop, rename) and its index and append-only triggers are made again, as 0004 made them
(written out here, not imported: a migration must not change when another module does).
"""

import sqlalchemy as sa
from alembic import op
from amrwatch.registry.migrations.ddl import dialect, distinct, refuse

revision = "0005_presence_link_lost"
down_revision = "0004_presence_followup"

CLOSED_BY = "closed_by IS NULL OR closed_by IN ('reader', 'session_end', 'link_lost')"


def upgrade() -> None:
    if dialect() == "postgresql":
        op.drop_constraint("presence_closed_by", "reader_presence", type_="check")
        op.create_check_constraint("presence_closed_by", "reader_presence", CLOSED_BY)
        return
    op.create_table(
        "reader_presence_0005",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("reader", sa.Text, nullable=False),
        sa.Column("from_at", sa.Text),
        sa.Column("until_at", sa.Text),
        sa.Column("closed_by", sa.Text),
        sa.CheckConstraint(CLOSED_BY, name="presence_closed_by"),
        sa.CheckConstraint("(until_at IS NULL) = (closed_by IS NULL)", name="presence_until_closed_by"),
        sa.CheckConstraint("from_at IS NOT NULL OR until_at IS NOT NULL", name="presence_some_time"),
        sqlite_autoincrement=True,
    )
    op.execute("INSERT INTO reader_presence_0005 (id, session_id, reader, from_at, until_at, closed_by) "
               "SELECT id, session_id, reader, from_at, until_at, closed_by FROM reader_presence")
    op.execute("DROP TABLE reader_presence")  # its index and triggers go with it; remade below
    op.execute("ALTER TABLE reader_presence_0005 RENAME TO reader_presence")
    op.create_index("presence_session", "reader_presence", ["session_id", "reader"])
    changed = " OR ".join([
        distinct("NEW.id", "OLD.id"), distinct("NEW.session_id", "OLD.session_id"),
        distinct("NEW.reader", "OLD.reader"),
        f"(OLD.from_at IS NOT NULL AND {distinct('NEW.from_at', 'OLD.from_at')})",
        f"(OLD.until_at IS NOT NULL AND ({distinct('NEW.until_at', 'OLD.until_at')} OR "
        f"{distinct('NEW.closed_by', 'OLD.closed_by')}))"])
    msg = "presence rows only gain what is missing (an end, a start): a closed interval never changes"
    refuse("presence_no_change", "reader_presence", "UPDATE", msg, when=changed)
    refuse("presence_no_delete", "reader_presence", "DELETE", "presence rows are never deleted")
