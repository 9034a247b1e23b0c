"""Compaction: moving samples from the head (the log) into compressed per-series chunks.

All functions here run on the writer's connection inside a transaction the caller opened. They keep
the invariant that a series' chunks never overlap in time, and they are idempotent: compacting the
same log records twice (after a crash between writing chunks and trimming the log) stores each
sample once, because merging replaces overlapping chunks and the newer write wins on equal
timestamps.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import numpy as np

from mlwatch.storage import chunks as _chunks
from mlwatch.storage.chunks import decode_chunk, encode_run, plan_chunks
from mlwatch.storage.head import I64, merge


def open_limit() -> int:
    """A chunk smaller than this is "open" (unless it is full by sample count or time span): the
    next flush of its series re-encodes it with the new samples, so that slow series still end up
    with page-sized chunks."""
    return _chunks.CHUNK_BUDGET - 512


_OVERLAP = (
    "SELECT id, data FROM chunks WHERE series_id = ? AND max_ts >= ? AND min_ts <= ? ORDER BY min_ts"
)
_TAIL = (
    "SELECT id, length(data), n, max_ts - min_ts, data FROM chunks WHERE series_id = ? AND max_ts < ? "
    "ORDER BY max_ts DESC LIMIT 1"
)
_INSERT = "INSERT INTO chunks (series_id, min_ts, max_ts, n, last_value, data) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass
class CompactionBatch:
    """Chunk rows to insert and delete, gathered over several series, written with executemany."""

    inserts: list[tuple[int, int, int, int, int, bytes]] = field(default_factory=list)
    deletes: list[tuple[int]] = field(default_factory=list)
    samples: int = 0
    # Open (partly filled) chunks, written together after every full chunk of the compaction so
    # that they share pages; each with the old chunks it replaces (deleted in the same transaction).
    deferred: list[tuple[list[int], tuple[int, int, int, int, int, bytes]]] = field(default_factory=list)

    def write_deferred(self, conn: sqlite3.Connection, limit: int) -> int:
        """Write up to ``limit`` deferred open chunks (largest first); returns how many remain."""
        if not self.deferred:
            return 0
        self.deferred.sort(key=lambda d: len(d[1][5]))
        batch = self.deferred[-limit:][::-1]
        del self.deferred[-limit:]
        dels = [(i,) for old, _ in batch for i in old]
        if dels:
            conn.executemany("DELETE FROM chunks WHERE id = ?", dels)
        conn.executemany(_INSERT, [row for _, row in batch])
        return len(self.deferred)

    def write(self, conn: sqlite3.Connection) -> None:
        if self.deletes:
            conn.executemany("DELETE FROM chunks WHERE id = ?", self.deletes)
        if self.inserts:
            # Big (full) chunks first, then the small ones together, so that small ones share pages.
            self.inserts.sort(key=lambda r: -len(r[5]))
            conn.executemany(_INSERT, self.inserts)
        self.inserts, self.deletes = [], []


def decode_rows(rows: list[bytes]) -> tuple[I64, I64]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parts = [decode_chunk(d) for d in rows]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([t for t, _ in parts]), np.concatenate([b for _, b in parts])


def compact_series(
    conn: sqlite3.Connection, out: CompactionBatch, sid: int, ts: I64, bits: I64, *, flush: bool
) -> tuple[I64, I64]:
    """Stage chunks for one series' head samples (sorted, unique); return the samples carried over.

    Without ``flush``, the last (partly filled) chunk is not written: its samples stay in the head
    (carried into a new log record) until enough arrive to fill a page.
    """
    tmin, tmax = int(ts[0]), int(ts[-1])
    rows = conn.execute(_OVERLAP, (sid, tmin, tmax)).fetchall()
    merged_old = bool(rows)
    if not rows and flush:
        tail = conn.execute(_TAIL, (sid, tmin)).fetchone()
        if (
            tail is not None
            and tail[1] < open_limit()
            and tail[2] < _chunks.MAX_SAMPLES
            and tail[3] < _chunks.MAX_SPAN_MS * 0.9
        ):
            rows = [(tail[0], tail[4])]
    old_ts: I64 = ts[:0]
    if rows:
        old_ts, old_bits = decode_rows([r[1] for r in rows])
        ts, bits = merge(old_ts, old_bits, ts, bits)
    plan = plan_chunks(ts, bits)
    carry_ts, carry_bits = ts[:0], bits[:0]
    if not flush and not merged_old:  # the last chunk of a plan is the partly filled one
        lo, _, _ = plan.bounds.pop()
        carry_ts, carry_bits = ts[lo:], bits[lo:]
    old_ids = [r[0] for r in rows]
    old_max = int(old_ts[-1]) if rows and len(old_ts) else None
    staged: list[tuple[int, int, int, int, int, bytes]] = []
    for lo, hi, _ in plan.bounds:
        for cts, cbits, data in encode_run(ts[lo:hi], bits[lo:hi], plan.scale, None, plan.whole):
            staged.append((sid, int(cts[0]), int(cts[-1]), len(cts), int(cbits[-1]), data))
            out.samples += len(cts)
    last = staged[-1] if staged else None
    if flush and last is not None and len(last[5]) < open_limit():
        if len(staged) == 1:  # the open chunk replaces the old ones alone: defer all of it
            out.deferred.append((old_ids, last))
            return carry_ts, carry_bits
        if old_max is None or last[1] > old_max:  # only head samples (still in the log): defer it
            out.deferred.append(([], staged.pop()))
    out.deletes.extend((i,) for i in old_ids)
    out.inserts.extend(staged)
    return carry_ts, carry_bits
