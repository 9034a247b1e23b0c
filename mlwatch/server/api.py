"""The Prometheus HTTP API (``/api/v1/...``): queries, series, labels, metadata, build info, import.

Same JSON, error shapes and status codes as Prometheus 2.x, so Grafana's Prometheus data source and
``promtool query`` work unchanged: ``bad_data`` 400 for bad parameters and expressions, ``execution``
422 for queries that fail to evaluate, ``timeout`` 503. GET and form POST are both accepted.
Queries run in a worker thread, so a long query never stalls pushes.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mlwatch import __version__
from mlwatch.errors import MlwatchError, QueryError, StorageUnavailable
from mlwatch.model import LABEL_NAME_RE, Matcher
from mlwatch.promql.engine import Engine, EngineOptions
from mlwatch.promql.errors import BadQuery, error_type
from mlwatch.promql.jsonfmt import error_body, success_body
from mlwatch.promql.params import parse_step, parse_time
from mlwatch.promql.selector import parse_selector
from mlwatch.storage.reader import Reader, SeriesInfo

IntSetting = int | Callable[[], int]
JSON = "application/json"


def _get(setting: IntSetting) -> int:
    return setting() if callable(setting) else setting


def _ok(data: Any) -> web.Response:
    return web.Response(text=json.dumps({"status": "success", "data": data}, ensure_ascii=False,
                                        separators=(",", ":")), content_type=JSON)


def _error(kind: str, message: str, status: int) -> web.Response:
    return web.Response(text=error_body(kind, message), status=status, content_type=JSON)


def _bad(message: str) -> web.Response:
    return _error("bad_data", message, 400)


class PrometheusApi:
    """Routes of the Prometheus HTTP API over a storage reader (and, for imports, the writer)."""

    def __init__(self, reader: Reader, *, lookback_ms: IntSetting = 300_000, query_timeout_ms: IntSetting = 30_000,
                 query_max_samples: IntSetting = 50_000_000, clock: Callable[[], float] = time.time,
                 writer: Any = None, retention_ms: IntSetting | None = None) -> None:
        self.reader = reader
        self.lookback_ms = lookback_ms
        self.query_timeout_ms = query_timeout_ms
        self.query_max_samples = query_max_samples
        self.clock = clock
        self.writer = writer
        self.retention_ms = retention_ms
        self.started = clock()

    def engine(self, timeout_ms: int | None = None) -> Engine:
        opts = EngineOptions(lookback_ms=_get(self.lookback_ms), timeout_ms=timeout_ms or _get(self.query_timeout_ms),
                             max_samples=_get(self.query_max_samples))
        return Engine(self.reader, opts, self.clock)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for path, handler in (
            ("/api/v1/query", self.query),
            ("/api/v1/query_range", self.query_range),
            ("/api/v1/series", self.series),
            ("/api/v1/labels", self.labels),
            ("/api/v1/query_exemplars", self.exemplars),
        ):
            r.add_get(path, handler)
            r.add_post(path, handler)
        r.add_get("/api/v1/label/{name}/values", self.label_values)
        r.add_get("/api/v1/metadata", self.metadata)
        r.add_get("/api/v1/status/buildinfo", self.buildinfo)
        r.add_post("/api/v1/import", self.import_)

    # ------------------------------------------------------------ parameters
    @staticmethod
    async def _params(request: web.Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query.items():
            out.setdefault(k, []).append(v)
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            for k, fv in form.items():
                out.setdefault(k, []).append(str(fv))
        return out

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def _one(params: dict[str, list[str]], name: str) -> str | None:
        vals = params.get(name)
        return vals[0] if vals else None

    def _time(self, params: dict[str, list[str]], name: str, default: int) -> int:
        text = self._one(params, name)
        if text is None or text == "":
            return default
        try:
            return parse_time(text)
        except BadQuery as exc:
            raise BadQuery(f'invalid parameter "{name}": {exc}') from None

    def _timeout(self, params: dict[str, list[str]]) -> int | None:
        text = self._one(params, "timeout")
        if not text:
            return None
        try:
            ms = parse_step(text)
        except BadQuery as exc:
            raise BadQuery(f'invalid parameter "timeout": {exc}') from None
        return min(ms, _get(self.query_timeout_ms))

    async def _run(self, fn: Callable[[], Any]) -> web.Response:
        try:
            text = await asyncio.to_thread(lambda: success_body(fn()))  # formatting off the event loop too
        except QueryError as exc:
            kind, status = error_type(exc)
            return _error(kind, str(exc), status)
        except StorageUnavailable as exc:
            return _error("unavailable", str(exc), 503)
        return web.Response(text=text, content_type=JSON)

    # ------------------------------------------------------------ queries
    async def query(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        expr = self._one(params, "query")
        try:
            t = self._time(params, "time", self._now_ms())
            timeout = self._timeout(params)
        except BadQuery as exc:
            return _bad(str(exc))
        if not expr:
            return _bad('invalid parameter "query": parse error: no expression found in input')
        engine = self.engine(timeout)
        return await self._run(lambda: self._param_errors(lambda: engine.instant(expr, t)))

    async def query_range(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        expr = self._one(params, "query")
        try:
            for name in ("start", "end"):
                if not self._one(params, name):
                    raise BadQuery(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
            start = self._time(params, "start", 0)
            end = self._time(params, "end", 0)
            if end < start:
                raise BadQuery('invalid parameter "end": end timestamp must not be before start time')
            step_text = self._one(params, "step") or ""
            try:
                step = parse_step(step_text)
            except BadQuery as exc:
                raise BadQuery(f'invalid parameter "step": {exc}') from None
            if step <= 0:
                raise BadQuery('invalid parameter "step": zero or negative query resolution step widths are not '
                               "accepted. Try a positive integer")
            if (end - start) / step > 11000:
                raise BadQuery("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
                               "query resolution (?step=XX)")
            timeout = self._timeout(params)
        except BadQuery as exc:
            return _bad(str(exc))
        if not expr:
            return _bad('invalid parameter "query": parse error: no expression found in input')
        engine = self.engine(timeout)
        return await self._run(lambda: self._param_errors(lambda: engine.range(expr, start, end, step)))

    @staticmethod
    def _param_errors(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BadQuery as exc:
            text = str(exc)
            raise BadQuery(text if text.startswith("invalid parameter") else f'invalid parameter "query": {text}') \
                from None

    # ------------------------------------------------------------ series and labels
    def _select(self, params: dict[str, list[str]], *, required: bool) -> list[SeriesInfo]:
        matches = params.get("match[]", [])
        if required and not matches:
            raise BadQuery("no match[] parameter provided")
        start = self._time(params, "start", -(2**62))
        end = self._time(params, "end", 2**62)
        found: dict[int, SeriesInfo] = {}
        if matches:
            for text in matches:
                matchers: list[Matcher] = parse_selector(text)
                if all(m.matches("") for m in matchers):
                    raise BadQuery("match[] must contain at least one non-empty matcher")
                for info in self.reader.series(matchers):
                    found[info.id] = info
        else:
            for info in self.reader.series([]):
                found[info.id] = info
        infos = list(found.values())
        if start > -(2**62) or end < 2**62:
            data = self.reader.read_many([i.id for i in infos], start, end) if infos else {}
            infos = [i for i in infos if len(data[i.id][0])]
        return infos

    async def series(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            infos = await asyncio.to_thread(self._select, params, required=True)
        except QueryError as exc:
            return _bad(str(exc))
        out = sorted((i.key.with_name() for i in infos), key=lambda d: sorted(d.items()))
        return _ok(out)

    async def labels(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            infos = await asyncio.to_thread(self._select, params, required=False)
        except QueryError as exc:
            return _bad(str(exc))
        names = {"__name__"} if infos else set()
        for i in infos:
            names.update(k for k, _ in i.key.labels)
        return _ok(sorted(names))

    async def label_values(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != "__name__" and not LABEL_NAME_RE.match(name):
            return _bad(f"invalid label name: {name!r}")
        params = await self._params(request)
        try:
            infos = await asyncio.to_thread(self._select, params, required=False)
        except QueryError as exc:
            return _bad(str(exc))
        values = {i.key.with_name().get(name, "") for i in infos} - {""}
        return _ok(sorted(values))

    async def metadata(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        metric = self._one(params, "metric")
        limit_text = self._one(params, "limit")
        try:
            limit = int(limit_text) if limit_text else -1
        except ValueError:
            return _bad('invalid parameter "limit": limit must be a number')
        meta = await asyncio.to_thread(self.reader.metadata)
        out: dict[str, list[dict[str, str]]] = {}
        for name in sorted(meta):
            if metric and name != metric:
                continue
            if 0 <= limit <= len(out):
                break
            m = meta[name]
            out[name] = [{"type": m.type.value if m.type.value != "untyped" else "unknown", "help": m.help,
                          "unit": m.unit}]
        return _ok(out)

    async def exemplars(self, request: web.Request) -> web.Response:
        return _ok([])

    async def buildinfo(self, request: web.Request) -> web.Response:
        return _ok({"version": __version__, "revision": "", "branch": "", "buildUser": "mlwatch", "buildDate": "",
                    "goVersion": f"python{platform.python_version()}"})

    # ------------------------------------------------------------ import
    async def import_(self, request: web.Request) -> web.Response:
        """Backfill: the body (OpenMetrics text or CSV) is validated whole, then written in batches."""
        from mlwatch.sources.importfmt import FORMATS, ImportStats, batches, read_items, text_lines, validate
        from mlwatch.storage.writer import WriteBatch

        if self.writer is None:
            return _error("unavailable", "this server cannot write", 503)
        fmt = request.query.get("format", "openmetrics")
        if fmt not in FORMATS:
            return _bad(f"unknown format {fmt!r} (use openmetrics or csv)")
        body = await request.read()
        try:
            problems, _total = await asyncio.to_thread(lambda: validate(read_items(text_lines(body), fmt)))
        except UnicodeDecodeError:
            return _bad("the body is not UTF-8 text")
        if problems:
            return _bad("; ".join(f"line {p.line}: {p.message}" if p.line else p.message for p in problems))
        retention = _get(self.retention_ms) if self.retention_ms is not None else None
        cutoff = self._now_ms() - retention if retention else -(2**62)
        stats = ImportStats()
        try:
            for samples, meta, _line in batches(read_items(text_lines(body), fmt), cutoff_ms=cutoff, size=20_000,
                                                stats=stats):
                await self.writer.write(WriteBatch(samples=samples, meta=meta, backfill=True))
                stats.samples += len(samples)
        except StorageUnavailable as exc:
            return web.Response(text=error_body("unavailable", str(exc)), status=503, content_type=JSON,
                                headers={"Retry-After": "5"})
        except MlwatchError as exc:
            return _error("execution", str(exc), 422)
        return _ok({"imported": stats.samples, "skipped_old": stats.skipped_old})



