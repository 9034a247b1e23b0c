"""The source manager: builds targets from the config, schedules them, writes what they collect,
and reports every target like Prometheus does (``up``, health, ``/api/v1/targets``).

For each collection the manager adds the scrape report series (``up``, ``scrape_duration_seconds``,
``scrape_samples_scraped``, ``scrape_samples_post_metric_relabeling``) and the target's health
(JSON under ``source_state`` key ``source_health/<job>/<instance>``, listed under
``source_health_index``, so the TUI in another process can show last errors and rejected lines) to the
target's own batch, writes it, and only then lets the target advance (``Collection.commit``).
When storage is unavailable, scrape results wait in a bounded in-memory buffer (overflow is dropped
and counted) while log sources roll back and re-read later. A failing source is caught here,
logged, and shown as health; it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mlwatch.config import CommandSourceConfig, HttpSourceConfig, LogSourceConfig, SourceConfig
from mlwatch.errors import StorageError, StorageUnavailable
from mlwatch.model import (
    STALE_NAN,
    Clock,
    FamilySample,
    MetricFamily,
    MetricMeta,
    MetricType,
    Sample,
    SeriesKey,
    format_duration_ms,
    is_stale_nan,
)
from mlwatch.sources.base import HEALTH_INDEX_KEY, Collection, Health, Target, TargetHealth, health_key
from mlwatch.sources.command import CommandTarget
from mlwatch.sources.http import JsonTarget, ScrapeTarget
from mlwatch.sources.logfile import LineOperator, LogFileSource
from mlwatch.storage.writer import SeriesLimitExceeded, WriteBatch, WriteResult

__all__ = ["SourceManager", "load_targets_file"]

log = logging.getLogger(__name__)

MAX_DRAIN_CHUNKS = 64  # a log source collects at most this many chunks per tick before yielding
FLUSH_BATCHES = 256  # buffered scrape results submitted together (the writer commits them as one group)
TARGETS_FILE_CHECK_SECONDS = 5.0
REPORT_META = {
    "up": MetricMeta(MetricType.GAUGE, "1 if the last collection of the target succeeded, else 0."),
    "scrape_duration_seconds": MetricMeta(MetricType.GAUGE, "Duration of the last collection."),
    "scrape_samples_scraped": MetricMeta(MetricType.GAUGE, "Samples the target exposed (lines read, for logs)."),
    "scrape_samples_post_metric_relabeling": MetricMeta(MetricType.GAUGE, "Samples kept after relabelling."),
}


class WriterLike(Protocol):
    async def write(self, batch: WriteBatch) -> WriteResult: ...


class ReaderLike(Protocol):
    def state(self, key: str) -> bytes | None: ...


class SchedulerLike(Protocol):
    def add_job(self, func: Any, trigger: Any = None, **kwargs: Any) -> Any: ...
    def remove_job(self, job_id: str) -> None: ...


# ------------------------------------------------------------------ targets files


def load_targets_file(path: str) -> list[tuple[str, dict[str, str]]]:
    """``(host:port, labels)`` from a Prometheus ``file_sd`` YAML/JSON file (or a plain list of
    ``host:port``); ValueError naming the problem."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read targets file {path}: {exc}") from None
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ValueError(f"targets file {path}: invalid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ValueError(f"targets file {path}: expected a list of {{targets: [...], labels: {{...}}}}")  # noqa: TRY004
    out: list[tuple[str, dict[str, str]]] = []
    from mlwatch.config.sources import _target  # the same check as `targets:`

    for i, group in enumerate(doc):
        if isinstance(group, str):
            group = {"targets": [group]}
        if not isinstance(group, dict) or not isinstance(group.get("targets", []), list):
            raise ValueError(f"targets file {path}: item {i} is not {{targets: [...], labels: {{...}}}}")  # noqa: TRY004
        labels = group.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                                   for k, v in labels.items()):  # fmt: skip
            raise ValueError(f"targets file {path}: item {i}: labels must map names to strings")
        for t in group.get("targets", []):
            try:
                _target(str(t))
            except ValueError as exc:
                raise ValueError(f"targets file {path}: item {i}: {exc}") from None
            out.append((str(t), {str(k): str(v) for k, v in labels.items()}))
    return out


# ------------------------------------------------------------------ one scheduled target


@dataclass
class _Runner:
    key: str  # job id in the scheduler
    source: SourceConfig
    target: Target
    health: TargetHealth
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    latest: dict[SeriesKey, float] = field(default_factory=dict)  # for /metrics (not for scraped series)
    meta: dict[str, MetricMeta] = field(default_factory=dict)
    expose: bool = True  # False for Prometheus-format scrapes: /federate serves those


def _offset_s(key: str, interval_ms: int) -> float:
    """A fixed offset within the interval, from the target's identity (Prometheus spreads targets so)."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return (h % max(interval_ms, 1)) / 1000.0


class SourceManager:
    """Owns every source target. Build one per daemon; see the module docstring."""

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        writer: WriterLike,
        reader: ReaderLike,
        *,
        clock: Clock = time.time,
        operators_for: Callable[[LogSourceConfig], list[LineOperator]] | None = None,
        max_buffered_samples: int = 1_000_000,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self._sources = list(sources)
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._operators_for = operators_for
        self.max_buffered_samples = max_buffered_samples
        """The bound of the in-memory buffer of scrape results waiting for storage (settable on reload)."""
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._runners: dict[str, _Runner] = {}
        self._scheduler: SchedulerLike | None = None
        self._buffer: collections.deque[tuple[_Runner, WriteBatch]] = collections.deque()
        self._buffered = 0  # samples in _buffer
        self._inflight = 0  # samples of buffered results being written
        self._flush_task: asyncio.Task[None] | None = None
        self._targets_files: dict[str, tuple[float, int, list[tuple[str, dict[str, str]]]]] = {}
        self._file_errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stopping = False
        self.collector: Collector = _SourceCollector(self)

    # ---------------------------------------------------------------- building targets
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=True),
                    auto_decompress=True,
                )
        return self._session

    def _file_targets(self, src: HttpSourceConfig) -> list[tuple[str, dict[str, str]]]:
        path = src.targets_file
        if path is None:
            return []
        try:
            st = os.stat(path)
        except OSError as exc:
            cached = self._targets_files.get(path)
            self._file_error(src.name, f"targets file {path}: {exc.strerror}")
            return cached[2] if cached else []
        cached = self._targets_files.get(path)
        if cached and cached[:2] == (st.st_mtime, st.st_size):
            return cached[2]
        try:
            targets = load_targets_file(path)
        except ValueError as exc:
            self._file_error(src.name, str(exc))
            return cached[2] if cached else []
        self._targets_files[path] = (st.st_mtime, st.st_size, targets)
        return targets

    def _file_error(self, job: str, message: str) -> None:
        self._file_errors[(job, "targets_file")] += 1
        log.warning("source %s: %s (keeping the previous targets)", job, message)

    def _build(self, src: SourceConfig) -> list[tuple[str, Target, bool]]:
        """``(key, target, expose)`` for every target of a source."""
        out: list[tuple[str, Target, bool]] = []
        if isinstance(src, HttpSourceConfig):
            if src.format == "json":
                out.append((f"{src.name}|json", JsonTarget(src, self.session), True))
            elif src.url is not None:
                from urllib.parse import urlsplit

                inst = urlsplit(src.url).netloc
                out.append((f"{src.name}|{inst}|{src.url}", ScrapeTarget(src, src.url, inst, self.session), False))
            else:
                seen: set[str] = set()
                entries: list[tuple[str, dict[str, str]]] = [(t, {}) for t in src.targets]
                entries += self._file_targets(src)
                for address, extra in entries:
                    if address in seen:
                        continue
                    seen.add(address)
                    url = f"{src.scheme}://{address}{src.metrics_path}"
                    key = f"{src.name}|{address}|{sorted(extra.items())}"
                    out.append((key, ScrapeTarget(src, url, address, self.session, extra), False))
        elif isinstance(src, LogSourceConfig):
            ops = self._operators_for(src) if self._operators_for else []
            tolerance = getattr(self._writer, "future_tolerance_ms", 0)  # event times as far ahead as storage takes
            out.append((f"{src.name}|log", LogFileSource(src, ops, future_tolerance_ms=tolerance), True))
        elif isinstance(src, CommandSourceConfig):
            out.append((f"{src.name}|command", CommandTarget(src), True))
        return out

    async def _add(self, src: SourceConfig, key: str, target: Target, expose: bool) -> _Runner:
        health = TargetHealth(target.job, target.instance, src.type, target.scrape_url, dict(target.labels))
        runner = _Runner(key, src, target, health, expose=expose)
        if isinstance(target, LogFileSource):
            raw = await asyncio.to_thread(self._reader.state, target.state_key)
            target.restore(raw)
        self._runners[key] = runner
        if self._scheduler is not None:
            self._schedule(runner)
        return runner

    def _schedule(self, runner: _Runner) -> None:
        assert self._scheduler is not None
        interval = runner.target.interval_ms
        first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_offset_s(runner.key, interval))
        self._scheduler.add_job(
            self.tick, "interval", seconds=interval / 1000, args=[runner.key], id=f"source:{runner.key}",
            next_run_time=first, coalesce=True, max_instances=1, misfire_grace_time=None, replace_existing=True,
        )  # fmt: skip

    async def _remove(self, runner: _Runner) -> None:
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(f"source:{runner.key}")
        async with runner.lock:
            self._runners.pop(runner.key, None)
            now_ms = int(self._clock() * 1000)
            stale = runner.target.removed(now_ms)
            stale += [Sample(SeriesKey.of(n, runner.target.labels), now_ms, STALE_NAN) for n in REPORT_META]
            try:
                await self._writer.write(WriteBatch(samples=stale, state=self._index_state()))
            except StorageError as exc:
                log.warning("source %s: could not write staleness markers on removal: %s", runner.key, exc)
            await runner.target.close()

    # ---------------------------------------------------------------- lifecycle
    async def start(self, scheduler: SchedulerLike | None = None) -> None:
        """Build every target (log sources continue from their committed state) and schedule them."""
        self._scheduler = scheduler
        self._stopping = False
        for src in self._sources:
            for key, target, expose in self._build(src):
                await self._add(src, key, target, expose)
        if scheduler is not None:
            scheduler.add_job(
                self.sync_targets_files, "interval", seconds=TARGETS_FILE_CHECK_SECONDS, id="source:targets-files",
                coalesce=True, max_instances=1, misfire_grace_time=None, replace_existing=True,
            )  # fmt: skip

    async def stop(self) -> None:
        """Unschedule and close every target; a collection in progress finishes its current chunk first.
        Buffered scrape results are written, or dropped and counted when storage is still unavailable."""
        self._stopping = True
        if self._scheduler is not None:
            for runner in list(self._runners.values()):
                with contextlib.suppress(Exception):
                    self._scheduler.remove_job(f"source:{runner.key}")
            with contextlib.suppress(Exception):
                self._scheduler.remove_job("source:targets-files")
        for runner in list(self._runners.values()):
            async with runner.lock:
                await runner.target.close()
        await self._final_flush()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reconfigure(self, sources: Sequence[SourceConfig]) -> None:
        """Apply a new list of sources: unchanged targets keep running (and their state); removed ones
        get staleness markers; changed ones restart (log sources continue from their committed offsets)."""
        self._sources = list(sources)
        await self._reconcile()

    async def sync_targets_files(self) -> None:
        """Re-read changed ``targets_file``s and add or remove targets accordingly."""
        if any(isinstance(s, HttpSourceConfig) and s.targets_file for s in self._sources):
            await self._reconcile()

    async def _reconcile(self) -> None:
        wanted: dict[str, tuple[SourceConfig, Target, bool]] = {}
        for src in self._sources:
            for key, target, expose in self._build(src):
                wanted[key] = (src, target, expose)
        for key, runner in list(self._runners.items()):
            new = wanted.get(key)
            if new is None or new[0] != runner.source:
                await self._remove(runner)
        for key, (src, target, expose) in wanted.items():
            if key not in self._runners:
                await self._add(src, key, target, expose)
            else:
                await target.close()

    # ---------------------------------------------------------------- collecting
    async def run_once(self, job: str | None = None) -> None:
        """Collect every target (of ``job``) once, concurrently; for tests and ``mlwatch demo``."""
        keys = [k for k, r in self._runners.items() if job is None or r.target.job == job]
        await asyncio.gather(*(self.tick(k) for k in keys))
        await self.wait_flushed()

    async def tick(self, key: str) -> None:
        """One scheduled collection of one target (a log source drains up to MAX_DRAIN_CHUNKS chunks)."""
        runner = self._runners.get(key)
        if runner is None:
            return
        async with runner.lock:
            for _ in range(MAX_DRAIN_CHUNKS):
                if key not in self._runners or self._stopping:
                    return
                more = await self._collect_once(runner)
                if not more:
                    break

    async def _collect_once(self, runner: _Runner) -> bool:
        target = runner.target
        now_ms = int(self._clock() * 1000)
        started = time.perf_counter()
        timeout = target.timeout_ms / 1000 + 1.0
        try:
            if isinstance(target, LogFileSource):
                col = await target.collect(now_ms)  # bounded by its byte budget, not by a deadline
            else:
                col = await asyncio.wait_for(target.collect(now_ms), timeout)
        except TimeoutError:
            col = Collection(error=f"collection took longer than {timeout:g}s", reason="timeout")
        except Exception as exc:
            log.exception("source %s (%s) failed", target.job, target.instance)
            col = Collection(error=f"internal error: {type(exc).__name__}: {exc}", reason="internal")
        duration = time.perf_counter() - started
        self._record(runner, col, now_ms, duration)
        batch = self._batch(runner, col, now_ms, duration)
        if col.buffer_on_failure and (self._buffer or self._inflight):
            # Earlier results still wait for storage: this one waits behind them, in order, and the
            # target keeps its schedule instead of waiting for storage (a flush in the background retries).
            self._buffer_batch(runner, batch)
            col.commit()
            self._remember(runner, col)
            self._start_flush()
            return False
        try:
            await self._writer.write(batch)
        except SeriesLimitExceeded as exc:
            col.abort()
            self._fail_health(runner, "series_limit", str(exc), now_ms)
            report = self._batch(runner, Collection(error=str(exc), reason="series_limit"), now_ms, duration)
            report.samples = [s for s in report.samples if s.key.name in REPORT_META]
            with contextlib.suppress(StorageError):
                await self._writer.write(report)
            return False
        except StorageError as exc:
            if col.buffer_on_failure:
                self._buffer_batch(runner, batch)
                col.commit()
                self._remember(runner, col)
            else:
                col.abort()  # a log source reads the same lines again later: the file is the buffer
            self._storage_failed(runner, exc, now_ms)
            return False
        col.commit()
        self._remember(runner, col)
        return col.more

    def _record(self, runner: _Runner, col: Collection, now_ms: int, duration: float) -> None:
        h = runner.health
        h.last_scrape_ms = now_ms
        h.last_duration_s = duration
        h.record_bad(col.bad, col.rejected)
        if col.lost is not None:  # totals from the source's committed state: a retried batch repeats, not adds
            h.lost_bytes_total, h.lost_lines_total = col.lost
        if col.error is not None:
            self._fail_health(runner, col.reason or "error", col.error, now_ms)
        else:
            h.health = Health.UP
            h.last_error = ""
            h.samples_total += col.kept

    @staticmethod
    def _fail_health(runner: _Runner, reason: str, message: str, now_ms: int) -> None:
        h = runner.health
        h.health = Health.DOWN
        h.last_error = message
        h.last_error_ms = now_ms
        h.errors_total[reason] += 1

    def _batch(self, runner: _Runner, col: Collection, now_ms: int, duration: float) -> WriteBatch:
        labels = runner.target.labels
        up = 0.0 if col.error is not None else 1.0
        report = [
            Sample(SeriesKey.of("up", labels), now_ms, up),
            Sample(SeriesKey.of("scrape_duration_seconds", labels), now_ms, duration),
            Sample(SeriesKey.of("scrape_samples_scraped", labels), now_ms, float(col.scraped)),
            Sample(SeriesKey.of("scrape_samples_post_metric_relabeling", labels), now_ms, float(col.kept)),
        ]
        state = dict(col.state)
        state[health_key(runner.target.job, runner.target.instance)] = runner.health.to_json()
        state.update(self._index_state())
        return WriteBatch(samples=col.samples + report, meta={**REPORT_META, **col.meta}, state=state)

    def _index_state(self) -> dict[str, bytes]:
        keys = sorted(health_key(r.target.job, r.target.instance) for r in self._runners.values())
        return {HEALTH_INDEX_KEY: orjson.dumps(keys)}

    def _remember(self, runner: _Runner, col: Collection) -> None:
        """Keep the latest derived values for /metrics (JSON, logs, commands; never scraped series)."""
        runner.meta.update(col.meta)
        if not runner.expose:
            return
        latest = runner.latest
        for s in col.samples:
            if is_stale_nan(s.value):
                latest.pop(s.key, None)
            else:
                latest[s.key] = s.value

    @staticmethod
    def _storage_failed(runner: _Runner, exc: StorageError, now_ms: int) -> None:
        h = runner.health
        h.last_error = f"storage unavailable: {exc}"
        h.last_error_ms = now_ms
        h.errors_total["storage"] += 1
        log.warning("source %s (%s): storage unavailable: %s", h.job, h.instance, exc)

    @property
    def buffered_samples(self) -> int:
        """Samples of scrape results waiting in memory for storage (those being written included)."""
        return self._buffered + self._inflight

    def _buffer_batch(self, runner: _Runner, batch: WriteBatch) -> None:
        """Keep a scrape result until storage takes it."""
        self._buffer.append((runner, batch))
        self._buffered += len(batch.samples)
        self._bound()

    def _bound(self) -> None:
        """Past ``max_buffered_samples`` (those being written included) the oldest waiting results are dropped,
        counted per job in ``mlwatch_source_dropped_samples_total``; those being written are not: they may
        still commit."""
        while self._buffered + self._inflight > self.max_buffered_samples and self._buffer:
            owner, batch = self._buffer.popleft()
            self._buffered -= len(batch.samples)
            self._count_drop(owner, batch, "the buffer is full (limits.scrape_buffer_samples)")

    @staticmethod
    def _count_drop(owner: _Runner, batch: WriteBatch, why: str) -> None:
        owner.health.dropped_samples += len(batch.samples)
        log.warning("source %s (%s): dropped a scrape result of %d samples waiting for storage: %s",
                    owner.health.job, owner.health.instance, len(batch.samples), why)  # fmt: skip

    def _start_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_logged(), name="mlwatch-scrape-buffer-flush")

    async def _flush_logged(self) -> None:
        try:
            await self._flush_buffer()
        except StorageError as exc:
            now_ms = int(self._clock() * 1000)
            for owner in {id(r): r for r, _ in self._buffer}.values():
                self._storage_failed(owner, exc, now_ms)

    async def wait_flushed(self) -> None:
        """Wait for a background flush of the scrape buffer, if one runs (``run_once`` and ``stop`` do)."""
        task = self._flush_task
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def _flush_buffer(self) -> None:
        """Write the buffered results in order; those that storage could not take now go back to the front
        (StorageUnavailable is raised after), those it refuses for good (e.g. limits.max_series) are dropped
        and counted. The results are submitted together, so the writer commits them in one transaction;
        results buffered meanwhile are written by the same call.
        """
        while self._buffer:
            chunk = [self._buffer.popleft() for _ in range(min(FLUSH_BATCHES, len(self._buffer)))]
            moved = sum(len(b.samples) for _, b in chunk)
            self._buffered -= moved
            self._inflight += moved
            try:
                results = await asyncio.gather(*(self._writer.write(b) for _, b in chunk), return_exceptions=True)
            except BaseException:  # cancelled: keep them (re-writing one that committed stores nothing twice)
                self._requeue(chunk)
                raise
            finally:
                self._inflight -= moved
            retry: list[tuple[_Runner, WriteBatch]] = []
            for (owner, batch), res in zip(chunk, results, strict=True):
                if isinstance(res, StorageUnavailable):
                    retry.append((owner, batch))
                elif isinstance(res, BaseException):
                    self._count_drop(owner, batch, f"refused: {res}")
            if retry:
                self._requeue(retry)
                self._bound()
                raise next(r for r in results if isinstance(r, StorageUnavailable))
            for res in results:
                if isinstance(res, BaseException) and not isinstance(res, StorageError):
                    raise res

    def _requeue(self, items: list[tuple[_Runner, WriteBatch]]) -> None:
        self._buffer.extendleft(reversed(items))
        self._buffered += sum(len(b.samples) for _, b in items)

    async def _final_flush(self) -> None:
        """On stop: write what still waits; what storage cannot take now is dropped and counted."""
        await self.wait_flushed()
        try:
            await self._flush_buffer()
        except StorageError as exc:
            while self._buffer:
                owner, batch = self._buffer.popleft()
                self._buffered -= len(batch.samples)
                self._count_drop(owner, batch, f"stopping while storage is unavailable: {exc}")

    # ---------------------------------------------------------------- reporting
    def healths(self) -> list[TargetHealth]:
        return [r.health for r in self._runners.values()]

    def families(self) -> list[MetricFamily]:
        """What ``/metrics`` shows for sources: ``up`` of every target, and the latest value of every
        series derived from logs, JSON endpoints and commands (not series scraped from Prometheus targets)."""
        fams: dict[str, MetricFamily] = {}
        up = MetricFamily("up", MetricType.GAUGE, REPORT_META["up"].help)
        fams["up"] = up
        for r in self._runners.values():
            value = {Health.UP: 1.0, Health.DOWN: 0.0}.get(r.health.health)
            if value is not None:
                up.samples.append(FamilySample("up", dict(sorted(r.target.labels.items())), value))
            for key, v in r.latest.items():
                if key.name in REPORT_META:
                    continue
                family = _family_name(key.name, r.meta)
                meta = r.meta.get(family, MetricMeta())
                fam = fams.setdefault(family, MetricFamily(family, meta.type, meta.help or None, meta.unit))
                fam.samples.append(FamilySample(key.name, dict(key.labels), v))
        return [f for f in fams.values() if f.samples]

    def targets_data(self, state: str = "any", scrape_pool: str | None = None) -> dict[str, Any]:
        """The ``data`` of Prometheus' ``GET /api/v1/targets``."""
        active = []
        for r in sorted(self._runners.values(), key=lambda r: (r.target.job, r.target.instance)):
            if scrape_pool and r.target.job != scrape_pool:
                continue
            h = r.health
            active.append({
                "discoveredLabels": {"__address__": r.target.instance, "__scheme__": r.target.scrape_url.split(":")[0],
                                     "job": r.target.job},
                "labels": dict(sorted(r.target.labels.items())),
                "scrapePool": r.target.job,
                "scrapeUrl": r.target.scrape_url,
                "globalUrl": r.target.scrape_url,
                "lastError": h.last_error,
                "lastScrape": _rfc3339(h.last_scrape_ms) if h.last_scrape_ms else "0001-01-01T00:00:00Z",
                "lastScrapeDuration": h.last_duration_s,
                "health": h.health.value,
                "scrapeInterval": format_duration_ms(r.target.interval_ms),
                "scrapeTimeout": format_duration_ms(r.target.timeout_ms),
            })  # fmt: skip
        data: dict[str, Any] = {}
        if state in ("active", "any"):
            data["activeTargets"] = active
        if state in ("dropped", "any"):
            data["droppedTargets"] = []
        return data

    def add_routes(self, app: web.Application) -> None:
        """Mount ``GET /api/v1/targets`` (a RouteProvider for server/app.py's ``AppDeps.routes``)."""
        app.router.add_get("/api/v1/targets", self.targets_handler)

    async def targets_handler(self, request: web.Request) -> web.Response:
        """aiohttp handler for ``GET /api/v1/targets`` (``?state=active|dropped|any``, ``?scrapePool=``)."""
        state = request.query.get("state", "any").lower()
        if state not in ("active", "dropped", "any"):
            state = "any"
        body = {"status": "success", "data": self.targets_data(state, request.query.get("scrapePool") or None)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _family_name(sample_name: str, meta: dict[str, MetricMeta]) -> str:
    if sample_name in meta:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            base = sample_name[: -len(suffix)]
            m = meta.get(base)
            if m is not None and m.type in (MetricType.HISTOGRAM, MetricType.SUMMARY):
                return base
    return sample_name


def _rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _SourceCollector(Collector):
    """``mlwatch_source_*``: duration, samples and errors (by reason) of every target."""

    def __init__(self, manager: SourceManager) -> None:
        self._m = manager

    def collect(self) -> Iterable[Metric]:
        duration = GaugeMetricFamily("mlwatch_source_duration_seconds", "Duration of the last collection of a source target.",
                                     labels=["job", "instance"])  # fmt: skip
        samples = CounterMetricFamily("mlwatch_source_samples", "Samples collected by a source target.",
                                      labels=["job", "instance"])  # fmt: skip
        errors = CounterMetricFamily("mlwatch_source_errors", "Failed collections and bad input of a source, by reason.",
                                     labels=["job", "reason"])  # fmt: skip
        dropped = CounterMetricFamily("mlwatch_source_dropped_samples", "Scraped samples dropped while storage was unavailable.",
                                      labels=["job"])  # fmt: skip
        buffered = GaugeMetricFamily("mlwatch_source_buffered_samples",
                                     "Samples of scrape results waiting in memory while storage is unavailable.",
                                     value=self._m.buffered_samples)  # fmt: skip
        lost_bytes = CounterMetricFamily(
            "mlwatch_source_lost_bytes",
            "Bytes of a log file lost to truncation without a rotated copy (copytruncate): those seen but not yet "
            "read when the file shrank. Writes between the last read and the truncation cannot be seen.",
            labels=["job", "instance"])  # fmt: skip
        lost_lines = CounterMetricFamily(
            "mlwatch_source_lost_lines",
            "Lines among mlwatch_source_lost_bytes, where they could be counted: a lost partial line counts one; "
            "bytes left unscanned at the read budget count in bytes only, so this is a lower bound.",
            labels=["job", "instance"])  # fmt: skip
        by_reason: collections.Counter[tuple[str, str]] = collections.Counter(self._m._file_errors)
        by_job_dropped: collections.Counter[str] = collections.Counter()
        for h in self._m.healths():
            duration.add_metric([h.job, h.instance], h.last_duration_s)
            samples.add_metric([h.job, h.instance], h.samples_total)
            for reason, n in h.errors_total.items():
                by_reason[(h.job, reason)] += n
            by_job_dropped[h.job] += h.dropped_samples
            if h.source_type == "log":
                lost_bytes.add_metric([h.job, h.instance], h.lost_bytes_total)
                lost_lines.add_metric([h.job, h.instance], h.lost_lines_total)
        for (job, reason), n in sorted(by_reason.items()):
            errors.add_metric([job, reason], n)
        for job, n in sorted(by_job_dropped.items()):
            dropped.add_metric([job], n)
        return [duration, samples, errors, dropped, buffered, lost_bytes, lost_lines]
