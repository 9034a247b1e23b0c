"""The one writer: a thread fed by a queue that commits in groups.

Every producer (push handler, sources, self-metrics) submits a :class:`WriteBatch` and gets a
future that resolves only after the batch's transaction has committed, so an HTTP reply sent
after awaiting it is durable. Many batches waiting at once share one transaction (group commit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
import sqlite3
import struct
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from mlwatch.errors import StorageError, StorageUnavailable
from mlwatch.model import Clock, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.storage.database import is_transient, translate

log = logging.getLogger(__name__)

MAX_GROUP = 1024  # batches per transaction


class SeriesLimitExceeded(StorageError):
    """A batch would create more series than ``limits.max_series`` allows; it was refused whole."""


@dataclass(frozen=True, slots=True)
class PushGroupRecord:
    """The persisted content of one push group."""

    group_key: str
    labels: dict[str, str]
    families: bytes
    push_time: float
    failure_time: float
    expires_at: float | None


@dataclass(slots=True)
class WriteBatch:
    """Everything that must commit together: samples, their metadata, and producer state."""

    samples: list[Sample] = field(default_factory=list)
    meta: dict[str, MetricMeta] = field(default_factory=dict)
    state: dict[str, bytes] = field(default_factory=dict)
    push_upserts: list[PushGroupRecord] = field(default_factory=list)
    push_deletes: list[str] = field(default_factory=list)
    backfill: bool = False  # explicit-timestamp history: exempt from the out-of-order window


@dataclass(frozen=True, slots=True)
class WriteResult:
    appended: int
    out_of_order: int  # refused: older than the newest sample minus the out-of-order window


@dataclass
class WriterStats:
    commits: int = 0
    batches: int = 0
    samples: int = 0
    out_of_order: int = 0
    failures: int = 0
    series: int = 0
    last_commit_seconds: float = 0.0


_STOP = object()
_D = struct.Struct("<d")
_Q = struct.Struct("<q")


def float_to_bits(value: float) -> int:
    """SQLite turns NaN into NULL, so values are stored as their IEEE-754 bits (staleness NaN included)."""
    return _Q.unpack(_D.pack(value))[0]


def bits_to_float(bits: int) -> float:
    return _D.unpack(_Q.pack(bits))[0]


class Writer:
    """Owns the only write connection. Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        *,
        out_of_order_window_ms: int = 3600_000,
        max_series: int = 0,
        clock: Clock = time.time,
    ) -> None:
        self._engine = engine
        self.out_of_order_window_ms = out_of_order_window_ms
        self.max_series = max_series
        self._clock = clock
        self._q: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids: dict[SeriesKey, int] = {}
        self._last_ts: dict[int, int] = {}
        self._meta: dict[str, MetricMeta] = {}
        self.stats = WriterStats()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        with self._engine.connect() as conn:
            for sid, metric, labels in conn.exec_driver_sql("SELECT id, metric, labels FROM series"):
                self._ids[SeriesKey(metric, tuple(json.loads(labels).items()))] = sid
            for sid, ts in conn.exec_driver_sql("SELECT series_id, MAX(ts) FROM samples GROUP BY series_id"):
                self._last_ts[sid] = ts
            for name, typ, help_, unit in conn.exec_driver_sql("SELECT metric, type, help, unit FROM metric_meta"):
                self._meta[name] = MetricMeta(MetricType(typ), help_, unit)
        self.stats.series = len(self._ids)
        self._thread = threading.Thread(target=self._run, name="mlwatch-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # ---------------------------------------------------------------- submitting
    def submit(self, batch: WriteBatch) -> Future[WriteResult]:
        fut: Future[WriteResult] = Future()
        if self._thread is None:
            fut.set_exception(StorageUnavailable("the writer is not running"))
            return fut
        self._q.put((batch, fut))
        return fut

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Submit ``batch`` and wait until it has committed."""
        return await asyncio.wrap_future(self.submit(batch))

    def write_sync(self, batch: WriteBatch, timeout: float | None = None) -> WriteResult:
        return self.submit(batch).result(timeout)

    def known_meta(self, name: str) -> MetricMeta | None:
        return self._meta.get(name)

    @property
    def queue_depth(self) -> int:
        return self._q.qsize()

    # ---------------------------------------------------------------- the thread
    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        """Run ``fn(connection)`` on the writer thread, between group commits (maintenance jobs)."""
        fut: Future[Any] = Future()
        if self._thread is None:
            fut.set_exception(StorageUnavailable("the writer is not running"))
            return fut
        self._q.put((fn, fut))
        return fut

    def _run(self) -> None:
        raw = self._engine.raw_connection()
        self._conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        self._conn.isolation_level = None  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        try:
            stopping = False
            while not stopping:
                item = self._q.get()
                if item is _STOP:
                    break
                group = [item]
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stopping = True
                        break
                    group.append(nxt)
                self._dispatch(group)  # type: ignore[arg-type]
        finally:
            raw.close()

    def _dispatch(self, group: list[tuple[Any, Future[Any]]]) -> None:
        batches: list[tuple[WriteBatch, Future[WriteResult]]] = []
        for what, fut in group:
            if isinstance(what, WriteBatch):
                batches.append((what, fut))
                continue
            if batches:
                self._commit_group(batches)
                batches = []
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(what(self._conn))
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    fut.set_exception(translate(exc, "run maintenance") if is_transient(exc) else exc)
        if batches:
            self._commit_group(batches)

    def _commit_group(self, group: list[tuple[WriteBatch, Future[WriteResult]]]) -> None:
        live = [(b, f) for b, f in group if f.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self._apply([b for b, _ in live])
        except Exception as exc:  # noqa: BLE001 - each future receives the error
            self.stats.failures += 1
            if len(live) > 1 and not is_transient(exc) and not isinstance(exc, SeriesLimitExceeded):
                # A batch-specific error: isolate the culprit so the others still commit.
                for one in live:
                    self._commit_single(*one)
                return
            err = exc if isinstance(exc, StorageError) else translate(exc, "write to the database")
            log.warning("write failed: %s", err)
            for _, fut in live:
                fut.set_exception(err)
            return
        self.stats.commits += 1
        self.stats.batches += len(live)
        self.stats.last_commit_seconds = time.perf_counter() - started
        for (_, fut), res in zip(live, results, strict=True):
            fut.set_result(res)

    def _commit_single(self, batch: WriteBatch, fut: Future[WriteResult]) -> None:
        try:
            (res,) = self._apply([batch])
        except Exception as exc:  # noqa: BLE001
            fut.set_exception(exc if isinstance(exc, StorageError) else translate(exc, "write to the database"))
        else:
            self.stats.commits += 1
            self.stats.batches += 1
            fut.set_result(res)

    def _apply(self, batches: list[WriteBatch]) -> list[WriteResult]:
        new_ids: dict[SeriesKey, int] = {}
        new_last: dict[int, int] = {}
        results: list[WriteResult] = []
        rows: list[tuple[int, int, float]] = []
        now_ms = int(self._clock() * 1000)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                results.append(self._stage(conn, batch, new_ids, new_last, rows, now_ms))
            if rows:
                conn.executemany("INSERT OR REPLACE INTO samples (series_id, ts, value) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        # Only now, after the commit, do the caches learn about the new rows.
        self._ids.update(new_ids)
        self._last_ts.update(new_last)
        for batch in batches:
            self._meta.update(batch.meta)
        self.stats.series = len(self._ids)
        self.stats.samples += len(rows)
        self.stats.out_of_order += sum(r.out_of_order for r in results)
        return results

    def _stage(
        self,
        conn: sqlite3.Connection,
        batch: WriteBatch,
        new_ids: dict[SeriesKey, int],
        new_last: dict[int, int],
        rows: list[tuple[int, int, float]],
        now_ms: int,
    ) -> WriteResult:
        missing = {s.key for s in batch.samples if s.key not in self._ids and s.key not in new_ids}
        if missing and self.max_series and len(self._ids) + len(new_ids) + len(missing) > self.max_series:
            raise SeriesLimitExceeded(
                f"storing {len(missing)} new series would exceed limits.max_series={self.max_series}"
            )
        for key in sorted(missing):
            (sid,) = conn.execute(
                "INSERT INTO series (metric, labels, canonical, created_ms) VALUES (?, ?, ?, ?) RETURNING id",
                (key.name, json.dumps(dict(key.labels)), key.canonical(), now_ms),
            ).fetchone()
            new_ids[key] = sid
        appended = refused = 0
        window = self.out_of_order_window_ms
        for s in batch.samples:
            sid = self._ids.get(s.key) or new_ids[s.key]
            last = new_last.get(sid, self._last_ts.get(sid))
            if last is not None and s.ts < last - window and not batch.backfill:
                refused += 1
                continue
            if last is None or s.ts > last:
                new_last[sid] = s.ts
            rows.append((sid, s.ts, float_to_bits(s.value)))
            appended += 1
        if batch.meta:
            conn.executemany(
                "INSERT INTO metric_meta (metric, type, help, unit) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(metric) DO UPDATE SET type=excluded.type, help=excluded.help, unit=excluded.unit",
                [(n, m.type.value, m.help, m.unit) for n, m in batch.meta.items()],
            )
        if batch.state:
            conn.executemany(
                "INSERT INTO source_state (key, value, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_ms=excluded.updated_ms",
                [(k, v, now_ms) for k, v in batch.state.items()],
            )
        if batch.push_upserts:
            conn.executemany(
                "INSERT INTO push_groups (group_key, labels, families, push_time, failure_time, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(group_key) DO UPDATE SET labels=excluded.labels, "
                "families=excluded.families, push_time=excluded.push_time, "
                "failure_time=excluded.failure_time, expires_at=excluded.expires_at",
                [
                    (g.group_key, json.dumps(g.labels), g.families, g.push_time, g.failure_time, g.expires_at)
                    for g in batch.push_upserts
                ],
            )
        if batch.push_deletes:
            conn.executemany("DELETE FROM push_groups WHERE group_key = ?", [(k,) for k in batch.push_deletes])
        return WriteResult(appended, refused)

    def delete_before(self, cutoff_ms: int) -> Future[int]:
        """Retention for the row-per-sample layout: drop samples older than ``cutoff_ms``."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM samples WHERE ts < ?", (cutoff_ms,)).rowcount
            conn.execute("COMMIT")
            conn.execute("PRAGMA incremental_vacuum")
            return n

        return self.call(run)
