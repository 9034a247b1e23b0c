"""Storage: one SQLite file, Prometheus-shaped.

Writes go through the one :class:`~mlwatch.storage.writer.Writer` (group commits; each commit
appends one record to the append-only ``sample_log``, no per-sample index). The writer keeps the
uncompacted records in memory (the head, rebuilt from the log on start) and compacts them into
compressed per-series ``chunks`` (storage/chunks.py: delta-of-delta timestamps, decimal-scaled or
XOR values, each chunk sized to fit one page), then trims the log. Readers
(:class:`~mlwatch.storage.reader.Reader`, in any process) read chunks plus log from one snapshot.

Modules: schema (tables; Alembic's target), database (engines, migrations, the daemon lock),
writer, head (log records and their indexes), chunks (the encoding), compaction, reader,
retention (retention, size cap, rollups, vacuum), backup.
"""
