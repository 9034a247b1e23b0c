"""The read side of storage: series lookup by matchers, range reads into numpy, latest values.

Readers use their own connections (read-only ones in other processes), so they see everything
committed and never block the writer (WAL). A sample lives either in a compressed chunk or in the
append-only log (or, for a moment after compaction, in both: the log wins). Each read runs in one
read transaction, so chunks and log come from the same snapshot. Decoded log records are cached
(record ids are never reused) and indexed by series.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine

from mlwatch.model import Matcher, MetricMeta, MetricType, SeriesKey, is_stale_nan, matches_all
from mlwatch.storage.chunks import decode_chunk
from mlwatch.storage.compaction import decode_rows
from mlwatch.storage.head import I64, LogIndex, LogRecord, LogView, SortedSamples, merge, unpack_record
from mlwatch.storage.retention import ROLLUP_COLUMNS, decode_rollup
from mlwatch.storage.writer import PushGroupRecord, bits_to_float

_EMPTY_TS = np.zeros(0, np.int64)
_MATCH_CACHE = 512  # selectors whose matching series are remembered
_CHUNKS_ONE = "SELECT series_id, data FROM chunks WHERE series_id = ? AND max_ts >= ? AND min_ts <= ? ORDER BY max_ts"
_CHUNKS_MANY = (
    "SELECT series_id, data FROM chunks WHERE series_id IN (SELECT value FROM json_each(?)) "
    "AND max_ts >= ? AND min_ts <= ? ORDER BY series_id, max_ts"
)


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    key: SeriesKey
    labels: tuple[tuple[str, str], ...] = ()  # all labels with __name__, sorted, as PromQL results carry them

    @classmethod
    def of(cls, sid: int, key: SeriesKey) -> SeriesInfo:
        return cls(sid, key, tuple(sorted((k, v) for k, v in key.with_name().items() if v != "")))


@dataclass(frozen=True, slots=True)
class LatestSample:
    series: SeriesInfo
    ts: int
    value: float


class Reader:
    """Read access to a database. Thread-safe; keeps an incrementally refreshed series index."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._series: dict[int, SeriesInfo] = {}
        self._by_name: dict[str, list[SeriesInfo]] = {}
        self._max_id = 0
        self._log_lock = threading.Lock()
        self._log = LogIndex()
        self._matched: dict[tuple[Matcher, ...], list[SeriesInfo]] = {}  # valid while _max_id stays
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []  # every thread's connection, closed by close()
        self._generation = 0  # bumped by close(): connections of an older generation are closed

    def close(self) -> None:
        """Close the read connections this reader keeps (one per thread that has read); a later read
        opens a new one."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._generation += 1
        for conn in conns:
            conn.close()

    def _conn(self) -> sqlite3.Connection:
        """This thread's read connection, opened once: a new SQLite connection per query costs more than
        a small query. Outside a read transaction it holds no lock and sees every commit."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", -1) != self._generation:
            conn = None  # closed by close()
        if conn is None:
            raw = self._engine.raw_connection()
            conn = raw.driver_connection
            assert conn is not None
            raw.detach()  # ours from now on, not the pool's
            with self._lock:
                self._conns.append(conn)
                self._local.conn, self._local.generation = conn, self._generation
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; after an SQLite error it is closed, and the next read opens another."""
        try:
            yield self._conn()
        except sqlite3.Error:
            self._drop_conn()
            raise

    def _refresh(self) -> None:
        with self._connection() as conn:
            self._refresh_on(conn)

    def _refresh_on(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            rows = conn.execute("SELECT id, metric, labels FROM series WHERE id > ? ORDER BY id", (self._max_id,))
            for sid, metric, labels in rows:
                info = SeriesInfo.of(sid, SeriesKey(metric, tuple(json.loads(labels).items())))
                self._series[sid] = info
                self._by_name.setdefault(metric, []).append(info)
                self._max_id = sid
                self._matched.clear()

    def series(self, matchers: Sequence[Matcher]) -> list[SeriesInfo]:
        """Every stored series whose labels satisfy all ``matchers`` (anchored regexes, as in PromQL)."""
        self._refresh()
        key = tuple(matchers)
        with self._lock:
            hit = self._matched.get(key)
        if hit is not None:
            return list(hit)
        names = [m.value for m in matchers if m.name == "__name__" and m.op.value == "="]
        pool: Sequence[SeriesInfo]
        with self._lock:
            if names:
                pool = list(self._by_name.get(names[0], []))
            else:
                pool = list(self._series.values())
            max_id = self._max_id
        found = [s for s in pool if matches_all(matchers, s.key)]
        with self._lock:
            if self._max_id == max_id:  # no series arrived meanwhile
                if len(self._matched) >= _MATCH_CACHE:
                    self._matched.clear()
                self._matched[key] = found
        return list(found)

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[sqlite3.Connection, LogView]]:
        """A read transaction and the log as of that transaction."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn, self._log_view(conn)
            finally:
                conn.rollback()

    def _log_view(self, conn: sqlite3.Connection) -> LogView:
        """The log as this read transaction sees it: records ``lo..hi`` (ids are never reused)."""
        # Two subqueries, each a single seek: MIN and MAX in one SELECT scan the whole table.
        lo, hi = conn.execute("SELECT (SELECT MIN(id) FROM sample_log), (SELECT MAX(id) FROM sample_log)").fetchone()
        if lo is None:
            return LogView()
        with self._log_lock:
            index = self._log
            if lo >= index.lo and hi >= index.hi:  # the usual case: the log moved on, or not at all
                index.drop_before(lo)
                if hi > index.hi:
                    index.add(self._fetch(conn, index.hi + 1, hi))
                return index.view()
            # A snapshot older than the index (another thread read a newer one meanwhile).
            known = [r for r in index.records() if lo <= r.id <= hi]
        have = {r.id for r in known}
        extra = [r for r in self._fetch(conn, lo, hi) if r.id not in have] if len(have) < hi - lo + 1 else []
        records = sorted(known + extra, key=lambda r: r.id)
        return LogView((SortedSamples.of(records),)) if records else LogView()

    @staticmethod
    def _fetch(conn: sqlite3.Connection, lo: int, hi: int) -> list[LogRecord]:
        return [
            unpack_record(rid, n, bytes(data))
            for rid, n, data in conn.execute(
                "SELECT id, n, data FROM sample_log WHERE id >= ? AND id <= ? ORDER BY id", (lo, hi)
            )
        ]

    def read_range(self, series_id: int, start_ms: int, end_ms: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Timestamps and values of one series in ``[start_ms, end_ms]``, in time order, bit-exact."""
        return self.read_many([series_id], start_ms, end_ms)[series_id]

    def read_many(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int
    ) -> dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """:meth:`read_range` for many series from one snapshot: one statement for the chunks of all of
        them, and the log looked up for all of them at once (no per-series query)."""
        ids = np.unique(np.asarray(series_ids, dtype=np.int64))
        with self._snapshot() as (conn, log):
            chunked = _chunk_ranges(conn, ids, start_ms, end_ms)
            logged = _log_ranges(log, ids, start_ms, end_ms)
        out: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        for sid in ids.tolist():
            c, lg = chunked.get(sid), logged.get(sid)
            if lg is None:
                ts, bits = c if c is not None else (_EMPTY_TS, _EMPTY_TS)
            elif c is None:
                ts, bits = lg
            else:
                ts, bits = merge(c[0], c[1], lg[0], lg[1])  # the log wins
            out[sid] = (ts, bits.view(np.float64))
        return out

    def read_rollup(
        self, series_id: int, step_ms: int, start_ms: int, end_ms: int
    ) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
        """Downsampled buckets (start timestamps) in ``[start_ms, end_ms]`` with columns min, max, sum, count, last."""
        with self._snapshot() as (conn, _):
            rows = conn.execute(
                "SELECT data FROM rollups WHERE series_id = ? AND step_ms = ? AND max_ts >= ? AND min_ts <= ? "
                "ORDER BY max_ts",
                (series_id, step_ms, start_ms, end_ms),
            ).fetchall()
        parts = [decode_rollup(r[0]) for r in rows]
        if not parts:
            return _EMPTY_TS, {c: np.zeros(0) for c in ROLLUP_COLUMNS}
        ts = np.concatenate([p[0] for p in parts])
        sel = (ts >= start_ms) & (ts <= end_ms)
        return ts[sel], {c: np.concatenate([p[1][i] for p in parts])[sel] for i, c in enumerate(ROLLUP_COLUMNS)}

    def latest(self, matchers: Sequence[Matcher], at_ms: int, lookback_ms: int) -> list[LatestSample]:
        """The newest sample at or before ``at_ms`` within ``lookback_ms`` of each matching series.

        A series whose newest sample is a staleness marker has no latest value, as in PromQL.
        """
        out: list[LatestSample] = []
        matched = self.series(matchers)
        if not matched:
            return out
        with self._snapshot() as (conn, log):
            for info in matched:
                best: tuple[int, int] | None = None
                row = conn.execute(
                    "SELECT min_ts, max_ts, last_value, data FROM chunks WHERE series_id = ? AND max_ts > ? "
                    "AND min_ts <= ? ORDER BY max_ts LIMIT 1",
                    (info.id, at_ms, at_ms),
                ).fetchone()
                if row is not None:  # a chunk straddles at_ms
                    ts, bits = decode_chunk(row[3])
                    i = int(np.searchsorted(ts, at_ms, side="right")) - 1
                    best = (int(ts[i]), int(bits[i]))
                else:
                    row = conn.execute(
                        "SELECT max_ts, last_value FROM chunks WHERE series_id = ? AND max_ts <= ? "
                        "ORDER BY max_ts DESC LIMIT 1",
                        (info.id, at_ms),
                    ).fetchone()
                    if row is not None:
                        best = (int(row[0]), int(row[1]))
                lts, lbits = log.series(info.id)
                if len(lts):
                    i = int(np.searchsorted(lts, at_ms, side="right")) - 1
                    if i >= 0 and (best is None or lts[i] >= best[0]):
                        best = (int(lts[i]), int(lbits[i]))
                if best is not None and best[0] > at_ms - lookback_ms:
                    value = bits_to_float(best[1])
                    if not is_stale_nan(value):
                        out.append(LatestSample(info, best[0], value))
        return out

    def metadata(self) -> dict[str, MetricMeta]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT metric, type, help, unit FROM metric_meta").all()
        return {name: MetricMeta(MetricType(typ), help_, unit) for name, typ, help_, unit in rows}

    def state(self, key: str) -> bytes | None:
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT value FROM source_state WHERE key = ?", (key,)).first()
        return None if row is None else bytes(row[0])

    def push_groups(self) -> list[PushGroupRecord]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT group_key, labels, families, push_time, failure_time, expires_at FROM push_groups"
            ).all()
        return [PushGroupRecord(k, json.loads(lbl), bytes(fam), pt, ft, exp) for k, lbl, fam, pt, ft, exp in rows]

    def count_samples(self) -> int:
        """Samples stored (each series and timestamp once), in chunks and in the log."""
        with self._snapshot() as (conn, log):
            total = int(conn.execute("SELECT COALESCE(SUM(n), 0) FROM chunks").fetchone()[0]) + log.count()
            for sid in log.sids():
                lts, _ = log.series(sid)
                rows = conn.execute(
                    "SELECT data FROM chunks WHERE series_id = ? AND max_ts >= ? AND min_ts <= ?",
                    (sid, int(lts[0]), int(lts[-1])),
                ).fetchall()
                if rows:
                    cts, _ = decode_rows([r[0] for r in rows])
                    total -= int(np.isin(lts, cts).sum())
        return total

    def storage_stats(self) -> dict[str, int]:
        """Sizes for self-metrics and the TUI: chunks, chunk samples, log records and samples, used bytes."""
        with self._snapshot() as (conn, log):
            chunks, samples, chunk_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(length(data)), 0) FROM chunks"
            ).fetchone()
            records = conn.execute("SELECT COUNT(*) FROM sample_log").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page = conn.execute("PRAGMA page_size").fetchone()[0]
        return {
            "chunks": int(chunks), "chunk_samples": int(samples), "chunk_bytes": int(chunk_bytes),
            "log_records": int(records), "log_samples": log.count(), "used_bytes": int((pages - free) * page),
        }


def _chunk_ranges(conn: sqlite3.Connection, ids: I64, start_ms: int, end_ms: int) -> dict[int, tuple[I64, I64]]:
    """Chunk samples in ``[start_ms, end_ms]`` of each series in ``ids`` (sorted), from one statement."""
    if len(ids) == 0:
        return {}
    if len(ids) == 1:
        rows = conn.execute(_CHUNKS_ONE, (int(ids[0]), start_ms, end_ms)).fetchall()
    else:
        rows = conn.execute(_CHUNKS_MANY, (json.dumps(ids.tolist()), start_ms, end_ms)).fetchall()
    out: dict[int, tuple[I64, I64]] = {}
    for sid, group in groupby(rows, key=itemgetter(0)):
        ts, bits = decode_rows([r[1] for r in group])
        if len(ts) and (ts[0] < start_ms or ts[-1] > end_ms):
            lo, hi = np.searchsorted(ts, start_ms), np.searchsorted(ts, end_ms, side="right")
            ts, bits = ts[lo:hi], bits[lo:hi]
        if len(ts):
            out[sid] = (ts, bits)
    return out


def _log_ranges(log: LogView, ids: I64, start_ms: int, end_ms: int) -> dict[int, tuple[I64, I64]]:
    """Log samples in ``[start_ms, end_ms]`` of each series in ``ids`` (sorted); newer parts win."""
    out: dict[int, tuple[I64, I64]] = {}
    for part in log.parts:
        for sid, ts, bits in _part_ranges(part, ids, start_ms, end_ms):
            prev = out.get(sid)
            out[sid] = (ts, bits) if prev is None else merge(prev[0], prev[1], ts, bits)
    return out


def _part_ranges(part: SortedSamples, ids: I64, start_ms: int, end_ms: int) -> list[tuple[int, I64, I64]]:
    """The runs of one log part for ``ids``, each cut to the time range, located for all series at once."""
    n = len(part.uniq)
    if n == 0 or len(ids) == 0:
        return []
    pos = np.minimum(np.searchsorted(part.uniq, ids), n - 1)
    found = part.uniq[pos] == ids
    pos = pos[found]
    a, b = part.starts[pos], part.starts[pos + 1]
    cut = (part.ts[a] < start_ms) | (part.ts[b - 1] > end_ms)
    if cut.any():
        a, b = a.copy(), b.copy()
        few = np.flatnonzero(cut)
        if len(few) <= 16:  # a searchsorted each costs less than the lock-step search's set-up
            for i in few.tolist():
                x, y = int(a[i]), int(b[i])
                a[i] = x + int(np.searchsorted(part.ts[x:y], start_ms))
                b[i] = x + int(np.searchsorted(part.ts[x:y], end_ms, side="right"))
        else:
            a[cut] = _segment_search(part.ts, a[cut], b[cut], start_ms, right=False)
            b[cut] = _segment_search(part.ts, a[cut], b[cut], end_ms, right=True)
    ts, bits = part.ts, part.bits
    return [
        (sid, ts[x:y], bits[x:y])
        for sid, x, y in zip(ids[found].tolist(), a.tolist(), b.tolist(), strict=True)
        if y > x
    ]


def _segment_search(ts: I64, lo: I64, hi: I64, target: int, *, right: bool) -> I64:
    """``searchsorted(ts[lo[i]:hi[i]], target) + lo[i]`` for every segment at once (each segment sorted):
    a binary search advancing all segments together, ``log2(longest)`` numpy steps."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        v = ts[np.where(active, mid, 0)]
        go = active & ((v <= target) if right else (v < target))
        lo = np.where(go, mid + 1, lo)
        hi = np.where(active & ~go, mid, hi)
