"""The Prometheus HTTP API on a real aiohttp server over a real database: shapes, errors, promtool."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from mlwatch.model import STALE_NAN, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.server.api import PrometheusApi
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer

T0 = 1_700_000_000_000  # ms


@pytest.fixture
def writer(engine: Engine) -> Iterator[Writer]:
    w = Writer(engine)
    w.start()
    samples = []
    for k in range(40):
        t = T0 + k * 15_000
        samples.append(Sample(SeriesKey.of("http_requests_total", {"job": "api", "code": "200"}), t, float(10 * k)))
        samples.append(Sample(SeriesKey.of("http_requests_total", {"job": "api", "code": "500"}), t, float(k)))
        samples.append(Sample(SeriesKey.of("temperature", {"room": "lab"}), t, 20.0 + k / 10))
    samples.append(Sample(SeriesKey.of("temperature", {"room": "lab"}), T0 + 40 * 15_000, STALE_NAN))
    meta = {"http_requests_total": MetricMeta(MetricType.COUNTER, "Requests."),
            "temperature": MetricMeta(MetricType.GAUGE, "Degrees.", "celsius")}
    w.write_sync(WriteBatch(samples=samples, meta=meta, backfill=True))
    yield w
    w.stop()


def make_app(engine: Engine, writer: Writer | None, **kw: Any) -> web.Application:
    app = web.Application()
    PrometheusApi(Reader(engine), clock=lambda: T0 / 1000 + 600, writer=writer, **kw).add_routes(app)
    return app


@pytest.fixture
async def client(engine: Engine, writer: Writer) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(engine, writer))) as c:
        yield c


async def get(client: TestClient[Any, Any], path: str, **params: Any) -> tuple[int, Any]:
    r = await client.get(path, params=params)
    return r.status, await r.json()


async def test_instant_query_get_and_post(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/api/v1/query", query="http_requests_total", time=str(T0 / 1000 + 300))
    assert status == 200
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    assert {r["metric"]["code"]: r["value"] for r in body["data"]["result"]} == {
        "200": [1700000300, "200"], "500": [1700000300, "20"]}
    r = await client.post("/api/v1/query", data={"query": "sum(http_requests_total)", "time": "1700000300.5"})
    assert r.status == 200
    assert await r.json() == {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1700000300.5, "220"]}]}}


async def test_scalar_string_and_default_time(client: TestClient[Any, Any]) -> None:
    _, body = await get(client, "/api/v1/query", query="1 + 1", time="100")
    assert body["data"] == {"resultType": "scalar", "result": [100, "2"]}
    _, body = await get(client, "/api/v1/query", query='"x"', time="100.25")
    assert body["data"] == {"resultType": "string", "result": [100.25, "x"]}
    _, body = await get(client, "/api/v1/query", query="time()")  # the injected clock
    assert body["data"]["result"] == [1700000600, "1700000600"]


async def test_range_query(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/api/v1/query_range", query="rate(http_requests_total[1m])",
                             start=str(T0 / 1000 + 60), end=str(T0 / 1000 + 180), step="60")
    assert status == 200
    assert body["data"]["resultType"] == "matrix"
    series = {r["metric"]["code"]: r["values"] for r in body["data"]["result"]}
    assert series["200"] == [[1700000060, "0.6666666666666666"], [1700000120, "0.6666666666666666"],
                             [1700000180, "0.6666666666666666"]]
    status, body = await get(client, "/api/v1/query_range", query="temperature", start=str(T0 / 1000 + 570),
                             end=str(T0 / 1000 + 630), step="15s")
    assert [v[0] for v in body["data"]["result"][0]["values"]] == [1700000570, 1700000585]  # stale after 600


@pytest.mark.parametrize(("path", "params", "status", "kind", "text"), [
    ("/api/v1/query", {"query": "sum("}, 400, "bad_data", 'invalid parameter "query"'),
    ("/api/v1/query", {}, 400, "bad_data", "no expression"),
    ("/api/v1/query", {"query": "up", "time": "yesterday"}, 400, "bad_data", 'invalid parameter "time"'),
    ("/api/v1/query", {"query": "http_requests_total + on() http_requests_total", "time": "1700000300"}, 422,
     "execution", "many-to-many"),
    ("/api/v1/query", {"query": "holt_winters(temperature[5m], 2, 0.5)", "time": "1700000300"}, 422, "execution",
     "smoothing factor"),
    ("/api/v1/query", {"query": "mad_over_time(temperature[5m])", "time": "1700000300"}, 422, "execution",
     "unsupported in mlwatch: function mad_over_time()"),
    ("/api/v1/query_range", {"query": "up", "start": "10", "end": "5", "step": "1"}, 400, "bad_data", "end"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"}, 400, "bad_data", "11,000"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "10", "step": "0"}, 400, "bad_data", "step"),
    ("/api/v1/query_range", {"query": "up", "end": "10", "step": "1"}, 400, "bad_data", 'invalid parameter "start"'),
    ("/api/v1/query_range", {"query": "up[5m]", "start": "0", "end": "10", "step": "1"}, 400, "bad_data",
     "range vector"),
    ("/api/v1/series", {}, 400, "bad_data", "no match[]"),
    ("/api/v1/series", {"match[]": "sum(up)"}, 400, "bad_data", "selector"),
])
async def test_errors(client: TestClient[Any, Any], path: str, params: dict[str, str], status: int, kind: str,
                      text: str) -> None:
    r = await client.get(path, params=params)
    body = await r.json()
    assert r.status == status, body
    assert body["status"] == "error"
    assert body["errorType"] == kind
    assert text in body["error"]


async def test_limits(engine: Engine, writer: Writer) -> None:
    async with TestClient(TestServer(make_app(engine, writer, query_max_samples=10))) as c:
        status, body = await get(c, "/api/v1/query", query="http_requests_total", time="1700000300")
        assert (status, body["errorType"]) == (422, "execution")
        assert "too many samples" in body["error"]
    async with TestClient(TestServer(make_app(engine, writer, query_timeout_ms=1))) as c:
        status, body = await get(c, "/api/v1/query_range", query="max_over_time(rate(http_requests_total[1m])[5m:1s])",
                                 start="1700000000", end="1700000600", step="1")
        assert (status, body["errorType"]) == (503, "timeout")
        assert body["error"] == "query timed out in expression evaluation"


async def test_series_labels_values_metadata(client: TestClient[Any, Any]) -> None:
    _, body = await get(client, "/api/v1/series", **{"match[]": "http_requests_total"})
    assert body["data"] == [{"__name__": "http_requests_total", "code": "200", "job": "api"},
                            {"__name__": "http_requests_total", "code": "500", "job": "api"}]
    _, body = await get(client, "/api/v1/series", **{"match[]": '{room="lab"}', "start": "1", "end": "2"})
    assert body["data"] == []
    _, body = await get(client, "/api/v1/labels")
    assert body["data"] == ["__name__", "code", "job", "room"]
    _, body = await get(client, "/api/v1/label/__name__/values")
    assert body["data"] == ["http_requests_total", "temperature"]
    _, body = await get(client, "/api/v1/label/code/values", **{"match[]": "http_requests_total"})
    assert body["data"] == ["200", "500"]
    status, _ = await get(client, "/api/v1/label/1bad/values")
    assert status == 400
    _, body = await get(client, "/api/v1/metadata")
    assert body["data"] == {"http_requests_total": [{"type": "counter", "help": "Requests.", "unit": ""}],
                            "temperature": [{"type": "gauge", "help": "Degrees.", "unit": "celsius"}]}
    _, body = await get(client, "/api/v1/metadata", metric="temperature")
    assert list(body["data"]) == ["temperature"]
    _, body = await get(client, "/api/v1/query_exemplars", query="up")
    assert body == {"status": "success", "data": []}
    _, body = await get(client, "/api/v1/status/buildinfo")
    assert body["status"] == "success" and "version" in body["data"]


async def test_import(client: TestClient[Any, Any]) -> None:
    text = ("# TYPE imp gauge\n"
            f'imp{{a="1"}} 1.5 {T0 / 1000 - 3600}\n'
            f'imp{{a="1"}} 2.5 {T0 / 1000 - 3540}\n'
            "imp{a=\"2\"} 7 1000\n"  # older than the retention: skipped
            "# EOF\n")
    bad = "imp{a=\"1\"} 1.5 10\nimp{a=\"1\" 2.5 20\n"
    r = await client.post("/api/v1/import", data=bad.encode())
    body = await r.json()
    assert r.status == 400 and "line 2" in body["error"]
    r = await client.post("/api/v1/import", data=text.encode())
    body = await r.json()
    assert r.status == 200, body
    assert body["data"] == {"imported": 3, "skipped_old": 0}
    _, body = await get(client, "/api/v1/query", query="imp", time=str(T0 / 1000 - 3500))
    assert [r["value"][1] for r in body["data"]["result"]] == ["2.5"]


async def test_import_retention(engine: Engine, writer: Writer) -> None:
    async with TestClient(TestServer(make_app(engine, writer, retention_ms=86_400_000))) as c:
        r = await c.post("/api/v1/import", data=f"x 1 1000\nx 2 {T0 / 1000}\n".encode())
        assert (await r.json())["data"] == {"imported": 1, "skipped_old": 1}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
async def test_promtool_query(client: TestClient[Any, Any]) -> None:
    url = str(client.make_url("/")).rstrip("/")

    async def promtool(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec("promtool", "query", *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    out = await promtool("instant", "--time", "2023-11-14T22:18:20Z", url, "sum by (code) (http_requests_total)")
    assert 'code="200"' in out and "=> 200 @[1700000300]" in out
    out = await promtool("range", "--start", "1700000060", "--end", "1700000120", "--step", "60s", url,
                         "temperature")
    assert "20.4 @[1700000060]" in out and "20.8 @[1700000120]" in out
    out = await promtool("series", "--match", "http_requests_total", "--start", "1700000000", "--end", "1700001000", url)
    assert '{__name__="http_requests_total", code="500", job="api"}' in out
    out = await promtool("labels", "--start", "1700000000", "--end", "1700001000", url, "code")
    assert out.split() == ["200", "500"]
    out = await promtool("-o", "json", "instant", "--time", "1700000300", url, "temperature")
    assert json.loads(out)[0]["value"] == [1700000300, "22"]
