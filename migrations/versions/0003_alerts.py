"""Alerting: alert state, alert history, silences, the notification outbox and its attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("rule_key", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("annotations", sa.Text, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("active_at", sa.Float, nullable=False),
        sa.Column("fired_at", sa.Float, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("last_eval", sa.Float, nullable=False),
        sa.Column("resolving_since", sa.Float, nullable=True),
        sa.Column("last_sent_am", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("rule_key", "fingerprint"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("fingerprint", sa.String, nullable=False),
        sa.Column("alertname", sa.String, nullable=False),
        sa.Column("event", sa.String, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("annotations", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("active_at", sa.Float, nullable=False),
        sa.Column("condition", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_alert_events_ts", "alert_events", ["ts"])
    op.create_table(
        "silences",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String, nullable=False, server_default=""),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String, nullable=False, unique=True),
        sa.Column("notifier", sa.String, nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("delivered_at", sa.Float, nullable=True),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("notification_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_table(
        "notify_groups",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("last_sent", sa.Float, nullable=False),
        sa.Column("last_hash", sa.String, nullable=False),
        sa.Column("firing", sa.Text, nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_table("notify_groups")
    op.drop_table("notification_attempts")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("silences")
    op.drop_index("ix_alert_events_ts", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_table("alerts")
