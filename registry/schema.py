"""The registry's one schema definition, for SQLite and PostgreSQL alike.

Why SQLAlchemy Core: one table definition serves the embedded SQLite registry
of a cart and the central PostgreSQL registry of a hospital; Alembic migrations
(registry/migrations) build it step by step on either, and a test compares the
migrated database with this metadata so the two cannot drift apart.

What SQL cannot say portably — the triggers that make audit, outcome and
summary rows append-only, and the JSON checks — is written per dialect in the
migrations (registry/migrations/ddl.py).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: The Alembic revision this code reads and writes; `amrwatch registry migrate` brings a registry to it.
HEAD = "0005_presence_link_lost"

sessions = sa.Table(
    "sessions", metadata,
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
    # 0003: where the session was recorded (set when it reaches a central registry, or by the cart's config)
    sa.Column("cart", sa.Text),
    sa.Column("site", sa.Text),
    sa.Index("sessions_started", "started_at"),
    sa.Index("sessions_patient", "patient_token"),
    sa.Index("sessions_site", "site", "cart"),
)

audit = sa.Table(
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("row_key", sa.Text, nullable=False),
    sa.Column("old", sa.Text),
    sa.Column("new", sa.Text),
    sa.Column("supersedes", sa.Integer, sa.ForeignKey("audit.id")),
    # 0003: a row copied from a cart by `amrwatch sync` keeps the cart's name and its id there
    sa.Column("origin", sa.Text),
    sa.Column("origin_id", sa.Integer),
    sa.Index("audit_row", "table_name", "row_key"),
    sa.Index("audit_origin", "origin", "origin_id", unique=True),
    sqlite_autoincrement=True,
)

outcomes = sa.Table(
    "outcomes", metadata,
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
    sa.Column("origin", sa.Text),
    sa.Column("origin_id", sa.Integer),
    sa.Index("outcomes_session", "session_id", "timepoint"),
    # 0003: one first entry per session and follow-up point, whoever writes it, even concurrently
    sa.Index("outcomes_one_first_entry", "session_id", "timepoint", unique=True,
             sqlite_where=sa.text("supersedes IS NULL"), postgresql_where=sa.text("supersedes IS NULL")),
    sa.Index("outcomes_origin", "origin", "origin_id", unique=True),
    sqlite_autoincrement=True,
)

session_summaries = sa.Table(
    "session_summaries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("supersedes", sa.Integer, sa.ForeignKey("session_summaries.id"), unique=True),
    sa.Column("origin", sa.Text),
    sa.Column("origin_id", sa.Integer),
    sa.Index("summaries_session", "session_id"),
    sa.Index("summaries_origin", "origin", "origin_id", unique=True),
    sqlite_autoincrement=True,
)

#: A cart's record of what `amrwatch sync` has pushed (only ever used in a cart's own registry).
sync_state = sa.Table(
    "sync_state", metadata,
    sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("archive_verified", sa.Integer, nullable=False, server_default="0"),
    sa.Column("synced_at", sa.Text),
    sa.Column("last_error", sa.Text),
)

#: In a central registry: each archive copy verified at the destination (CRCs, chain, checkpoint).
archive_receipts = sa.Table(
    "archive_receipts", metadata,
    sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), primary_key=True),
    sa.Column("cart", sa.Text, nullable=False),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("record_count", sa.Integer, nullable=False),
    sa.Column("chain_head", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("verified_at", sa.Text, nullable=False),
)

#: 0004: which remote reader (its CURVE key name) watched which session from when to when; an open interval has
#: no until_at; closed_by says who ended it: the reader ('left'), the session's end, or (0005) the cart no longer
#: hearing the reader ('link_lost').
reader_presence = sa.Table(
    "reader_presence", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
    sa.Column("reader", sa.Text, nullable=False),
    sa.Column("from_at", sa.Text),
    sa.Column("until_at", sa.Text),
    sa.Column("closed_by", sa.Text),
    sa.CheckConstraint("closed_by IS NULL OR closed_by IN ('reader', 'session_end', 'link_lost')",
                       name="presence_closed_by"),
    sa.CheckConstraint("(until_at IS NULL) = (closed_by IS NULL)", name="presence_until_closed_by"),
    sa.CheckConstraint("from_at IS NOT NULL OR until_at IS NOT NULL", name="presence_some_time"),
    sa.Index("presence_session", "session_id", "reader"),
    sqlite_autoincrement=True,
)

#: 0004: a postoperative AMR recording (its own session) linked to the operation's session at a follow-up point.
followup_recordings = sa.Table(
    "followup_recordings", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("operation_session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
    sa.Column("recording_session_id", sa.Text, sa.ForeignKey("sessions.session_id"), nullable=False),
    sa.Column("timepoint", sa.Text, nullable=False),
    sa.Column("linked_at", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.CheckConstraint("operation_session_id <> recording_session_id", name="followup_not_itself"),
    sa.Index("followup_operation", "operation_session_id", "timepoint", unique=True),
    sa.Index("followup_recording", "recording_session_id", unique=True),
    sqlite_autoincrement=True,
)
