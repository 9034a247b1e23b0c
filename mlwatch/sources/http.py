"""``type: http``: scrape one target of a Prometheus-format job, or read numbers from a JSON endpoint.

:class:`ScrapeTarget` behaves like a Prometheus scrape loop for one target: Accept header preferring
OpenMetrics, ``X-Prometheus-Scrape-Timeout-Seconds``, 200 required, a body size limit; target labels
attached with ``honor_labels`` semantics, ``metric_relabel_configs`` applied, ``sample_limit`` and
``label_limit`` failing the scrape whole, and staleness markers for series that disappear or for
everything after a failed scrape. :class:`JsonTarget` reads ``metrics`` by path from a JSON document.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from mlwatch.config import HttpSourceConfig
from mlwatch.errors import ParseError
from mlwatch.model import STALE_NAN, MetricFamily, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.base import Collection, SeriesTracker
from mlwatch.sources.fieldpath import MISSING, FieldPath, to_number
from mlwatch.sources.openmetrics import is_openmetrics, parse_openmetrics
from mlwatch.sources.relabel import Relabeler
from mlwatch.sources.textparse import TextParser

__all__ = ["JsonTarget", "ScrapeError", "ScrapeTarget", "fetch", "target_labels"]

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PARSE_IN_THREAD_BYTES = 1 << 20  # parse big bodies off the event loop so other targets keep their time
SessionGetter = Callable[[], aiohttp.ClientSession]
_MISS: Any = object()


class ScrapeError(Exception):
    """A failed fetch or parse: ``reason`` is the word counted in mlwatch_source_errors_total."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def target_labels(
    job: str, instance: str, source_labels: dict[str, str], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """``job`` (the source's name), ``instance``, then the source's ``labels``, then a targets file's labels."""
    labels = {"job": job, "instance": instance, **source_labels}
    if extra:
        labels.update(extra)
    return labels


async def fetch(session: aiohttp.ClientSession, url: str, timeout_s: float, limit: int, accept: str) -> tuple[bytes, str]:
    """GET ``url``: the body and its Content-Type; ScrapeError on anything but a complete 200 within limits."""
    headers = {"Accept": accept, "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}", "User-Agent": "mlwatch"}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise ScrapeError("http_status", f"server returned HTTP status {resp.status} {resp.reason or ''}".rstrip())
            if resp.content_length is not None and resp.content_length > limit:
                raise ScrapeError("body_size_limit", f"body size limit exceeded ({resp.content_length} > {limit} bytes)")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > limit:
                    raise ScrapeError("body_size_limit", f"body size limit exceeded (more than {limit} bytes)")
            return bytes(body), resp.headers.get("Content-Type", "")
    except TimeoutError:
        raise ScrapeError("timeout", f"context deadline exceeded (timeout {timeout_s:g}s)") from None
    except aiohttp.ClientError as exc:
        raise ScrapeError("connection", str(exc) or type(exc).__name__) from None


class _HttpTarget:
    def __init__(self, cfg: HttpSourceConfig, url: str, instance: str, session: SessionGetter,
                 extra_labels: dict[str, str] | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.job = cfg.name
        self.instance = instance
        self.scrape_url = url
        self.labels = target_labels(cfg.name, instance, cfg.labels, extra_labels)
        self.interval_ms = cfg.interval
        self.timeout_ms = cfg.timeout
        self._session = session
        self._tracker = SeriesTracker()

    def removed(self, now_ms: int) -> list[Sample]:
        return self._tracker.all_stale(now_ms)

    async def close(self) -> None:
        return None

    def _failed(self, now_ms: int, reason: str, message: str) -> Collection:
        return Collection(
            samples=self._tracker.stale_for(set(), now_ms),
            error=message,
            reason=reason,
            commit=self._tracker.accept,
        )


class ScrapeTarget(_HttpTarget):
    """One target of a Prometheus text/OpenMetrics job."""

    def __init__(self, cfg: HttpSourceConfig, url: str, instance: str, session: SessionGetter,
                 extra_labels: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(cfg, url, instance, session, extra_labels)
        self._parser = TextParser()
        self._relabel = Relabeler(cfg.metric_relabel_configs)
        # Like Prometheus' scrape cache: scraped name and labels -> stored series key (or None: dropped).
        self._cache: dict[tuple[Any, ...], tuple[SeriesKey, int] | None] = {}
        self._next_id = 0
        # The text parser returns the same (read-only) labels dict for a series line it has seen before, so
        # a second cache by object identity skips building the tuple key (most of the per-sample cost).
        self._by_id: dict[int, tuple[dict[str, str], str, tuple[SeriesKey, int] | None]] = {}
        self._live: dict[int, SeriesKey] = {}  # series (without explicit timestamps) of the last committed scrape
        self._last_size = 0

    async def collect(self, now_ms: int) -> Collection:
        cfg = self.cfg
        try:
            body, content_type = await fetch(self._session(), self.scrape_url, cfg.timeout / 1000, cfg.body_size_limit, ACCEPT)
            families = await self._parse(body, content_type)
        except ScrapeError as exc:
            return self._failed(now_ms, exc.reason, str(exc))
        except ParseError as exc:
            return self._failed(now_ms, "parse", f"parse error: {exc}")
        except UnicodeDecodeError:
            return self._failed(now_ms, "parse", "parse error: the body is not valid UTF-8")
        try:
            return self._build(families, now_ms)
        except ScrapeError as exc:
            return self._failed(now_ms, exc.reason, str(exc))

    async def _parse(self, body: bytes, content_type: str) -> list[MetricFamily]:
        parse = parse_openmetrics if is_openmetrics(content_type) else self._parser.parse
        if len(body) > PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(parse, body)
        return parse(body)

    def _series_key(self, name: str, scraped: dict[str, str]) -> SeriesKey | None:
        """The stored identity of a scraped series: target labels attached, relabelled (None: dropped)."""
        labels = dict(scraped)
        target = self.labels
        if self.cfg.honor_labels:
            for k, v in target.items():
                if not labels.get(k):
                    labels[k] = v
        else:
            for k, v in target.items():
                if k in labels:
                    scraped_value = labels.pop(k)
                    if scraped_value:
                        labels["exported_" + k] = scraped_value
                labels[k] = v
        labels["__name__"] = name
        if self._relabel:
            kept = self._relabel.apply(labels)
            if kept is None:
                return None
            labels = kept
        name = labels.pop("__name__", "")
        if not name:
            return None  # relabelled away, as Prometheus drops a series without a name
        return SeriesKey.of(name, labels)

    def _build(self, families: list[MetricFamily], now_ms: int) -> Collection:
        cfg = self.cfg
        honor_ts = cfg.honor_timestamps
        label_limit, sample_limit = cfg.label_limit, cfg.sample_limit
        samples: list[Sample] = []
        meta: dict[str, MetricMeta] = {}
        seen: set[int] = set()  # series ids (ints hash fast; a SeriesKey hashes its whole label tuple)
        scraped = 0
        cache = self._cache
        by_id = self._by_id
        live = self._live
        if len(cache) > 4 * max(self._last_size, 1000):
            # Series come and go: keep the cache near one scrape's size (never forget a live series' id).
            self._cache = cache = {i: e for i, e in cache.items() if e is None or e[1] in live}
            self._by_id.clear()
        for fam in families:
            meta[fam.name] = MetricMeta(fam.type, fam.help or "", fam.unit)
            for s in fam.samples:
                scraped += 1
                labels = s.labels
                hit = by_id.get(id(labels))
                if hit is not None and hit[0] is labels and hit[1] == s.name:
                    entry = hit[2]  # the parser handed out the same labels object as last time
                else:
                    ident = (s.name, *labels.items())
                    entry = cache.get(ident, _MISS)
                    if entry is _MISS:
                        key = self._series_key(s.name, labels)
                        self._next_id += 1
                        entry = cache[ident] = None if key is None else (key, self._next_id)
                    by_id[id(labels)] = (labels, s.name, entry)  # holding `labels` keeps its id unique
                if entry is None:
                    continue  # dropped by relabelling
                key, sid = entry
                if label_limit and len(key.labels) + 1 > label_limit:
                    raise ScrapeError("label_limit", f"label_limit exceeded ({len(key.labels) + 1} labels > {label_limit})")
                if s.timestamp_ms is not None and honor_ts:
                    samples.append(Sample(key, s.timestamp_ms, s.value))
                else:
                    samples.append(Sample(key, now_ms, s.value))
                    seen.add(sid)
        self._last_size = scraped
        if sample_limit and len(samples) > sample_limit:
            raise ScrapeError("sample_limit", f"sample_limit exceeded ({len(samples)} samples > {sample_limit})")
        kept = len(samples)
        stale = [Sample(k, now_ms, STALE_NAN) for sid, k in live.items() if sid not in seen]
        samples += stale
        if not stale and len(seen) == len(live):
            new_live = live  # the same series as last time (the usual case): no new map to build
        else:
            new_live = {e[1]: e[0] for e in cache.values() if e is not None and e[1] in seen}

        def accept() -> None:
            self._live = new_live

        return Collection(samples=samples, meta=meta, scraped=scraped, kept=kept, commit=accept)

    def removed(self, now_ms: int) -> list[Sample]:
        return [Sample(k, now_ms, STALE_NAN) for k in self._live.values()]

    def _failed(self, now_ms: int, reason: str, message: str) -> Collection:
        stale = self.removed(now_ms)

        def accept() -> None:
            self._live = {}

        return Collection(samples=stale, error=message, reason=reason, commit=accept)


class JsonTarget(_HttpTarget):
    """A JSON endpoint; each configured metric is a number read by path."""

    def __init__(self, cfg: HttpSourceConfig, session: SessionGetter) -> None:
        assert cfg.url is not None
        parts = urlsplit(cfg.url)
        super().__init__(cfg, cfg.url, parts.netloc, session)
        self._metrics = [(m, FieldPath(m.path)) for m in cfg.metrics]

    async def collect(self, now_ms: int) -> Collection:
        cfg = self.cfg
        try:
            body, _ = await fetch(self._session(), self.scrape_url, cfg.timeout / 1000, cfg.body_size_limit, "application/json")
        except ScrapeError as exc:
            return self._failed(now_ms, exc.reason, str(exc))
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._failed(now_ms, "parse", f"invalid JSON: {exc}")
        samples: list[Sample] = []
        meta: dict[str, MetricMeta] = {}
        seen: set[SeriesKey] = set()
        bad: collections.Counter[str] = collections.Counter()
        rejected: list[str] = []
        for m, path in self._metrics:
            value = path.get(doc)
            number = None if value is MISSING else to_number(value)
            if number is None:
                bad["json_path"] += 1
                what = "no value" if value is MISSING else f"not a number: {orjson.dumps(value)[:100].decode(errors='replace')}"
                rejected.append(f"{m.name}: path {m.path!r}: {what}")
                continue
            key = SeriesKey.of(m.name, {**self.labels, **m.labels})
            samples.append(Sample(key, now_ms, number))
            seen.add(key)
            meta[m.name] = MetricMeta(MetricType(m.type), m.help)
        kept = len(samples)
        samples += self._tracker.stale_for(seen, now_ms)
        return Collection(samples=samples, meta=meta, scraped=len(self._metrics), kept=kept, bad=bad,
                          rejected=rejected, commit=self._tracker.accept)  # fmt: skip
