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
