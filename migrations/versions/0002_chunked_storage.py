"""Chunked storage: append-only sample log, compressed per-series chunks, rollups.

Replaces the row-per-sample ``samples`` table. There is no data to carry over (the row-per-sample
layout never shipped in a release), so ``samples`` is dropped; the downgrade recreates it empty.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("samples")
    op.create_table(
        "sample_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("min_ts", sa.BigInteger, nullable=False),
        sa.Column("max_ts", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("last_value", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_chunks_series", "chunks", ["series_id", "max_ts"])
    op.create_index("ix_chunks_max_ts", "chunks", ["max_ts"])
    op.create_table(
        "rollups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("step_ms", sa.BigInteger, nullable=False),
        sa.Column("min_ts", sa.BigInteger, nullable=False),
        sa.Column("max_ts", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_rollups_series", "rollups", ["series_id", "step_ms", "max_ts"])
    op.create_index("ix_rollups_max_ts", "rollups", ["max_ts"])
    op.create_table(
        "rollup_state",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("step_ms", sa.BigInteger, nullable=False),
        sa.Column("done_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "step_ms"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("rollup_state")
    op.drop_index("ix_rollups_max_ts", table_name="rollups")
    op.drop_index("ix_rollups_series", table_name="rollups")
    op.drop_table("rollups")
    op.drop_index("ix_chunks_max_ts", table_name="chunks")
    op.drop_index("ix_chunks_series", table_name="chunks")
    op.drop_table("chunks")
    op.drop_table("sample_log")
    op.create_table(
        "samples",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts"),
        sqlite_with_rowid=False,
    )
