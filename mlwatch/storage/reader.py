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

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine

from mlwatch.model import Matcher, MetricMeta, MetricType, SeriesKey, is_stale_nan, matches_all
from mlwatch.storage.chunks import decode_chunk
from mlwatch.storage.compaction import decode_rows
from mlwatch.storage.head import LogIndex, LogRecord, LogView, SortedSamples, merge, unpack_record
from mlwatch.storage.retention import ROLLUP_COLUMNS, decode_rollup
from mlwatch.storage.writer import PushGroupRecord, bits_to_float

_EMPTY_TS = np.zeros(0, np.int64)


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    key: SeriesKey


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

    def _refresh(self) -> None:
        with self._lock, self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, metric, labels FROM series WHERE id > ? ORDER BY id", (self._max_id,)
            ).all()
            for sid, metric, labels in rows:
                info = SeriesInfo(sid, SeriesKey(metric, tuple(json.loads(labels).items())))
                self._series[sid] = info
                self._by_name.setdefault(metric, []).append(info)
                self._max_id = sid

    def series(self, matchers: Sequence[Matcher]) -> list[SeriesInfo]:
        """Every stored series whose labels satisfy all ``matchers`` (anchored regexes, as in PromQL)."""
        self._refresh()
        names = [m.value for m in matchers if m.name == "__name__" and m.op.value == "="]
        pool: Sequence[SeriesInfo]
        if names:
            pool = self._by_name.get(names[0], [])
        else:
            pool = list(self._series.values())
        return [s for s in pool if matches_all(matchers, s.key)]

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[sqlite3.Connection, LogView]]:
        """A read transaction and the log as of that transaction."""
        raw = self._engine.raw_connection()
        try:
            conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            conn.execute("BEGIN")
            try:
                yield conn, self._log_view(conn)
            finally:
                conn.rollback()
        finally:
            raw.close()

    def _log_view(self, conn: sqlite3.Connection) -> LogView:
        """The log as this read transaction sees it: records ``lo..hi`` (ids are never reused)."""
        lo, hi = conn.execute("SELECT MIN(id), MAX(id) FROM sample_log").fetchone()
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

    @staticmethod
    def _range(
        conn: sqlite3.Connection, log: LogView, series_id: int, start_ms: int, end_ms: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        rows = conn.execute(
            "SELECT data FROM chunks WHERE series_id = ? AND max_ts >= ? AND min_ts <= ? ORDER BY max_ts",
            (series_id, start_ms, end_ms),
        ).fetchall()
        ts, bits = decode_rows([r[0] for r in rows])
        if len(ts) and (ts[0] < start_ms or ts[-1] > end_ms):
            lo, hi = np.searchsorted(ts, start_ms), np.searchsorted(ts, end_ms, side="right")
            ts, bits = ts[lo:hi], bits[lo:hi]
        lts, lbits = log.series(series_id)
        if len(lts):
            lo, hi = np.searchsorted(lts, start_ms), np.searchsorted(lts, end_ms, side="right")
            ts, bits = merge(ts, bits, lts[lo:hi], lbits[lo:hi])
        return ts, bits

    def read_range(self, series_id: int, start_ms: int, end_ms: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Timestamps and values of one series in ``[start_ms, end_ms]``, in time order, bit-exact."""
        with self._snapshot() as (conn, log):
            ts, bits = self._range(conn, log, series_id, start_ms, end_ms)
        return np.ascontiguousarray(ts), np.ascontiguousarray(bits).view(np.float64)

    def read_many(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int
    ) -> dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """:meth:`read_range` for many series from one snapshot (one connection, one transaction)."""
        out = {}
        with self._snapshot() as (conn, log):
            for sid in series_ids:
                ts, bits = self._range(conn, log, sid, start_ms, end_ms)
                out[sid] = (np.ascontiguousarray(ts), np.ascontiguousarray(bits).view(np.float64))
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
