"""Outbox order: an index on pending notifications by notifier and group, for the query that holds a
group's newer notification back while an older one of the same group is pending.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_notifications_pending_group", "notifications", ["notifier", "group_key", "id"],
        sqlite_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_pending_group", table_name="notifications")
