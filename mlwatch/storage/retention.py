"""Retention, the size cap, downsampled rollups and incremental vacuum.

Every function here is a generator run by the writer thread: each ``yield`` comes after one short
transaction, so ingest (group commits) goes on between them. Data is deleted by whole chunks.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlwatch.model import STALE_NAN_BITS, Matcher, SeriesKey, matches_all
from mlwatch.storage.chunks import decode_chunk, encode_chunk
from mlwatch.storage.compaction import decode_rows
from mlwatch.storage.head import I64

DELETE_BATCH = 500  # chunks per deleting transaction
VACUUM_PAGES = 1024  # pages returned to the file system per transaction
ROLLUP_BLOCK = 256  # buckets per rollup row
ROLLUP_SERIES_PER_STEP = 200
ROLLUP_STEP_SAMPLES = 500_000  # raw samples read per rollup transaction
ROLLUP_MAX_SPANS = 64  # rollup blocks per series per maintenance run (a long history catches up over runs)
Steps = Generator[None, None, int]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long data stays and how much of it may exist.

    ``overrides``: (matchers, retention_ms) pairs; the first whose matchers all match a series sets
    its retention. ``max_size_bytes``: cap on the database's used pages; the oldest chunks go first.
    ``downsample``: (after_ms, step_ms) levels; buckets older than ``after_ms`` are rolled up.
    """

    retention_ms: int = 15 * 86400_000
    overrides: Sequence[tuple[Sequence[Matcher], int]] = ()
    max_size_bytes: int | None = None
    downsample: Sequence[tuple[int, int]] = ()

    def retention_for(self, key: SeriesKey) -> int:
        for matchers, ms in self.overrides:
            if matches_all(matchers, key):
                return ms
        return self.retention_ms


@dataclass
class MaintenanceReport:
    deleted_chunks: int = 0
    deleted_samples: int = 0
    deleted_for_size: int = 0  # chunks dropped by the size cap
    deleted_rollups: int = 0
    rollup_rows: int = 0
    vacuumed_pages: int = 0
    size_bytes: int = 0  # used pages x page size, after maintenance
    cutoffs: dict[int, int] = field(default_factory=dict)  # retention_ms -> cutoff applied


def used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _in_txn(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> tuple[int, int]:
    """Delete a batch of chunks chosen by ``sql`` (selecting id, n); returns (chunks, samples)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(sql, params).fetchall()
        if rows:
            conn.executemany("DELETE FROM chunks WHERE id = ?", [(r[0],) for r in rows])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows), sum(r[1] for r in rows)


def delete_chunks_before(conn: sqlite3.Connection, cutoff_ms: int) -> Steps:
    """Delete every chunk whose newest sample is older than ``cutoff_ms``; returns samples deleted."""
    total = 0
    while True:
        n, samples = _in_txn(conn, "SELECT id, n FROM chunks WHERE max_ts < ? LIMIT ?", (cutoff_ms, DELETE_BATCH))
        total += samples
        yield
        if n < DELETE_BATCH:
            break
    yield from vacuum(conn)
    return total


def vacuum(conn: sqlite3.Connection) -> Steps:
    """Return free pages to the file system, a bounded number per transaction."""
    done = 0
    while (free := conn.execute("PRAGMA freelist_count").fetchone()[0]) > 0:
        conn.execute(f"PRAGMA incremental_vacuum({min(free, VACUUM_PAGES)})").fetchall()
        done += min(free, VACUUM_PAGES)
        yield
    # Copy the WAL back without waiting for readers; when it completes, SQLite also truncates the
    # database file to its page count, so the vacuumed pages leave the file system.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return done


def maintenance_steps(
    conn: sqlite3.Connection, policy: RetentionPolicy, keys: Mapping[int, SeriesKey], now_ms: int
) -> Generator[None, None, MaintenanceReport]:
    report = MaintenanceReport()
    for after_ms, step_ms in policy.downsample:
        report.rollup_rows += yield from rollup_level(conn, keys, after_ms, step_ms, now_ms)

    # Retention: series grouped by their retention; the default group is "every other series".
    groups: dict[int, list[int]] = {}
    if policy.overrides:
        for sid, key in keys.items():
            ms = policy.retention_for(key)
            if ms != policy.retention_ms:
                groups.setdefault(ms, []).append(sid)
    special = json.dumps([sid for sids in groups.values() for sid in sids])
    default_cutoff = now_ms - policy.retention_ms
    report.cutoffs[policy.retention_ms] = default_cutoff
    plans: list[tuple[str, tuple[object, ...]]] = [
        (
            "SELECT id, n FROM {t} WHERE max_ts < ? AND series_id NOT IN (SELECT value FROM json_each(?)) LIMIT ?",
            (default_cutoff, special),
        )
    ]
    for ms, sids in groups.items():
        report.cutoffs[ms] = now_ms - ms
        plans.append(
            (
                "SELECT id, n FROM {t} WHERE max_ts < ? AND series_id IN (SELECT value FROM json_each(?)) LIMIT ?",
                (now_ms - ms, json.dumps(sids)),
            )
        )
    for sql, params in plans:
        while True:
            n, samples = _in_txn(conn, sql.format(t="chunks"), (*params, DELETE_BATCH))
            report.deleted_chunks += n
            report.deleted_samples += samples
            yield
            if n < DELETE_BATCH:
                break
        while True:
            n = yield from _delete_rollups(conn, sql.format(t="rollups"), (*params, DELETE_BATCH))
            report.deleted_rollups += n
            if n < DELETE_BATCH:
                break

    if policy.max_size_bytes is not None:
        report.deleted_for_size = yield from enforce_size(conn, policy.max_size_bytes)
    report.vacuumed_pages = yield from vacuum(conn)
    report.size_bytes = used_bytes(conn)
    return report


def _delete_rollups(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> Steps:
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.executemany("DELETE FROM rollups WHERE id = ?", [(r[0],) for r in rows])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    yield
    return len(rows)


def enforce_size(conn: sqlite3.Connection, max_bytes: int) -> Steps:
    """Drop the oldest chunks (then the oldest rollups) until the used pages fit ``max_bytes``."""
    dropped = 0
    while (excess := used_bytes(conn) - max_bytes) > 0:
        # Roughly the chunks that free ``excess`` bytes (one page each at most), within one batch.
        k = max(1, min(DELETE_BATCH, excess // 4096 + 1))
        n, _ = _in_txn(conn, "SELECT id, n FROM chunks ORDER BY max_ts LIMIT ?", (k,))
        if n == 0:
            gone = yield from _delete_rollups(conn, "SELECT id FROM rollups ORDER BY max_ts LIMIT ?", (k,))
            if gone == 0:
                break  # only the log and the series index remain
        dropped += n
        yield
    return dropped


# ---------------------------------------------------------------- rollups

_LEN = struct.Struct("<I")
ROLLUP_COLUMNS = ("min", "max", "sum", "count", "last")


def encode_rollup(ts: I64, cols: Sequence[np.ndarray]) -> bytes:
    parts = []
    for col in cols:
        blob = encode_chunk(ts, np.asarray(col, np.float64).view(np.int64))
        parts.append(_LEN.pack(len(blob)) + blob)
    return b"".join(parts)


def decode_rollup(data: bytes) -> tuple[I64, list[np.ndarray]]:
    off = 0
    ts: I64 = np.zeros(0, np.int64)
    cols = []
    while off < len(data):
        (n,) = _LEN.unpack_from(data, off)
        ts, bits = decode_chunk(data[off + 4 : off + 4 + n])
        cols.append(bits.view(np.float64))
        off += 4 + n
    return ts, cols


def compute_rollup(ts: I64, bits: I64, step_ms: int) -> tuple[I64, list[np.ndarray]]:
    """min, max, sum, count, last per ``step_ms`` bucket (bucket start timestamps); staleness markers skipped."""
    live = bits != STALE_NAN_BITS
    ts, vals = ts[live], bits[live].view(np.float64)
    if len(ts) == 0:
        return ts, [np.zeros(0)] * 5
    buckets = ts // step_ms * step_ms
    starts = np.flatnonzero(np.concatenate([[True], buckets[1:] != buckets[:-1]]))
    ends = np.append(starts[1:], len(ts))
    return buckets[starts], [
        np.minimum.reduceat(vals, starts),
        np.maximum.reduceat(vals, starts),
        np.add.reduceat(vals, starts),
        (ends - starts).astype(np.float64),
        vals[ends - 1],
    ]


def rollup_level(
    conn: sqlite3.Connection, keys: Mapping[int, SeriesKey], after_ms: int, step_ms: int, now_ms: int
) -> Steps:
    """Roll up every whole block of ``ROLLUP_BLOCK`` buckets that ends before ``now - after``.

    Chunks are read and rolled up outside any write transaction; each write transaction only
    inserts the rows of a bounded amount of work.
    """
    span = step_ms * ROLLUP_BLOCK
    horizon = (now_ms - after_ms) // span * span
    done = dict(conn.execute("SELECT series_id, done_ms FROM rollup_state WHERE step_ms = ?", (step_ms,)).fetchall())
    rows = 0
    inserts: list[tuple[int, int, int, int, int, bytes]] = []
    states: list[tuple[int, int, int]] = []
    work = 0
    for sid in sorted(keys):
        start = done.get(sid)
        if start is None:
            first = conn.execute("SELECT MIN(min_ts) FROM chunks WHERE series_id = ?", (sid,)).fetchone()[0]
            if first is None:
                continue
            start = first // span * span
        if start >= horizon:
            continue
        end = min(horizon, start + ROLLUP_MAX_SPANS * span)  # bounded work per series and step
        chunk_rows = conn.execute(
            "SELECT data FROM chunks WHERE series_id = ? AND max_ts >= ? AND min_ts < ? ORDER BY min_ts",
            (sid, start, end),
        ).fetchall()
        ts, bits = decode_rows([r[0] for r in chunk_rows])
        sel = (ts >= start) & (ts < end)
        work += len(ts)
        bts, cols = compute_rollup(ts[sel], bits[sel], step_ms)
        if len(bts):
            block = bts // span
            for b in np.unique(block):
                m = block == b
                inserts.append((sid, step_ms, int(bts[m][0]), int(bts[m][-1]), int(m.sum()),
                                encode_rollup(bts[m], [c[m] for c in cols])))
        states.append((sid, step_ms, end))
        if work >= ROLLUP_STEP_SAMPLES or len(states) >= ROLLUP_SERIES_PER_STEP:
            rows += _write_rollups(conn, inserts, states)
            inserts, states, work = [], [], 0
            yield
    if states:
        rows += _write_rollups(conn, inserts, states)
        yield
    return rows


def _write_rollups(
    conn: sqlite3.Connection, inserts: list[tuple[int, int, int, int, int, bytes]], states: list[tuple[int, int, int]]
) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO rollups (series_id, step_ms, min_ts, max_ts, n, data) VALUES (?, ?, ?, ?, ?, ?)", inserts
        )
        conn.executemany(
            "INSERT INTO rollup_state (series_id, step_ms, done_ms) VALUES (?, ?, ?) "
            "ON CONFLICT(series_id, step_ms) DO UPDATE SET done_ms = excluded.done_ms",
            states,
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(inserts)
