"""``GET /federate?match[]=``: the latest value of every matching stored series, as Prometheus serves it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from mlwatch.errors import QueryError
from mlwatch.model import Matcher
from mlwatch.promql.selector import parse_selector
from mlwatch.sources.textparse import format_float
from mlwatch.storage.reader import LatestSample, Reader

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def render_federation(samples: list[LatestSample]) -> bytes:
    """Text format 0.0.4: one untyped family per metric name, each sample with its timestamp."""
    by_name: dict[str, list[LatestSample]] = {}
    for s in samples:
        by_name.setdefault(s.series.key.name, []).append(s)
    lines: list[str] = []
    for name in sorted(by_name):
        lines.append(f"# TYPE {name} untyped")
        for s in sorted(by_name[name], key=lambda x: x.series.key.labels):
            lines.append(f"{s.series.key.canonical()} {format_float(s.value)} {s.ts}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


class FederateHandler:
    def __init__(self, reader: Reader, lookback_ms: Callable[[], int], clock: Callable[[], float] = time.time):
        self._reader = reader
        self._lookback_ms = lookback_ms
        self._clock = clock

    async def __call__(self, request: web.Request) -> web.Response:
        params = request.query.getall("match[]", [])
        if request.method == "POST":
            form = await request.post()
            params = params + [str(v) for v in form.getall("match[]", [])]
        try:
            sets: list[list[Matcher]] = [parse_selector(p) for p in params]
        except QueryError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        now_ms = int(self._clock() * 1000)
        lookback = self._lookback_ms()

        def collect() -> list[LatestSample]:
            seen: dict[int, LatestSample] = {}
            for matchers in sets:
                for s in self._reader.latest(matchers, now_ms, lookback):
                    seen[s.series.id] = s
            return list(seen.values())

        found = await asyncio.get_running_loop().run_in_executor(None, collect)
        return web.Response(body=render_federation(found), headers={"Content-Type": TEXT_FORMAT})
