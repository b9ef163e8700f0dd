"""Many carts, one registry: cart and site per session, origin of synced rows, sync state, archive receipts.

Only ADD COLUMN and CREATE (UNIQUE) INDEX, so SQLite changes the tables in
place and their append-only triggers stay.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_sync"
down_revision = "0002_summaries"


def upgrade() -> None:
    op.add_column("sessions", sa.Column("cart", sa.Text))
    op.add_column("sessions", sa.Column("site", sa.Text))
    op.create_index("sessions_site", "sessions", ["site", "cart"])
    for table, index in (("audit", "audit_origin"), ("outcomes", "outcomes_origin"),
                         ("session_summaries", "summaries_origin")):
        op.add_column(table, sa.Column("origin", sa.Text))
        op.add_column(table, sa.Column("origin_id", sa.Integer))
        op.create_index(index, table, ["origin", "origin_id"], unique=True)
    op.create_index("outcomes_one_first_entry", "outcomes", ["session_id", "timepoint"], unique=True,
                    sqlite_where=sa.text("supersedes IS NULL"), postgresql_where=sa.text("supersedes IS NULL"))
    op.create_table(
        "sync_state",
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("archive_verified", sa.Integer, nullable=False, server_default="0"),
        sa.Column("synced_at", sa.Text),
        sa.Column("last_error", sa.Text),
    )
    op.create_table(
        "archive_receipts",
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.session_id"), primary_key=True),
        sa.Column("cart", sa.Text, nullable=False),
        sa.Column("site", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("chain_head", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("verified_at", sa.Text, nullable=False),
    )
