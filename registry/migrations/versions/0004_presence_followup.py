"""Who watched the session from the hub (reader_presence) and follow-up AMR recordings linked to an operation.

reader_presence: one row per interval a remote reader watched a session. The recorder opens it on the
reader's `watching` note and closes it on `left`, or closes it with the session (closed_by 'session_end',
not the reader's own word). A closed interval never changes again, and no row is ever deleted: triggers
allow only filling in what is still empty (an open interval's end; the start of an interval whose `left`
arrived before its `watching`, e.g. a refetched message).

followup_recordings: a postoperative recording (its own session) linked to the operation's session, at a
follow-up point. Append-only, one link per operation and timepoint, one operation per recording.
"""

import sqlalchemy as sa
from alembic import op
from amrwatch.registry.migrations.ddl import distinct, refuse

revision = "0004_presence_followup"
down_revision = "0003_sync"


def upgrade() -> None:
    op.create_table(
        "reader_presence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("reader", sa.Text, nullable=False),
        sa.Column("from_at", sa.Text),
        sa.Column("until_at", sa.Text),
        sa.Column("closed_by", sa.Text),
        sa.CheckConstraint("closed_by IS NULL OR closed_by IN ('reader', 'session_end')",
                           name="presence_closed_by"),
        sa.CheckConstraint("(until_at IS NULL) = (closed_by IS NULL)", name="presence_until_closed_by"),
        sa.CheckConstraint("from_at IS NOT NULL OR until_at IS NOT NULL", name="presence_some_time"),
        sqlite_autoincrement=True,
    )
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

    op.create_table(
        "followup_recordings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("operation_session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("recording_session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("timepoint", sa.Text, nullable=False),
        sa.Column("linked_at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.CheckConstraint("operation_session_id <> recording_session_id", name="followup_not_itself"),
        sqlite_autoincrement=True,
    )
    op.create_index("followup_operation", "followup_recordings", ["operation_session_id", "timepoint"], unique=True)
    op.create_index("followup_recording", "followup_recordings", ["recording_session_id"], unique=True)
    msg = "follow-up links are append-only"
    refuse("followup_no_update", "followup_recordings", "UPDATE", msg)
    refuse("followup_no_delete", "followup_recordings", "DELETE", msg)
