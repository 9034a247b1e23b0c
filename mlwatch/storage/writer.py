"""The one writer: a thread fed by a queue that commits in groups.

Every producer (push handler, sources, self-metrics) submits a :class:`WriteBatch` and gets a
future that resolves only after the batch's transaction has committed, so an HTTP reply sent
after awaiting it is durable. Many batches waiting at once share one transaction (group commit),
and each group commit appends ONE record to the append-only ``sample_log`` (no per-sample index).

The writer also owns the head (storage/head.py: the uncompacted log records, in memory, rebuilt from
the log on start) and runs maintenance jobs between group commits, one short transaction at a time:
compaction into chunks (started by itself when the head is large or old), retention, rollups and
incremental vacuum (:meth:`Writer.maintain`, scheduled by the daemon).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine

from mlwatch.errors import StorageError, StorageUnavailable
from mlwatch.model import Clock, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.storage.compaction import CompactionBatch, compact_series
from mlwatch.storage.database import StorageStatus, is_transient, translate
from mlwatch.storage.head import I32, I64, LogRecord, SortedSamples, pack_record, unpack_record
from mlwatch.storage.retention import MaintenanceReport, RetentionPolicy, delete_chunks_before, maintenance_steps

log = logging.getLogger(__name__)

MAX_GROUP = 1024  # batches per transaction
_NONE = np.iinfo(np.int64).min  # "no sample yet" in the newest-timestamp array
STEP_SAMPLES = 20_000  # compaction work per transaction: bounds how long a queued write waits
STEP_SERIES = 500
WAIT = True  # yielded by a job that waits for a helper thread
Job = Generator[bool | None, None, Any]


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
    # More samples, all at ``at_ms``, as columns: ``at_keys[i]`` has value ``at_values[i]``. Cheaper
    # than a Sample each for producers that store many series at one time (push groups).
    at_ms: int = 0
    at_keys: list[SeriesKey] = field(default_factory=list)
    at_values: list[float] = field(default_factory=list)

    def add_at(self, ts_ms: int, keys: list[SeriesKey], values: list[float]) -> None:
        """Add samples of ``keys`` at ``ts_ms`` (one timestamp per batch for these columns)."""
        if self.at_keys and ts_ms != self.at_ms:
            raise ValueError("the columns of one WriteBatch share one timestamp")
        self.at_ms = ts_ms
        self.at_keys.extend(keys)
        self.at_values.extend(values)


@dataclass(frozen=True, slots=True)
class WriteResult:
    appended: int
    out_of_order: int  # refused: older than the newest sample minus the out-of-order window
    future: int = 0  # refused: further ahead of the clock than ``future_tolerance_ms``


class _LoopFuture(Future[WriteResult]):
    """A batch's future with an asyncio twin on ``loop``, settled by :func:`_wake` after the commit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, twin: asyncio.Future[WriteResult]) -> None:
        super().__init__()
        self.loop = loop
        self.twin = twin


def _settle(futures: list[_LoopFuture]) -> None:
    """On the loop: pass each committed (or failed) batch's outcome to its asyncio twin."""
    for fut in futures:
        if fut.twin.done():
            continue
        exc = fut.exception()
        if exc is not None:
            fut.twin.set_exception(exc)
        else:
            fut.twin.set_result(fut.result())


def _wake(futures: list[_LoopFuture]) -> None:
    """One wakeup per event loop for every settled future of a commit."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_LoopFuture]] = {}
    for fut in futures:
        by_loop.setdefault(fut.loop, []).append(fut)
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, batch)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


@dataclass
class WriterStats:
    commits: int = 0
    batches: int = 0
    samples: int = 0
    out_of_order: int = 0
    failures: int = 0
    series: int = 0
    last_commit_seconds: float = 0.0
    head_samples: int = 0  # samples in the log, not yet in chunks
    compactions: int = 0  # completed compaction cycles
    compacted_samples: int = 0  # samples written into chunks
    compaction_seconds: float = 0.0  # writer-thread time spent compacting
    compaction_failures: int = 0
    future: int = 0  # samples refused as too far ahead of the clock
    status: StorageStatus = field(default_factory=StorageStatus)  # writable or not, and why


@dataclass(frozen=True, slots=True)
class CompactionResult:
    samples: int  # samples written into chunks
    carried: int  # samples left in the head (too few to fill a chunk yet)
    trimmed_records: int


_STOP = object()
COMPRESS_FROM = 2048  # bytes of a push group's families JSON


def _pack_families(families: bytes) -> bytes:
    """A push group's families as stored: large ones zlib-compressed (their JSON repeats label names:
    21.6 kB -> 1.6 kB for 100 series, which keeps the WAL and its fsyncs small); small ones as they
    are (compressing costs more than it saves there). Readers tell them apart by the first byte."""
    return zlib.compress(families, 1) if len(families) >= COMPRESS_FROM else families

FUTURE_TOLERANCE_MS = 600_000
"""How far ahead of its clock the daemon's writer accepts a sample (Mimir's default creation grace period).
One sample from further ahead would make every later sample of its series "out of order" until the
clock caught up with it, so such samples are refused and counted instead."""
_D = struct.Struct("<d")
_Q = struct.Struct("<q")


def float_to_bits(value: float) -> int:
    """SQLite turns NaN into NULL, so values are stored as their IEEE-754 bits (staleness NaN included)."""
    return int(_Q.unpack(_D.pack(value))[0])


def bits_to_float(bits: int) -> float:
    return float(_D.unpack(_Q.pack(bits))[0])


class Writer:
    """Owns the only write connection. Start with :meth:`start`, stop with :meth:`stop`.

    ``compact_threshold`` (samples in the head) and ``compact_max_age_s`` (age of the oldest head
    sample's record) start compaction by themselves. Each compaction writes every series' samples;
    a series' last, partly filled chunk stays "open" and is re-encoded with its next samples until
    it fills a page. ``carry_limit`` > 0 instead keeps up to that many samples of partly filled
    chunks in the log (rewritten into a new log record at each compaction); measured slower
    (B1/B5), it is off by default.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        out_of_order_window_ms: int = 3600_000,
        future_tolerance_ms: int = 0,
        max_series: int = 0,
        clock: Clock = time.time,
        compact_threshold: int = 250_000,  # the head costs ~66 B of RSS per sample (writer + readers' index)
        compact_max_age_s: float = 300.0,
        carry_limit: int = 0,
    ) -> None:
        self._engine = engine
        self.out_of_order_window_ms = out_of_order_window_ms
        self.future_tolerance_ms = future_tolerance_ms  # 0: no bound
        self.max_series = max_series
        self._clock = clock
        self.compact_threshold = compact_threshold
        self.compact_max_age_s = compact_max_age_s
        self.carry_limit = carry_limit
        self._q: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids: dict[SeriesKey, int] = {}
        self._last: I64 = np.full(1024, _NONE, np.int64)
        self._meta: dict[str, MetricMeta] = {}  # as committed
        self._staged_meta: dict[str, MetricMeta] = {}  # written by the transaction in progress
        self._staged_groups: dict[str, PushGroupRecord | None] = {}  # push groups to write (None: delete)
        self._head: list[LogRecord] = []
        self._head_born: list[float] = []  # monotonic time the oldest sample of each record arrived
        self._head_samples = 0
        self._head_oldest = float("inf")
        self._carried = 0  # head samples carried over by the last compaction
        self._jobs: collections.deque[tuple[Job, Future[Any]]] = collections.deque()
        self._auto_pending = False
        self._job_waits = False  # the running job yielded WAIT: it waits on a helper thread
        self._compact_retry_at = 0.0
        self.stats = WriterStats()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Load the series index and rebuild the head from the log, then start the thread."""
        with self._engine.connect() as conn:
            for sid, metric, labels in conn.exec_driver_sql("SELECT id, metric, labels FROM series"):
                self._ids[SeriesKey(metric, tuple(json.loads(labels).items()))] = sid
            self._grow(max(self._ids.values(), default=0))
            rows = conn.exec_driver_sql("SELECT series_id, MAX(max_ts) FROM chunks GROUP BY series_id").all()
            if rows:
                arr = np.array(rows, np.int64)
                self._last[arr[:, 0]] = arr[:, 1]
            born = time.monotonic()
            for rid, n, data in conn.exec_driver_sql("SELECT id, n, data FROM sample_log ORDER BY id"):
                rec = unpack_record(rid, n, bytes(data))
                self._add_head(rec, born)
                np.maximum.at(self._last, rec.sids, rec.ts)
            for name, typ, help_, unit in conn.exec_driver_sql("SELECT metric, type, help, unit FROM metric_meta"):
                self._meta[name] = MetricMeta(MetricType(typ), help_, unit)
        self.stats.series = len(self._ids)
        self._thread = threading.Thread(target=self._run, name="mlwatch-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit everything queued so far, then stop the thread (unfinished maintenance is abandoned)."""
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _grow(self, sid: int) -> None:
        if sid >= len(self._last):
            new = np.full(max(2 * len(self._last), sid + 1024), _NONE, np.int64)
            new[: len(self._last)] = self._last
            self._last = new

    def _add_head(self, rec: LogRecord, born: float) -> None:
        self._head.append(rec)
        self._head_born.append(born)
        self._head_samples += len(rec)
        self._head_oldest = min(self._head_oldest, born)
        self.stats.head_samples = self._head_samples

    # ---------------------------------------------------------------- submitting
    def submit(self, batch: WriteBatch) -> Future[WriteResult]:
        fut: Future[WriteResult] = Future()
        if self._thread is None:
            fut.set_exception(StorageUnavailable("the writer is not running"))
            return fut
        self._q.put((batch, fut))
        return fut

    def submit_async(self, batch: WriteBatch) -> asyncio.Future[WriteResult]:
        """:meth:`submit` for the running event loop: an asyncio future, settled on the loop.

        The batches of one group commit wake their loop once, together (``asyncio.wrap_future``
        wakes it once per future: a self-pipe write each, and each write from the writer thread
        waits for the GIL while the loop runs Python, which made replies to pushes queue up).
        """
        loop = asyncio.get_running_loop()
        twin: asyncio.Future[WriteResult] = loop.create_future()
        fut = _LoopFuture(loop, twin)
        if self._thread is None:  # settled later, as a commit would be (callbacks run before the waiter)
            fut.set_exception(StorageUnavailable("the writer is not running"))
            loop.call_soon(_settle, [fut])
            return twin
        self._q.put((batch, fut))
        return twin

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Submit ``batch`` and wait until it has committed."""
        return await self.submit_async(batch)

    def write_sync(self, batch: WriteBatch, timeout: float | None = None) -> WriteResult:
        return self.submit(batch).result(timeout)

    def known_meta(self, name: str) -> MetricMeta | None:
        return self._meta.get(name)

    @property
    def queue_depth(self) -> int:
        return self._q.qsize()

    # ---------------------------------------------------------------- maintenance API
    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        """Run ``fn(connection)`` on the writer thread, between group commits (maintenance jobs)."""
        fut: Future[Any] = Future()
        if self._thread is None:
            fut.set_exception(StorageUnavailable("the writer is not running"))
            return fut
        self._q.put((fn, fut))
        return fut

    def compact(self) -> Future[CompactionResult]:
        """Compact the whole head into chunks now (partly filled chunks included) and trim the log."""
        return self._job(lambda: self._compaction(flush=True))

    def maintain(self, policy: RetentionPolicy, now_ms: int | None = None) -> Future[MaintenanceReport]:
        """Rollups, retention, the size cap and incremental vacuum, in short transactions.

        The daemon schedules this periodically (every 1-5 minutes); ingest continues between its
        transactions. Compaction runs by itself (size and age of the head), so this only compacts
        when the head holds samples that rollups are due to cover.
        """

        def job() -> Job:
            now = now_ms if now_ms is not None else int(self._clock() * 1000)
            if policy.downsample and self._head:
                # Rollups read chunks: compact first if the head holds samples they are due to cover
                # (e.g. a recent import of history); recent samples need no compaction for this.
                horizon = now - min(after for after, _ in policy.downsample)
                if min(int(r.ts.min()) for r in self._head) < horizon:
                    yield from self._compaction(flush=True)
            keys = {sid: key for key, sid in self._ids.items()}
            return (yield from maintenance_steps(self._conn, policy, keys, now))

        return self._job(job)

    def delete_before(self, cutoff_ms: int) -> Future[int]:
        """Drop every chunk whose samples are all older than ``cutoff_ms``; returns the samples dropped.

        Deletion is by whole chunks: samples older than the cutoff that share a chunk with newer
        ones stay until the whole chunk is older.
        """
        return self._job(lambda: delete_chunks_before(self._conn, cutoff_ms))

    def _job(self, make: Callable[[], Job]) -> Future[Any]:
        def start(_conn: sqlite3.Connection) -> None:
            self._jobs.append((make(), fut))

        fut: Future[Any] = Future()
        if self._thread is None:
            fut.set_exception(StorageUnavailable("the writer is not running"))
            return fut
        self._q.put((start, None))
        return fut

    # ---------------------------------------------------------------- the thread
    def _run(self) -> None:
        raw = self._engine.raw_connection()
        self._conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        self._conn.isolation_level = None  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        self._conn.execute("PRAGMA journal_size_limit = 16777216")
        try:
            stopping = False
            while not stopping:
                try:
                    if not self._jobs:
                        item = self._q.get(timeout=1.0)
                    elif self._job_waits:  # the job waits for a helper thread: wait for writes meanwhile
                        item = self._q.get(timeout=0.002)
                    else:
                        item = self._q.get_nowait()
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
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
                if not stopping:
                    self._maybe_compact()
                    self._step_job()
        finally:
            for _, fut in self._jobs:
                if not fut.done():
                    fut.set_exception(StorageUnavailable("the writer stopped"))
            self._jobs.clear()
            raw.close()

    def _step_job(self) -> None:
        if not self._jobs:
            return
        gen, fut = self._jobs[0]
        try:
            self._job_waits = next(gen) is not None
            return
        except StopIteration as done:
            self._job_waits = False
            self._jobs.popleft()
            if fut.set_running_or_notify_cancel():
                fut.set_result(done.value)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            self._job_waits = False
            self._jobs.popleft()
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            err = translate(exc, "run maintenance") if is_transient(exc) else exc
            log.warning("storage maintenance failed: %s", err)
            if fut.set_running_or_notify_cancel():
                fut.set_exception(err)

    def _maybe_compact(self) -> None:
        if self._auto_pending or not self._head or time.monotonic() < self._compact_retry_at:
            return
        too_old = time.monotonic() - self._head_oldest >= self.compact_max_age_s
        if self._head_samples - self._carried >= self.compact_threshold or too_old:
            self._auto_pending = True
            fut: Future[Any] = Future()
            fut.add_done_callback(self._compaction_done)
            self._jobs.append((self._compaction(flush=too_old), fut))

    def _compaction_done(self, fut: Future[Any]) -> None:
        self._auto_pending = False
        if fut.exception() is not None:
            self.stats.compaction_failures += 1
            self._compact_retry_at = time.monotonic() + 5.0

    def _dispatch(self, group: list[tuple[Any, Future[Any] | None]]) -> None:
        batches: list[tuple[WriteBatch, Future[WriteResult]]] = []
        for what, fut in group:
            if isinstance(what, WriteBatch):
                assert fut is not None
                batches.append((what, fut))
                continue
            if batches:
                self._commit_group(batches)
                batches = []
            if fut is None:  # a job being queued
                what(self._conn)
                continue
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
        try:
            self._commit_futures(group)
        finally:
            _wake([f for _, f in group if isinstance(f, _LoopFuture) and f.done()])

    def _commit_futures(self, group: list[tuple[WriteBatch, Future[WriteResult]]]) -> None:
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
            err = exc if isinstance(exc, StorageError) else translate(exc, "write to the database", self._engine.url)
            self.stats.status.failed(err)
            log.warning("write failed: %s", err)
            for _, fut in live:
                fut.set_exception(err)
            return
        self.stats.status.succeeded()
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

    # ---------------------------------------------------------------- one group commit
    def _apply(self, batches: list[WriteBatch]) -> list[WriteResult]:
        new_ids: dict[SeriesKey, int] = {}
        results: list[WriteResult] = []
        parts: list[tuple[I32, I64, I64]] = []
        undo: list[tuple[I32, I64]] = []  # newest-timestamp entries to restore if the commit fails
        now_ms = int(self._clock() * 1000)
        conn = self._conn
        self._staged_meta = {}
        self._staged_groups = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                results.append(self._stage(conn, batch, new_ids, parts, undo, now_ms))
            self._write_groups(conn)
            rec = None
            if parts:
                sids = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
                ts = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
                bits = np.concatenate([p[2] for p in parts]) if len(parts) > 1 else parts[0][2]
                if len(sids):
                    (rid,) = conn.execute(
                        "INSERT INTO sample_log (n, data) VALUES (?, ?) RETURNING id",
                        (len(sids), pack_record(sids, ts, bits)),
                    ).fetchone()
                    rec = LogRecord(rid, sids, ts, bits)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for idx, old in reversed(undo):
                self._last[idx] = old
            raise
        # Only now, after the commit, do the caches learn about the new rows.
        if rec is not None:
            self._add_head(rec, time.monotonic())
        self._ids.update(new_ids)
        self._meta.update(self._staged_meta)
        self.stats.series = len(self._ids)
        self.stats.samples += 0 if rec is None else len(rec)
        self.stats.out_of_order += sum(r.out_of_order for r in results)
        self.stats.future += sum(r.future for r in results)
        return results

    def _stage(
        self,
        conn: sqlite3.Connection,
        batch: WriteBatch,
        new_ids: dict[SeriesKey, int],
        parts: list[tuple[I32, I64, I64]],
        undo: list[tuple[I32, I64]],
        now_ms: int,
    ) -> WriteResult:
        samples = batch.samples
        refused = future = 0
        stamps: I64 | None = None
        if samples and self.future_tolerance_ms and not batch.backfill:  # imports store what they say they do
            stamps = np.array([s.ts for s in samples], np.int64)
            limit = now_ms + self.future_tolerance_ms
            if int(stamps.max()) > limit:
                keep = stamps <= limit
                samples = [s for s, k in zip(samples, keep.tolist(), strict=True) if k]
                future, stamps = len(keep) - len(samples), stamps[keep]
        n_at = len(batch.at_keys)
        if n_at and self.future_tolerance_ms and batch.at_ms > now_ms + self.future_tolerance_ms:
            future, n_at = future + n_at, 0
        if samples or n_at:
            keys = [s.key for s in samples]
            values = [s.value for s in samples]
            ts = stamps if stamps is not None else np.array([s.ts for s in samples], np.int64)
            if n_at:
                keys += batch.at_keys
                values += batch.at_values
                ts = np.concatenate([ts, np.full(n_at, batch.at_ms, np.int64)])
            found = list(map(self._ids.get, keys))
            sids = np.array(
                self._new_series(conn, keys, found, new_ids, now_ms) if None in found else found, np.int32
            )
            bits = np.array(values, np.float64).view(np.int64)
            undo.append((sids, self._last[sids]))
            np.maximum.at(self._last, sids, ts)
            if not batch.backfill:
                # Unsigned distance from the newest timestamp: exact even at the ends of int64.
                behind = (self._last[sids] - ts).view(np.uint64)
                if (behind > np.uint64(self.out_of_order_window_ms)).any():
                    sids, ts, bits, refused = self._refuse_old(sids, ts, bits, undo[-1][1])
            parts.append((sids, ts, bits))
        if batch.meta:
            # Only metadata that changes: pushers send the same TYPE and HELP with every push.
            staged, known = self._staged_meta, self._meta
            changed = [
                (n, m) for n, m in batch.meta.items() if (cur := staged.get(n) or known.get(n)) is not m and cur != m
            ]
            if changed:
                conn.executemany(
                    "INSERT INTO metric_meta (metric, type, help, unit) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(metric) DO UPDATE SET type=excluded.type, help=excluded.help, unit=excluded.unit",
                    [(n, m.type.value, m.help, m.unit) for n, m in changed],
                )
                staged.update(changed)
        if batch.state:
            conn.executemany(
                "INSERT INTO source_state (key, value, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_ms=excluded.updated_ms",
                [(k, v, now_ms) for k, v in batch.state.items()],
            )
        # Push groups are written once per transaction: only the last state of each counts.
        groups = self._staged_groups
        for g in batch.push_upserts:
            groups[g.group_key] = g
        for k in batch.push_deletes:
            groups[k] = None
        return WriteResult(len(samples) + n_at - refused, refused, future)

    def _write_groups(self, conn: sqlite3.Connection) -> None:
        """The push groups staged by the transaction's batches (see :func:`_pack_families`)."""
        groups = self._staged_groups
        if not groups:
            return
        upserts = [
            (g.group_key, json.dumps(g.labels), _pack_families(g.families), g.push_time, g.failure_time, g.expires_at)
            for g in groups.values()
            if g is not None
        ]
        if upserts:
            conn.executemany(
                "INSERT INTO push_groups (group_key, labels, families, push_time, failure_time, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(group_key) DO UPDATE SET labels=excluded.labels, "
                "families=excluded.families, push_time=excluded.push_time, "
                "failure_time=excluded.failure_time, expires_at=excluded.expires_at",
                upserts,
            )
        deletes = [(k,) for k, g in groups.items() if g is None]
        if deletes:
            conn.executemany("DELETE FROM push_groups WHERE group_key = ?", deletes)

    def _new_series(
        self,
        conn: sqlite3.Connection,
        keys: list[SeriesKey],
        found: list[int | None],
        new_ids: dict[SeriesKey, int],
        now_ms: int,
    ) -> list[int]:
        missing = {k for k, f in zip(keys, found, strict=True) if f is None and k not in new_ids}
        if missing and self.max_series and len(self._ids) + len(new_ids) + len(missing) > self.max_series:
            raise SeriesLimitExceeded(
                f"storing {len(missing)} new series would exceed limits.max_series={self.max_series}"
            )
        for key in sorted(missing):
            (sid,) = conn.execute(
                "INSERT INTO series (metric, labels, canonical, created_ms) VALUES (?, ?, ?, ?) RETURNING id",
                (key.name, json.dumps(dict(key.labels)), key.canonical(), now_ms),
            ).fetchone()
            if sid >= 2**31:
                raise StorageError("series ids are exhausted (2^31)")
            new_ids[key] = sid
            self._grow(sid)
        return [f if f is not None else new_ids[k] for k, f in zip(keys, found, strict=True)]

    def _refuse_old(self, sids: I32, ts: I64, bits: I64, before: I64) -> tuple[I32, I64, I64, int]:
        """The exact time-order policy, sample by sample (only when some sample may be too old)."""
        self._last[sids] = before  # undo the optimistic update, then replay in arrival order
        window = self.out_of_order_window_ms
        last = self._last
        keep = np.ones(len(sids), bool)
        for i, (sid, t) in enumerate(zip(sids.tolist(), ts.tolist(), strict=True)):
            cur = int(last[sid])
            if cur != _NONE and t < cur - window:
                keep[i] = False
            elif cur == _NONE or t > cur:
                last[sid] = t
        refused = int((~keep).sum())
        return sids[keep], ts[keep], bits[keep], refused

    # ---------------------------------------------------------------- compaction
    def _compaction(self, *, flush: bool) -> Job:
        """Compact the head's records (as of now) into chunks, a step per transaction; trim the log."""
        t0 = time.perf_counter()
        try:
            records = list(self._head)
            if not records:
                return CompactionResult(0, 0, 0)
            upto = records[-1].id
            born = min(self._head_born)
            # Sorting a large head takes a while; numpy sorts without the GIL, so sort in a helper
            # thread and keep committing writes meanwhile.
            result: list[SortedSamples] = []
            helper = threading.Thread(target=lambda: result.append(SortedSamples.of(records)), daemon=True)
            helper.start()
            self.stats.compaction_seconds += time.perf_counter() - t0
            while helper.is_alive():
                yield WAIT
            t0 = time.perf_counter()
            if not result:
                raise StorageError("sorting the head for compaction failed")
            ss = result[0]
            conn = self._conn
            total = 0
            carried: list[tuple[I32, I64, I64]] = []
            n_series = len(ss.uniq)
            i = 0
            carry_total = 0
            tails = CompactionBatch()
            while i < n_series:
                j = min(n_series, i + STEP_SERIES)
                lim = int(np.searchsorted(ss.starts, ss.starts[i] + STEP_SAMPLES, side="right")) - 1
                j = max(i + 1, min(j, lim))
                out = CompactionBatch()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for k in range(i, j):
                        lo, hi = int(ss.starts[k]), int(ss.starts[k + 1])
                        sid = int(ss.uniq[k])
                        ct, cb = compact_series(
                            conn, out, sid, ss.ts[lo:hi], ss.bits[lo:hi],
                            flush=flush or carry_total >= self.carry_limit,
                        )
                        if len(ct):
                            carried.append((np.full(len(ct), sid, np.int32), ct, cb))
                            carry_total += len(ct)
                    out.write(conn)
                    conn.execute("COMMIT")
                    tails.deferred.extend(out.deferred)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                total += out.samples
                i = j
                self.stats.compaction_seconds += time.perf_counter() - t0
                yield None
                t0 = time.perf_counter()
            # The open chunks, together (so that they share pages), a bounded number per transaction.
            while tails.deferred:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    tails.write_deferred(conn, 2000)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                self.stats.compaction_seconds += time.perf_counter() - t0
                yield None
                t0 = time.perf_counter()
            # Trim: the compacted records go; samples carried over move to one new record, minus any
            # that a newer record (written while we compacted) has replaced meanwhile.
            newer = [r for r in self._head if r.id > upto]
            carry = self._carry_record(carried, newer)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM sample_log WHERE id <= ?", (upto,))
                rec = None
                if carry is not None:
                    (rid,) = conn.execute(
                        "INSERT INTO sample_log (n, data) VALUES (?, ?) RETURNING id",
                        (len(carry[0]), pack_record(*carry)),
                    ).fetchone()
                    rec = LogRecord(rid, *carry)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            keep = [(r, b) for r, b in zip(self._head, self._head_born, strict=True) if r.id > upto]
            self._head = [r for r, _ in keep]
            self._head_born = [b for _, b in keep]
            self._head_samples = sum(len(r) for r in self._head)
            self._head_oldest = min(self._head_born, default=float("inf"))
            self._carried = 0
            if rec is not None:
                self._add_head(rec, born)  # newest by id, oldest by age
                self._carried = len(rec)
            self.stats.head_samples = self._head_samples
            self.stats.compactions += 1
            self.stats.compacted_samples += total
            return CompactionResult(total, 0 if carry is None else len(carry[0]), len(records))
        finally:
            self.stats.compaction_seconds += time.perf_counter() - t0

    @staticmethod
    def _carry_record(carried: list[tuple[I32, I64, I64]], newer: list[LogRecord]) -> tuple[I32, I64, I64] | None:
        if not carried:
            return None
        sids = np.concatenate([c[0] for c in carried])
        ts = np.concatenate([c[1] for c in carried])
        bits = np.concatenate([c[2] for c in carried])
        if newer:
            nsids = np.concatenate([r.sids for r in newer])
            nts = np.concatenate([r.ts for r in newer])
            all_s = np.concatenate([sids, nsids])
            all_t = np.concatenate([ts, nts])
            flag = np.concatenate([np.zeros(len(sids), np.int8), np.ones(len(nsids), np.int8)])
            pos = np.concatenate([np.arange(len(sids)), np.full(len(nsids), -1)])
            order = np.lexsort((flag, all_t, all_s))
            s_, t_, f_ = all_s[order], all_t[order], flag[order]
            dup = np.zeros(len(order), bool)
            dup[:-1] = (s_[1:] == s_[:-1]) & (t_[1:] == t_[:-1]) & (f_[:-1] == 0) & (f_[1:] == 1)
            if dup.any():
                keep = np.ones(len(sids), bool)
                keep[pos[order][dup]] = False
                sids, ts, bits = sids[keep], ts[keep], bits[keep]
        return (sids, ts, bits) if len(sids) else None
