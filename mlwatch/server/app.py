"""The aiohttp application: exposition, federation, the push API, health and reload."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from mlwatch.model import MetricFamily
from mlwatch.server.auth import AuthPolicy, Handler
from mlwatch.server.exposition import render
from mlwatch.server.federate import TEXT_FORMAT, FederateHandler
from mlwatch.storage.reader import Reader


class RouteProvider(Protocol):
    def add_routes(self, app: web.Application) -> None: ...


class Instrumentation(Protocol):
    def exposition(self) -> bytes: ...
    def observe_request(self, handler: str, code: int, seconds: float) -> None: ...


@dataclass
class AppDeps:
    """What the HTTP layer needs from the daemon, as small callables and protocols."""

    reader: Reader
    families: list[Callable[[], list[MetricFamily]]]  # what /metrics shows besides the own metrics
    own: Instrumentation
    auth: Callable[[], AuthPolicy]  # re-read on every request, so a reload applies at once
    lookback_ms: Callable[[], int]
    reload: Callable[[], Awaitable[None]]
    ready: Callable[[], bool]
    max_body_bytes: int
    routes: list[RouteProvider] = field(default_factory=list)  # further APIs (Prometheus API, silences ...)


def merge_families(families: Iterable[MetricFamily]) -> list[MetricFamily]:
    """One family per name (push groups and derived series may share one), the first one's TYPE and HELP."""
    merged: dict[str, MetricFamily] = {}
    for fam in families:
        have = merged.get(fam.name)
        if have is None:
            merged[fam.name] = fam
        else:
            merged[fam.name] = MetricFamily(have.name, have.type, have.help or fam.help, have.unit,
                                            have.samples + fam.samples)
    return list(merged.values())


GC_GEN0_THRESHOLD = 20_000
SWITCH_INTERVAL_S = 0.0005


async def tune_runtime(_app: web.Application) -> None:
    """Keep the interpreter's pauses out of request latency (B2: p99 of pushes).

    The cyclic garbage collector: under push load, group states live for a few pushes each,
    survive the young generations and trigger a full collection about every second; a full
    collection walks every object the daemon holds (over 100k after start-up: modules, classes,
    the config) and took 50-140 ms per run, which was the pushes' p99. Once everything is loaded,
    the start-up objects are moved out of its reach (``gc.freeze``: they are never freed anyway)
    and the youngest generation is collected less often (fewer, equally short collections).

    The GIL switch interval: the writer thread releases the GIL around every SQLite call and, while
    the event loop is busy, waited up to the default 5 ms for it after each one, so a group commit
    took 9-14 ms (median; p99 70-100 ms) under 100-line push load, and every push waits for one.
    With 0.5 ms: 2-7 ms (p99 ~38 ms), pushes' p99 ~25% lower at the same throughput.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))


def build_app(deps: AppDeps) -> web.Application:
    @web.middleware
    async def instrument(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "other"
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            deps.own.observe_request(name, code, time.perf_counter() - started)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in ("/-/healthy", "/-/ready"):
            denied = await deps.auth().check(request)  # bcrypt runs off the event loop
            if denied is not None:
                raise denied
        return await handler(request)

    app = web.Application(middlewares=[instrument, authenticate], client_max_size=deps.max_body_bytes)
    app.on_startup.append(tune_runtime)

    async def metrics(_request: web.Request) -> web.Response:
        body = render(merge_families(f for get in deps.families for f in get())) + deps.own.exposition()
        return web.Response(body=body, headers={"Content-Type": TEXT_FORMAT})

    async def healthy(_request: web.Request) -> web.Response:
        return web.Response(text="mlwatch is Healthy.\n")

    async def ready(_request: web.Request) -> web.Response:
        if deps.ready():
            return web.Response(text="mlwatch is Ready.\n")
        return web.Response(status=503, text="mlwatch is not ready.\n")

    async def reload(_request: web.Request) -> web.Response:
        try:
            await deps.reload()
        except Exception as exc:  # noqa: BLE001 - reported to the caller, old config kept
            return web.Response(status=500, text=f"failed to reload config: {exc}\n")
        return web.Response(text="config reloaded\n")

    federate = FederateHandler(deps.reader, deps.lookback_ms)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("GET", "/federate", federate.__call__)  # a bound coroutine method: aiohttp warns on callables
    app.router.add_route("POST", "/federate", federate.__call__)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    for provider in deps.routes:
        provider.add_routes(app)
    return app
