"""SQLAlchemy Core tables: Alembic's ``target_metadata``. Production never calls ``create_all()``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# One row per series: identity (metric + canonical sorted labels) and metadata.
series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("metric", String, nullable=False),
    Column("labels", Text, nullable=False),  # JSON object, keys sorted, no __name__
    Column("canonical", Text, nullable=False, unique=True),  # name{a="1",...}
    Column("created_ms", BigInteger, nullable=False),
)
Index("ix_series_metric", series.c.metric)

# TYPE/HELP/UNIT per metric family name; one type per name across the store.
metric_meta = Table(
    "metric_meta",
    metadata,
    Column("metric", String, primary_key=True),
    Column("type", String, nullable=False),
    Column("help", Text, nullable=False, server_default=""),
    Column("unit", String, nullable=False, server_default=""),
)

# The append-only sample log: one record per group commit, no per-sample index. Records are
# compacted into ``chunks`` and then deleted; AUTOINCREMENT keeps record ids from being reused,
# which readers in other processes rely on to cache decoded records.
sample_log = Table(
    "sample_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),  # int32 series ids | int64 ts | int64 value bits
    sqlite_autoincrement=True,
)

# Compressed per-series chunks (storage/chunks.py), each sized to fit one page; a series' chunks
# never overlap in time.
chunks = Table(
    "chunks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_id", Integer, nullable=False),
    Column("min_ts", BigInteger, nullable=False),
    Column("max_ts", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("last_value", BigInteger, nullable=False),  # IEEE-754 bits of the sample at max_ts
    Column("data", LargeBinary, nullable=False),
)
Index("ix_chunks_series", chunks.c.series_id, chunks.c.max_ts)
Index("ix_chunks_max_ts", chunks.c.max_ts)

# Downsampled rollups (min, max, sum, count, last per step), one row per series, step and
# aligned block of buckets.
rollups = Table(
    "rollups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_id", Integer, nullable=False),
    Column("step_ms", BigInteger, nullable=False),
    Column("min_ts", BigInteger, nullable=False),
    Column("max_ts", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
Index("ix_rollups_series", rollups.c.series_id, rollups.c.step_ms, rollups.c.max_ts)
Index("ix_rollups_max_ts", rollups.c.max_ts)

# How far each series has been rolled up at each step (exclusive end, ms).
rollup_state = Table(
    "rollup_state",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("step_ms", BigInteger, nullable=False),
    Column("done_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("series_id", "step_ms"),
    sqlite_with_rowid=False,
)

# Offsets and operator state of sources, committed in the same transaction as their samples.
source_state = Table(
    "source_state",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Pushgateway groups: the current content of each group, so it survives restarts.
push_groups = Table(
    "push_groups",
    metadata,
    Column("group_key", Text, primary_key=True),  # canonical grouping labels
    Column("labels", Text, nullable=False),  # JSON object of the grouping labels (job included)
    Column("families", LargeBinary, nullable=False),  # JSON: the group's metric families
    Column("push_time", Float, nullable=False),  # seconds; last successful change
    Column("failure_time", Float, nullable=False),  # seconds; last failed change, 0 if none
    Column("expires_at", Float, nullable=True),  # seconds; set by ?ttl= or push.default_ttl
)

# ------------------------------------------------------------------ alerting (storage/alertstore.py)

# The state of every active alert (pending or firing, and firing ones held by keep_firing_for), so a
# restart neither re-fires nor forgets an alert; a row is deleted when its alert resolves.
alerts = Table(
    "alerts",
    metadata,
    Column("rule_key", Text, nullable=False),  # rule group key + rule name
    Column("fingerprint", String, nullable=False),  # of the alert's labels
    Column("labels", Text, nullable=False),  # JSON object
    Column("annotations", Text, nullable=False),  # JSON object
    Column("state", String, nullable=False),  # pending | firing
    Column("value", Float, nullable=False),
    Column("active_at", Float, nullable=False),  # seconds; when the condition first held
    Column("fired_at", Float, nullable=True),
    Column("last_seen", Float, nullable=False),  # last evaluation at which the condition held
    Column("last_eval", Float, nullable=False),
    Column("resolving_since", Float, nullable=True),  # keep_firing_for/resolve_expr hold-over start
    Column("last_sent_am", Float, nullable=True),  # last time sent to the Alertmanagers
    PrimaryKeyConstraint("rule_key", "fingerprint"),
    sqlite_with_rowid=False,
)

# Every transition of every alert: the alert history.
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", Float, nullable=False),
    Column("fingerprint", String, nullable=False),
    Column("alertname", String, nullable=False),
    Column("event", String, nullable=False),  # pending | firing | resolved
    Column("labels", Text, nullable=False),
    Column("annotations", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("active_at", Float, nullable=False),
    Column("condition", Text, nullable=False, server_default=""),  # the rule's (compiled) expression
)
Index("ix_alert_events_ts", alert_events.c.ts)

# Alertmanager-shaped silences.
silences = Table(
    "silences",
    metadata,
    Column("id", String, primary_key=True),
    Column("matchers", Text, nullable=False),  # JSON list of {name, value, isRegex, isEqual}
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("created_by", String, nullable=False, server_default=""),
    Column("comment", Text, nullable=False, server_default=""),
    Column("updated_at", Float, nullable=False),
)

# The durable notification outbox: each notification is stored before it is sent.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String, nullable=False, unique=True),  # the idempotency key
    Column("notifier", String, nullable=False),
    Column("group_key", Text, nullable=False),
    Column("payload", Text, nullable=False),  # JSON: the notification (status, alerts, rendered texts)
    Column("status", String, nullable=False),  # pending | delivered | expired
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("delivered_at", Float, nullable=True),
)
Index("ix_notifications_due", notifications.c.status, notifications.c.next_attempt_at)
# A group's older pending notification holds its newer ones back (alertstore.due_notifications).
Index("ix_notifications_pending_group", notifications.c.notifier, notifications.c.group_key, notifications.c.id,
      sqlite_where=text("status = 'pending'"))

# Every delivery attempt and its outcome.
notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("notification_id", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("seconds", Float, nullable=False),
)

# Routing state per (route, group, notifier): what was last notified and when (repeat_interval).
notify_groups = Table(
    "notify_groups",
    metadata,
    Column("key", Text, primary_key=True),
    Column("last_sent", Float, nullable=False),
    Column("last_hash", String, nullable=False),
    Column("firing", Text, nullable=False, server_default="[]"),  # JSON list of fingerprints last sent firing
)
