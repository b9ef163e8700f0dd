"""The registry as first shipped: sessions, the audit trail, follow-up outcomes (SQLite user_version 1)."""

import sqlalchemy as sa
from alembic import op
from amrwatch.registry.migrations.ddl import distinct, json_check, refuse, token_check

revision = "0001_base"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("ended_at", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("scenario", sa.Text),
        sa.Column("replay_of", sa.Text, sa.ForeignKey("sessions.session_id")),
        sa.Column("montage", sa.Text, nullable=False, server_default="{}"),
        sa.Column("settings", sa.Text, nullable=False, server_default="{}"),
        sa.Column("model_sha256", sa.Text),
        sa.Column("model_synthetic", sa.Integer),
        sa.Column("patient_token", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_reason", sa.Text),
        sa.CheckConstraint("length(session_id) BETWEEN 1 AND 64", name="sessions_id_length"),
        sa.CheckConstraint(json_check("montage"), name="sessions_montage_json"),
        sa.CheckConstraint(json_check("settings"), name="sessions_settings_json"),
        sa.CheckConstraint("model_synthetic IN (0, 1)", name="sessions_model_synthetic"),
        sa.CheckConstraint(token_check("patient_token"), name="sessions_patient_token"),
        sa.CheckConstraint("status IN ('recording', 'closed', 'corrupt')", name="sessions_status"),
    )
    op.create_index("sessions_started", "sessions", ["started_at"])
    op.create_index("sessions_patient", "sessions", ["patient_token"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("row_key", sa.Text, nullable=False),
        sa.Column("old", sa.Text),
        sa.Column("new", sa.Text),
        sa.Column("supersedes", sa.Integer, sa.ForeignKey("audit.id")),
        sa.CheckConstraint("length(actor) BETWEEN 1 AND 64", name="audit_actor_length"),
        sa.CheckConstraint(f"old IS NULL OR {json_check('old')}", name="audit_old_json"),
        sa.CheckConstraint(f"new IS NULL OR {json_check('new')}", name="audit_new_json"),
        sqlite_autoincrement=True,
    )
    op.create_index("audit_row", "audit", ["table_name", "row_key"])

    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
        sa.Column("timepoint", sa.Text, nullable=False),
        sa.Column("cohen_grade", sa.Integer, nullable=False),
        sa.Column("outcome_class", sa.Text),
        sa.Column("relief_date", sa.Text),
        sa.Column("complications", sa.Text, nullable=False, server_default="{}"),
        sa.Column("recorded_at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("supersedes", sa.Integer, sa.ForeignKey("outcomes.id"), unique=True),
        sa.CheckConstraint("timepoint IN ('1w', '3m', '6m', '1y')", name="outcomes_timepoint"),
        sa.CheckConstraint("cohen_grade BETWEEN 0 AND 4", name="outcomes_grade"),
        sa.CheckConstraint("outcome_class IS NULL OR outcome_class IN ('cured', 'improved', 'unchanged', 'worse')",
                           name="outcomes_class"),
        sa.CheckConstraint(json_check("complications"), name="outcomes_complications_json"),
        sqlite_autoincrement=True,
    )
    op.create_index("outcomes_session", "outcomes", ["session_id", "timepoint"])

    refuse("audit_no_update", "audit", "UPDATE", "audit rows are append-only: add a new row instead of changing one")
    refuse("audit_no_delete", "audit", "DELETE", "audit rows are append-only: they are never deleted")
    refuse("outcomes_no_update", "outcomes", "UPDATE",
           "outcome rows are append-only: a correction is a new row that supersedes the old one")
    refuse("outcomes_no_delete", "outcomes", "DELETE",
           "outcome rows are append-only: a correction is a new row that supersedes the old one")
    refuse("sessions_no_delete", "sessions", "DELETE", "sessions are never deleted: mark them corrupt instead")
    refuse("sessions_fixed_identity", "sessions", "UPDATE OF session_id, started_at, source, replay_of",
           "a session's id, start time, source and replay_of never change",
           when=" OR ".join(distinct(f"NEW.{c}", f"OLD.{c}")
                            for c in ("session_id", "started_at", "source", "replay_of")))
