"""The Pushgateway-compatible HTTP API: ``/metrics/job/...`` and Pushgateway's ``/api/v1``.

Status codes are Pushgateway 1.5.1's (checked against the binary), plus what durability needs:

=====================================  ======  ==========================================
request                                status  body
=====================================  ======  ==========================================
PUT/POST accepted (and committed)      200     empty
DELETE (group or not)                  202     empty
PUT /api/v1/admin/wipe                 202     empty
no job in the path                     404     ``404 page not found``
bad path, body or consistency          400     the problem, e.g. ``text format parsing
                                               error in line 2: ...`` (the line is named)
body over max_body_bytes (also         413     the limit
after gzip decompression)
storage locked, read-only or full      503     the cause; ``Retry-After: 5``; nothing stored
other storage failure                  500     the cause; nothing stored
series limit (limits.max_series)       400     the limit; nothing stored
=====================================  ======  ==========================================

A push that would exceed ``limits.max_series`` is refused whole with **400**, as Cortex and
Mimir answer a remote write over a per-tenant series limit: the push itself is what must change,
and a 429 or 5xx would make clients retry the same push forever. It is counted in
``mlwatch_pushes_total{outcome="series_limit"}``.

Bodies are text format 0.0.4 unless the Content-Type is delimited protobuf; ``Content-Encoding:
gzip`` is accepted (aiohttp may already have inflated the stream; either way the size bound
applies to the inflated body). ``?ttl=<duration>`` (mlwatch extension) retires the group that
long after this push; ``ttl=0s`` keeps it despite ``push.default_ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlwatch import __version__
from mlwatch.errors import ParseError, PushError, StorageError, StorageUnavailable
from mlwatch.model import FamilySample, MetricFamily, MetricType, format_duration_ms, parse_duration_ms
from mlwatch.sources.protoparse import BodyTooLarge, gunzip_bounded, is_protobuf, parse_protobuf
from mlwatch.sources.push import (
    PUSH_FAILURE_TIME,
    PUSH_FAILURE_TIME_HELP,
    PUSH_TIME,
    PUSH_TIME_HELP,
    GroupNotFound,
    PushGroup,
    PushSource,
    PushStats,
    parse_grouping_path,
)
from mlwatch.sources.pushtext import BodyTemplates
from mlwatch.sources.textparse import TextParser, go_float, parse_go_float
from mlwatch.storage.writer import PushGroupRecord, SeriesLimitExceeded, Writer

__all__ = ["PushService", "api_metrics", "rfc3339"]

RETRY_AFTER_SECONDS = 5
_GZIP_MAGIC = b"\x1f\x8b"


def _unavailable(exc: StorageUnavailable) -> web.Response:
    return web.Response(
        status=503, text=f"storage unavailable, nothing stored; retry later: {exc}\n",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _describe(exc: ParseError, protobuf: bool) -> str:
    if exc.message.startswith(("invalid gzip body", "cannot read the body")):
        return exc.message
    if protobuf:
        return f"protobuf parsing error: {exc.message}"
    if exc.line:
        return f"text format parsing error in line {exc.line}: {exc.message}"
    return f"text format parsing error: {exc.message}"


class PushService(Collector):
    """Push groups behind Pushgateway's HTTP API; also a prometheus_client collector of its counters."""

    def __init__(
        self,
        writer: Writer,
        *,
        sample_interval_ms: int,
        accept_timestamps: bool,
        default_ttl_ms: int | None,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        declared_type: Callable[[str], MetricType | None] = lambda _name: None,
    ) -> None:
        """``declared_type(name)``: the type the config's sources give a metric name, if any
        (e.g. ``{d.name: d.type for d in config.metric_declarations()}.get``); pushes of another
        type are refused like a conflict between groups."""
        self.source = PushSource(writer, accept_timestamps=accept_timestamps, default_ttl_ms=default_ttl_ms,
                                 clock=clock, declared_type=declared_type)
        self.sample_interval_ms = sample_interval_ms
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._started = clock()
        # Pushers send the same series over and over: one parser keeps their parsed form (bounded).
        self._text = TextParser(cache_limit=100_000)
        # ... and mostly the same body with new values: only those are parsed then.
        self._templates = BodyTemplates()

    # ---------------------------------------------------------------- lifecycle
    def restore(self, records: list[PushGroupRecord]) -> None:
        """Load the groups a previous run persisted (``Reader.push_groups()``), once at start."""
        self.source.restore(records)

    def reconfigure(
        self, *, sample_interval_ms: int, accept_timestamps: bool, default_ttl_ms: int | None, max_body_bytes: int,
        declared_type: Callable[[str], MetricType | None] | None = None,
    ) -> None:
        """Apply a reloaded config; existing groups keep their expiry until their next push."""
        if declared_type is not None:
            self.source.declared_type = declared_type
        self.sample_interval_ms = sample_interval_ms
        self.source.accept_timestamps = accept_timestamps
        self.source.default_ttl_ms = default_ttl_ms
        self.max_body_bytes = max_body_bytes

    async def resample(self) -> None:
        """Store every group's current values now and retire expired groups (every sample_interval)."""
        await self.source.resample()

    def families(self) -> list[MetricFamily]:
        """What ``/metrics`` shows for push groups (push_time_seconds ... included), normalised."""
        return self.source.families()

    # ---------------------------------------------------------------- self-metrics
    @property
    def groups(self) -> int:
        """Push groups currently held (committed)."""
        return len(self.source.groups)

    @property
    def stats(self) -> PushStats:
        """Pushes by (method, outcome), errors, expired groups: also exported by :meth:`collect`."""
        return self.source.stats

    def collect(self) -> Iterator[Metric]:
        stats = self.source.stats
        pushes = CounterMetricFamily(
            "mlwatch_pushes", "Push API requests by method and outcome.", labels=["method", "outcome"]
        )
        for (method, outcome), n in sorted(stats.pushes.items()):
            pushes.add_metric([method, outcome], n)
        yield pushes
        yield CounterMetricFamily("mlwatch_push_errors", "Push API requests that failed.", value=stats.errors)
        yield CounterMetricFamily(
            "mlwatch_push_expired_groups", "Push groups retired by their TTL.", value=stats.expired_groups
        )
        yield CounterMetricFamily(
            "mlwatch_push_unreadable_groups", "Stored push group states that could not be read at start-up (dropped).",
            value=stats.unreadable_groups,
        )
        yield GaugeMetricFamily("mlwatch_push_groups", "Push groups currently held.", value=self.groups)

    # ---------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/metrics/job/", "/metrics/job@base64/"):
            path = prefix + "{rest:.*}"
            app.router.add_route("PUT", path, self._put)
            app.router.add_route("POST", path, self._post)
            app.router.add_route("DELETE", path, self._delete)
        app.router.add_get("/api/v1/metrics", self._api_metrics)
        app.router.add_get("/api/v1/status", self._api_status)
        app.router.add_put("/api/v1/admin/wipe", self._wipe)

    @staticmethod
    def _grouping(request: web.Request) -> dict[str, str]:
        head = "job@base64" if request.path.startswith("/metrics/job@base64/") else "job"
        try:
            return parse_grouping_path(f"{head}/{request.match_info['rest']}")
        except GroupNotFound:
            raise web.HTTPNotFound(text="404 page not found\n") from None
        except PushError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None

    @staticmethod
    def _ttl(request: web.Request) -> int | None:
        raw = request.query.get("ttl")
        if raw is None:
            return None
        try:
            return parse_duration_ms(raw)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"invalid ttl: {exc}\n") from None

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"body larger than max_body_bytes={limit}")
        data = bytearray()
        try:
            async for chunk in request.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise BodyTooLarge(f"body larger than max_body_bytes={limit}")
        except web.RequestPayloadError as exc:  # e.g. aiohttp inflates gzip itself and failed doing so
            raise ParseError(f"cannot read the body: {exc.__cause__ or exc}") from None
        body = bytes(data)
        if request.headers.get("Content-Encoding", "").strip().lower() == "gzip" and body[:2] == _GZIP_MAGIC:
            body = gunzip_bounded(body, limit)
        return body

    async def _put(self, request: web.Request) -> web.Response:
        return await self._push(request, replace=True)

    async def _post(self, request: web.Request) -> web.Response:
        return await self._push(request, replace=False)

    async def _push(self, request: web.Request, *, replace: bool) -> web.Response:
        method = "PUT" if replace else "POST"
        stats = self.source.stats
        try:
            grouping = self._grouping(request)
            ttl = self._ttl(request)
        except web.HTTPException:
            stats.count(method, "invalid")
            raise
        protobuf = is_protobuf(request.headers.get("Content-Type"))
        families: list[MetricFamily] | Exception
        try:
            body = await self._read_body(request)
            families = parse_protobuf(body) if protobuf else self._parse_text(request.path, body)
        except BodyTooLarge as exc:
            stats.count(method, "too_large")
            return web.Response(status=413, text=f"{exc.message}\n")
        except ParseError as exc:  # a body (or its gzip layer) that does not parse: still a failed push
            families = ParseError(_describe(exc, protobuf))
        try:
            await self.source.push(grouping, families, replace=replace, ttl_ms=ttl)
        except (ParseError, PushError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        except SeriesLimitExceeded as exc:
            return web.Response(status=400, text=f"push refused whole: {exc}\n")
        except StorageUnavailable as exc:
            return _unavailable(exc)
        except StorageError as exc:
            return web.Response(status=500, text=f"storage error, nothing stored: {exc}\n")
        return web.Response(status=200)

    def _parse_text(self, path: str, body: bytes) -> list[MetricFamily]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._text.parse(body)  # which names the line
        families = self._templates.parse(path, text)
        if families is None:
            families = self._text.parse(text)
            self._templates.learn(path, text, families)
        return families

    async def _delete(self, request: web.Request) -> web.Response:
        try:
            grouping = self._grouping(request)
        except web.HTTPException:
            self.source.stats.count("DELETE", "invalid")
            raise
        try:
            await self.source.delete(grouping)
        except StorageUnavailable as exc:
            return _unavailable(exc)
        except StorageError as exc:
            return web.Response(status=500, text=f"storage error, nothing deleted: {exc}\n")
        return web.Response(status=202)

    async def _wipe(self, _request: web.Request) -> web.Response:
        try:
            await self.source.wipe()
        except StorageUnavailable as exc:
            return _unavailable(exc)
        except StorageError as exc:
            return web.Response(status=500, text=f"storage error, nothing deleted: {exc}\n")
        return web.Response(status=202)

    async def _api_metrics(self, _request: web.Request) -> web.Response:
        return self._json({"status": "success", "data": api_metrics(self.source.groups)})

    async def _api_status(self, _request: web.Request) -> web.Response:
        ttl = self.source.default_ttl_ms
        data = {
            "build_information": {
                "branch": "", "buildDate": "", "buildUser": "", "goVersion": "",
                "revision": "", "version": __version__,
            },
            "flags": {
                "push.accept_timestamps": str(self.source.accept_timestamps).lower(),
                "push.default_ttl": format_duration_ms(ttl) if ttl else "",
                "push.sample_interval": format_duration_ms(self.sample_interval_ms),
                "server.max_body_bytes": str(self.max_body_bytes),
            },
            "start_time": rfc3339(self._started),
        }
        return self._json({"status": "success", "data": data})

    @staticmethod
    def _json(payload: dict[str, Any]) -> web.Response:
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


# ---------------------------------------------------------------- Pushgateway's JSON API


def rfc3339(t: float) -> str:
    """Go's time.Time JSON form (RFC 3339 with nanoseconds, trailing zeros trimmed), in UTC."""
    ns = round(t * 1e9)
    sec, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def api_metrics(groups: Mapping[str, PushGroup]) -> list[dict[str, Any]]:
    """The ``data`` of Pushgateway's ``GET /api/v1/metrics``, groups sorted by key."""
    out = []
    for key in sorted(groups):
        g = groups[key]
        entry: dict[str, Any] = {"labels": dict(g.labels), "last_push_successful": g.failure_time <= g.push_time}
        labels = g.exposed_labels
        for name, fam, t in [
            *((n, f, g.family_times.get(n, g.push_time)) for n, f in g.families.items()),
            (PUSH_TIME, MetricFamily(PUSH_TIME, MetricType.GAUGE, PUSH_TIME_HELP,
                                     samples=[FamilySample(PUSH_TIME, labels, g.push_time)]),
             g.family_times.get(PUSH_TIME, g.push_time)),
            (PUSH_FAILURE_TIME, MetricFamily(PUSH_FAILURE_TIME, MetricType.GAUGE, PUSH_FAILURE_TIME_HELP,
                                             samples=[FamilySample(PUSH_FAILURE_TIME, labels, g.failure_time)]),
             g.family_times.get(PUSH_FAILURE_TIME, g.push_time)),
        ]:
            item: dict[str, Any] = {"time_stamp": rfc3339(t), "type": fam.type.name}
            if fam.help:
                item["help"] = fam.help
            item["metrics"] = _api_metrics(fam)
            entry[name] = item
        out.append(dict(sorted(entry.items())))  # Go marshals maps with sorted keys
    return out


def _api_metrics(fam: MetricFamily) -> list[dict[str, Any]]:
    """Pushgateway's JSON form of one family's series (maps with sorted keys, values as strings)."""
    if fam.type is not MetricType.HISTOGRAM and fam.type is not MetricType.SUMMARY:
        return [{"labels": dict(sorted(s.labels.items())), "value": go_float(s.value)} for s in fam.samples]
    hist = fam.type is MetricType.HISTOGRAM
    special = "le" if hist else "quantile"
    out: list[dict[str, Any]] = []
    parts: dict[str, str] = {}
    total = 0.0
    for s in fam.samples:
        if s.name == fam.name + "_sum":
            total = s.value
        elif s.name == fam.name + "_count":
            item = {
                "buckets" if hist else "quantiles": dict(sorted(parts.items())),
                "count": str(int(s.value)),
                "labels": dict(sorted(s.labels.items())),
                "sum": go_float(total),
            }
            out.append(dict(sorted(item.items())))
            parts = {}
        else:
            bound = go_float(parse_go_float(s.labels[special]))
            parts[bound] = str(int(s.value)) if hist else go_float(s.value)
    return out
