"""The push HTTP API on a real aiohttp server over a real writer and a migrated temp SQLite."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from mlwatch.model import Matcher, SeriesKey
from mlwatch.server.exposition import render
from mlwatch.server.push import PushService
from mlwatch.sources.protoparse import PROTOBUF_CONTENT_TYPE, encode_delimited, messages
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer

SEED = '# HELP ai_model_accuracy Accuracy of the AI model\nai_model_accuracy {model="my-model"} 0.93\n'


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'push.db'}"
    upgrade(make_engine(url))
    return url


@pytest.fixture
def writer(db: str, clock: Clock) -> Iterator[Writer]:
    engine = make_engine(db)
    w = Writer(engine, max_series=50, clock=clock)
    w.start()
    yield w
    w.stop()
    engine.dispose()


@pytest.fixture
def reader(db: str) -> Reader:
    return Reader(make_engine(db))


@pytest.fixture
def service(writer: Writer, clock: Clock) -> PushService:
    return PushService(writer, sample_interval_ms=15_000, accept_timestamps=False, default_ttl_ms=None,
                       max_body_bytes=4096, clock=clock)


@pytest.fixture
async def client(service: PushService) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    service.add_routes(app)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=render(service.families()), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def metrics_text(client: Client) -> str:
    return await (await client.get("/metrics")).text()


def stored_keys(reader: Reader) -> set[str]:
    return {s.key.canonical() for s in reader.series([Matcher.make("__name__", "=~", ".+")])}


async def test_seed_push_verbatim(client: Client, reader: Reader) -> None:
    r = await client.post("/metrics/job/ai-model", data=SEED)
    assert r.status == 200 and await r.text() == ""
    text = await metrics_text(client)
    assert text.startswith(
        "# HELP ai_model_accuracy Accuracy of the AI model\n# TYPE ai_model_accuracy untyped\n"
        'ai_model_accuracy{instance="",job="ai-model",model="my-model"} 0.93\n'
    )
    # Durable before the reply: the reader sees the sample already, with instance="" absent.
    (found,) = reader.latest([Matcher.make("__name__", "=", "ai_model_accuracy")], 2**62, 2**62)
    assert found.series.key == SeriesKey.of("ai_model_accuracy", {"job": "ai-model", "model": "my-model"})
    assert found.value == 0.93


async def test_status_codes(client: Client) -> None:
    assert (await client.put("/metrics/job/a/instance/i", data="x 1\n")).status == 200
    assert (await client.post("/metrics/job/a/instance/i", data="y 1\n")).status == 200
    assert (await client.delete("/metrics/job/a/instance/i")).status == 202
    assert (await client.delete("/metrics/job/never")).status == 202
    assert (await client.put("/api/v1/admin/wipe")).status == 202
    assert (await client.put("/metrics/job/", data="x 1\n")).status == 404
    assert (await client.get("/metrics/job/a")).status == 405
    r = await client.put("/metrics/job/a/lbl", data="x 1\n")
    assert r.status == 400 and "odd number of components" in await r.text()
    r = await client.put("/metrics/job/a/__x/1", data="x 1\n")
    assert r.status == 400 and "improper label name" in await r.text()


async def test_base64_grouping_key(client: Client) -> None:
    job = base64.urlsafe_b64encode(b"a/b").decode().rstrip("=")
    path = base64.urlsafe_b64encode(b"/x/y").decode()
    assert (await client.put(f"/metrics/job@base64/{job}/path@base64/{path}", data="x 1\n")).status == 200
    assert 'x{instance="",job="a/b",path="/x/y"} 1' in await metrics_text(client)
    # An empty value (base64 "=") is the same group as none at all.
    assert (await client.put("/metrics/job/c/e@base64/=", data="y 1\n")).status == 200
    assert (await client.put("/metrics/job/c", data="y 2\n")).status == 200
    assert (await metrics_text(client)).count("y{") == 1


async def test_malformed_body(client: Client, reader: Reader, clock: Clock) -> None:
    assert (await client.put("/metrics/job/a", data="ok 1\n")).status == 200
    clock.now += 10
    r = await client.post("/metrics/job/a", data="good 1\nbad{ 1\n")
    assert r.status == 400
    assert await r.text() == 'text format parsing error in line 2: invalid label name for metric "bad"\n'
    assert not any(k.startswith(("good", "bad")) for k in stored_keys(reader))
    text = await metrics_text(client)
    assert 'push_failure_time_seconds{instance="",job="a"} 1.70000001e+09' in text
    assert 'ok{instance="",job="a"} 1' in text


async def test_type_conflict(client: Client) -> None:
    assert (await client.put("/metrics/job/a", data="# TYPE x gauge\nx 1\n")).status == 200
    r = await client.put("/metrics/job/b", data="# TYPE x counter\nx 1\n")
    assert r.status == 400 and (await r.text()).startswith("pushed metrics are invalid or inconsistent")
    assert 'x{instance="",job="b"}' not in await metrics_text(client)


async def test_timestamps_refused_by_default(client: Client) -> None:
    r = await client.put("/metrics/job/a", data="x 1 1600000000000\n")
    assert r.status == 400 and "must not have timestamps" in await r.text()


async def test_body_too_large(client: Client) -> None:
    big = "x 1\n" * 2000
    r = await client.put("/metrics/job/a", data=big)
    assert r.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y 1\n" * 20

    r = await client.put("/metrics/job/a", data=chunks())
    assert r.status == 413
    assert "y{" not in await metrics_text(client)


async def test_gzip_bodies(client: Client) -> None:
    r = await client.put("/metrics/job/a", data=gzip.compress(SEED.encode()), headers={"Content-Encoding": "gzip"})
    assert r.status == 200
    assert "ai_model_accuracy{" in await metrics_text(client)
    bomb = gzip.compress(b"x 1\n" * 100_000)
    r = await client.put("/metrics/job/b", data=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status == 413
    r = await client.put("/metrics/job/c", data=b"\x1f\x8bnot really gzip", headers={"Content-Encoding": "gzip"})
    assert r.status == 400, await r.text()


async def test_protobuf_body(client: Client) -> None:
    mf = messages["MetricFamily"](name="pb_metric", type=1, help="From protobuf.")
    m = mf.metric.add()
    m.label.add(name="k", value="v")
    m.gauge.value = 2.5
    r = await client.put("/metrics/job/pb", data=encode_delimited([mf]), headers={"Content-Type": PROTOBUF_CONTENT_TYPE})
    assert r.status == 200
    assert 'pb_metric{instance="",job="pb",k="v"} 2.5' in await metrics_text(client)
    r = await client.put("/metrics/job/pb", data=b"\x05abc", headers={"Content-Type": PROTOBUF_CONTENT_TYPE})
    assert r.status == 400 and (await r.text()).startswith("protobuf parsing error: message 1")


async def test_storage_unavailable_is_503(client: Client, writer: Writer) -> None:
    writer.stop()
    try:
        for method in ("PUT", "POST"):
            r = await client.request(method, "/metrics/job/a", data="x 1\n")
            assert r.status == 503 and r.headers["Retry-After"] == "5"
    finally:
        writer.start()
    assert "x{" not in await metrics_text(client)
    assert (await client.put("/metrics/job/a", data="x 1\n")).status == 200


async def test_series_limit_refuses_whole_push(client: Client, reader: Reader) -> None:
    body = "".join(f'm{{i="{i}"}} 1\n' for i in range(60))
    r = await client.put("/metrics/job/a", data=body)
    assert r.status == 400 and "max_series" in await r.text()
    assert not any(k.startswith("m{") for k in stored_keys(reader))


async def test_ttl_parameter(client: Client, service: PushService, clock: Clock) -> None:
    assert (await client.put("/metrics/job/a?ttl=1h", data="x 1\n")).status == 200
    (group,) = service.source.groups.values()
    assert group.expires_at == clock.now + 3600
    r = await client.put("/metrics/job/a?ttl=soon", data="x 1\n")
    assert r.status == 400 and "invalid ttl" in await r.text()
    clock.now += 3601
    await service.resample()
    assert service.families() == []


async def test_api_v1(client: Client) -> None:
    assert (await client.put("/metrics/job/a/instance/i", data="# TYPE x gauge\nx 1\n")).status == 200
    body = await (await client.get("/api/v1/metrics")).json()
    assert body["status"] == "success"
    (group,) = body["data"]
    assert group["labels"] == {"instance": "i", "job": "a"}
    assert group["x"] == {"time_stamp": "2023-11-14T22:13:20Z", "type": "GAUGE",
                          "metrics": [{"labels": {"instance": "i", "job": "a"}, "value": "1"}]}
    status = await (await client.get("/api/v1/status")).json()
    assert status["status"] == "success"
    assert set(status["data"]) == {"build_information", "flags", "start_time"}
    assert status["data"]["flags"]["push.sample_interval"] == "15s"


async def test_self_metrics(client: Client, service: PushService) -> None:
    await client.put("/metrics/job/a", data="x 1\n")
    await client.put("/metrics/job/a", data="x{\n")
    await client.delete("/metrics/job/a")
    registry = CollectorRegistry()
    registry.register(service)
    text = generate_latest(registry).decode()
    assert 'mlwatch_pushes_total{method="PUT",outcome="ok"} 1.0' in text
    assert 'mlwatch_pushes_total{method="PUT",outcome="invalid"} 1.0' in text
    assert 'mlwatch_pushes_total{method="DELETE",outcome="ok"} 1.0' in text
    assert "mlwatch_push_errors_total 1.0" in text
    assert "mlwatch_push_groups 0.0" in text


async def test_reconfigure(client: Client, service: PushService) -> None:
    service.reconfigure(sample_interval_ms=1000, accept_timestamps=True, default_ttl_ms=60_000, max_body_bytes=10)
    assert (await client.put("/metrics/job/a", data="x 1\n" * 5)).status == 413
    service.reconfigure(sample_interval_ms=1000, accept_timestamps=True, default_ttl_ms=60_000, max_body_bytes=100)
    assert (await client.put("/metrics/job/a", data="x 1 1600000000000\n")).status == 200
