"""What each session contributes to the cohort (SQLite user_version 2)."""

import sqlalchemy as sa
from alembic import op
from amrwatch.registry.migrations.ddl import json_check, refuse

revision = "0002_summaries"
down_revision = "0001_base"


def upgrade() -> None:
    op.create_table(
        "session_summaries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("supersedes", sa.Integer, sa.ForeignKey("session_summaries.id"), unique=True),
        sa.CheckConstraint(json_check("summary"), name="summaries_json"),
        sqlite_autoincrement=True,
    )
    op.create_index("summaries_session", "session_summaries", ["session_id"])
    msg = "summary rows are append-only: a correction is a new row that supersedes the old one"
    refuse("summaries_no_update", "session_summaries", "UPDATE", msg)
    refuse("summaries_no_delete", "session_summaries", "DELETE", msg)
