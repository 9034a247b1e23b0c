"""Initial schema; sets the file-level settings that cannot be changed cheaply later.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PAGE_SIZE = 8192


def upgrade() -> None:
    # page_size and auto_vacuum only take effect on an empty file or after a VACUUM, and
    # VACUUM cannot run inside a transaction: do them first, outside Alembic's transaction.
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        op.execute("PRAGMA auto_vacuum = INCREMENTAL")
        op.execute("VACUUM")
        op.execute("PRAGMA journal_mode = WAL")

    op.create_table(
        "series",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("metric", sa.String, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("canonical", sa.Text, nullable=False, unique=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_series_metric", "series", ["metric"])
    op.create_table(
        "metric_meta",
        sa.Column("metric", sa.String, primary_key=True),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("help", sa.Text, nullable=False, server_default=""),
        sa.Column("unit", sa.String, nullable=False, server_default=""),
    )
    op.create_table(
        "samples",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),  # IEEE-754 bits
        sa.PrimaryKeyConstraint("series_id", "ts"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "source_state",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "push_groups",
        sa.Column("group_key", sa.Text, primary_key=True),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("families", sa.LargeBinary, nullable=False),
        sa.Column("push_time", sa.Float, nullable=False),
        sa.Column("failure_time", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    for name in ("push_groups", "source_state", "samples", "metric_meta", "series"):
        op.drop_table(name)
