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

# Samples, one row per sample (the storage-engine issue replaces this layout behind the same API).
samples = Table(
    "samples",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("value", BigInteger, nullable=False),  # IEEE-754 bits: SQLite cannot store NaN
    PrimaryKeyConstraint("series_id", "ts"),
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
