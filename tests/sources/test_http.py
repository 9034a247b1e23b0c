"""type: http against a real aiohttp exporter: staleness, labels, relabelling, limits, hostile targets,
OpenMetrics, JSON, targets files, and many targets at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch.config import Config, parse_config
from mlwatch.model import is_stale_nan
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.sources.conftest import FakeClock, Stored


class Exporter:
    """A tiny exporter whose body, status and delay tests change between scrapes."""

    def __init__(self) -> None:
        self.body: bytes | str = "a 1\n"
        self.status = 200
        self.delay = 0.0
        self.content_type = "text/plain; version=0.0.4"
        self.hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return web.Response(status=self.status, body=body, headers={"Content-Type": self.content_type})


@pytest.fixture
async def exporter() -> AsyncIterator[tuple[Exporter, str]]:
    exp = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exp.handle)
    app.router.add_get("/stats", exp.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield exp, f"127.0.0.1:{port}"
    await runner.cleanup()


def config(text: str) -> Config:
    return parse_config(text)


async def manager_for(text: str, writer: Writer, reader: Reader, clock: FakeClock) -> SourceManager:
    m = SourceManager(config(text).sources, writer, reader, clock=clock)
    await m.start(None)
    return m


async def test_scrape_staleness_and_up(exporter: tuple[Exporter, str], writer: Writer, reader: Reader,
                                       stored: Stored, clock: FakeClock) -> None:  # fmt: skip
    exp, addr = exporter
    exp.body = "# TYPE a gauge\na 1\nb{x=\"1\"} 2\nc 3 1600000000000\n"
    m = await manager_for(f"sources: [{{name: api, type: http, targets: ['{addr}'], labels: {{env: prod}}}}]", writer, reader, clock)
    lbl = {"job": "api", "instance": addr, "env": "prod"}
    await m.run_once()
    exp.body = "a 5\n"  # b and c disappear
    clock.advance(15)
    await m.run_once()
    exp.status = 500  # the target fails: everything of the last scrape goes stale
    clock.advance(15)
    await m.run_once()
    exp.status = 200
    clock.advance(15)
    await m.run_once()
    t0 = 1_700_000_000_000
    a = stored("a", **lbl)
    assert [v for _, v in a[:2]] == [1, 5] and is_stale_nan(a[2][1]) and a[3][1] == 5
    assert [t for t, _ in a] == [t0, t0 + 15000, t0 + 30000, t0 + 45000]
    b = stored("b", x="1", **lbl)
    assert b[0][1] == 2 and is_stale_nan(b[1][1]) and len(b) == 2
    c = stored("c", **lbl)
    assert c == [(1600000000000, 3.0)]  # explicit timestamps: kept, never marked stale
    assert [v for _, v in stored("up", **lbl)] == [1, 1, 0, 1]
    assert [v for _, v in stored("scrape_samples_scraped", **lbl)] == [3, 1, 0, 1]
    health = json.loads(reader.state(f"source_health/api/{addr}") or b"{}")
    assert health["health"] == "up" and health["errors_total"] == {"http_status": 1}
    assert json.loads(reader.state("source_health_index") or b"[]") == [f"source_health/api/{addr}"]
    await m.stop()


async def test_honor_labels_relabel_and_timestamps(exporter: tuple[Exporter, str], writer: Writer, reader: Reader,
                                                   stored: Stored, clock: FakeClock) -> None:  # fmt: skip
    exp, addr = exporter
    exp.body = 'm{job="theirs",instance="x",code="503"} 1 1600000000000\ngo_gc 1\nm2{pod_uid="u",code="200"} 2\n'
    text = f"""
sources:
  - name: keep-ours
    type: http
    targets: ['{addr}']
    honor_timestamps: false
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'go_.*', action: drop}}
      - {{source_labels: [__name__, code], regex: 'm;(5)..', target_label: class, replacement: '$${{1}}xx'}}
      - {{regex: pod_uid, action: labeldrop}}
  - name: honor
    type: http
    url: http://{addr}/metrics
    honor_labels: true
"""
    m = await manager_for(text, writer, reader, clock)
    await m.run_once()
    now = 1_700_000_000_000
    assert stored("m", job="keep-ours", instance=addr, exported_job="theirs", exported_instance="x", code="503",
                  **{"class": "5xx"}) == [(now, 1.0)]  # fmt: skip
    assert stored("go_gc", job="keep-ours", instance=addr) == []
    assert stored("m2", job="keep-ours", instance=addr, code="200") == [(now, 2.0)]
    assert stored("m", job="theirs", instance="x", code="503") == [(1600000000000, 1.0)]
    assert stored("go_gc", job="honor", instance=addr) == [(now, 1.0)]
    await m.stop()


@pytest.mark.parametrize(
    ("setting", "body", "reason"),
    [("sample_limit: 2", "a 1\nb 1\nc 1\n", "sample_limit"),
     ("label_limit: 3", 'a{x="1",y="2"} 1\n', "label_limit"),
     ("body_size_limit: 1KiB", "a 1\n" * 1000, "body_size_limit")],
)  # fmt: skip
async def test_limits_fail_the_scrape_whole(exporter: tuple[Exporter, str], writer: Writer, reader: Reader,
                                            stored: Stored, clock: FakeClock, setting: str, body: str, reason: str) -> None:  # fmt: skip
    exp, addr = exporter
    exp.body = "a 1\n"
    m = await manager_for(f"sources: [{{name: j, type: http, targets: ['{addr}'], {setting}}}]", writer, reader, clock)
    await m.run_once()
    exp.body = body
    clock.advance(15)
    await m.run_once()
    a = stored("a", job="j", instance=addr)
    assert a[0][1] == 1 and is_stale_nan(a[1][1]) and len(a) == 2
    assert [v for _, v in stored("up", job="j", instance=addr)] == [1, 0]
    assert m.healths()[0].errors_total == {reason: 1}
    await m.stop()


@pytest.mark.parametrize(
    ("status", "body", "content_type", "reason"),
    [(500, "oops", "text/plain", "http_status"),
     (200, "<html><body>login</body></html>\n", "text/html", "parse"),
     (200, b"\xff\xfe\x00garbage\n", "text/plain", "parse"),
     (200, "a 1\n# EOF\nb 2\n", "application/openmetrics-text; version=1.0.0", "parse")],
)  # fmt: skip
async def test_garbage_targets(exporter: tuple[Exporter, str], writer: Writer, reader: Reader, clock: FakeClock,
                               status: int, body: str | bytes, content_type: str, reason: str) -> None:  # fmt: skip
    exp, addr = exporter
    exp.status, exp.body, exp.content_type = status, body, content_type
    m = await manager_for(f"sources: [{{name: j, type: http, targets: ['{addr}']}}]", writer, reader, clock)
    await m.run_once()
    h = m.healths()[0]
    assert h.health.value == "down" and h.errors_total == {reason: 1} and h.last_error
    data = m.targets_data()["activeTargets"][0]
    assert data["health"] == "down" and data["lastError"] == h.last_error
    await m.stop()


async def test_refused_and_hanging_targets(exporter: tuple[Exporter, str], writer: Writer, reader: Reader,
                                           clock: FakeClock) -> None:  # fmt: skip
    exp, addr = exporter
    exp.delay = 5
    text = f"""
sources:
  - {{name: hang, type: http, targets: ['{addr}'], timeout: 300ms, interval: 1s}}
  - {{name: refused, type: http, targets: ['127.0.0.1:1']}}
"""
    m = await manager_for(text, writer, reader, clock)
    started = time.monotonic()
    await m.run_once()
    assert time.monotonic() - started < 3
    reasons = {h.job: dict(h.errors_total) for h in m.healths()}
    assert reasons == {"hang": {"timeout": 1}, "refused": {"connection": 1}}
    await m.stop()


async def test_openmetrics(exporter: tuple[Exporter, str], writer: Writer, reader: Reader, stored: Stored,
                           clock: FakeClock) -> None:  # fmt: skip
    exp, addr = exporter
    exp.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    exp.body = (
        "# TYPE req counter\n# HELP req Requests.\nreq_total{code=\"200\"} 3 1600000000.5 # {trace_id=\"a\"} 1\n"
        "req_created{code=\"200\"} 1.5e9\n# TYPE build info\nbuild_info{v=\"1\"} 1\n# TYPE t gauge\n# UNIT t seconds\nt 2\n# EOF\n"
    )
    m = await manager_for(f"sources: [{{name: om, type: http, targets: ['{addr}']}}]", writer, reader, clock)
    await m.run_once()
    assert m.healths()[0].health.value == "up", m.healths()[0].last_error
    lbl = {"job": "om", "instance": addr}
    assert stored("req_total", code="200", **lbl) == [(1600000000500, 3.0)]
    assert stored("req_created", code="200", **lbl)[0][1] == 1.5e9
    assert stored("build_info", v="1", **lbl)[0][1] == 1
    meta = reader.metadata()
    assert meta["req_total"].type.value == "counter" and meta["t"].unit == "seconds"
    await m.stop()


async def test_json_endpoint(exporter: tuple[Exporter, str], writer: Writer, reader: Reader, stored: Stored,
                             clock: FakeClock) -> None:  # fmt: skip
    exp, addr = exporter
    exp.content_type = "application/json"
    exp.body = json.dumps({"models": [{"metrics": {"accuracy": 0.93, "ok": True, "n": "12"}}], "a.b": 1})
    text = f"""
sources:
  - name: stats
    type: http
    format: json
    url: http://{addr}/stats
    labels: {{team: ml}}
    metrics:
      - {{name: acc, path: 'models[0].metrics.accuracy', labels: {{model: m}}}}
      - {{name: healthy, path: 'models[0].metrics.ok'}}
      - {{name: n, path: 'models[0].metrics.n', type: counter}}
      - {{name: missing, path: 'models[3].x'}}
"""
    m = await manager_for(text, writer, reader, clock)
    await m.run_once()
    lbl = {"job": "stats", "instance": addr, "team": "ml"}
    assert stored("acc", model="m", **lbl)[0][1] == 0.93
    assert stored("healthy", **lbl)[0][1] == 1 and stored("n", **lbl)[0][1] == 12
    h = m.healths()[0]
    assert h.health.value == "up" and h.errors_total == {"json_path": 1} and "models[3].x" in h.rejected[0]
    fams = {f.name: f for f in m.families()}
    assert fams["acc"].samples[0].value == 0.93 and fams["up"].samples[0].value == 1
    exp.body = "not json"
    clock.advance(15)
    await m.run_once()
    assert is_stale_nan(stored("acc", model="m", **lbl)[1][1])
    assert "acc" not in {f.name for f in m.families()}
    await m.stop()


async def test_scraped_series_are_not_on_metrics_but_up_is(exporter: tuple[Exporter, str], writer: Writer,
                                                            reader: Reader, clock: FakeClock) -> None:  # fmt: skip
    _exp, addr = exporter
    m = await manager_for(f"sources: [{{name: api, type: http, targets: ['{addr}']}}]", writer, reader, clock)
    await m.run_once()
    assert [f.name for f in m.families()] == ["up"]
    await m.stop()


async def test_targets_file_is_reread(exporter: tuple[Exporter, str], tmp_path: Path, writer: Writer,
                                      reader: Reader, stored: Stored, clock: FakeClock) -> None:  # fmt: skip
    _exp, addr = exporter
    tf = tmp_path / "targets.yaml"
    tf.write_text(f"- targets: ['{addr}']\n  labels: {{zone: a}}\n")
    m = await manager_for(f"sources: [{{name: fs, type: http, targets_file: '{tf}'}}]", writer, reader, clock)
    await m.run_once()
    assert stored("a", job="fs", instance=addr, zone="a")[0][1] == 1
    tf.write_text(json.dumps([{"targets": [addr], "labels": {"zone": "b"}}]) + "\n\n")
    clock.advance(5)
    await m.sync_targets_files()
    a_old = stored("a", job="fs", instance=addr, zone="a")
    assert is_stale_nan(a_old[-1][1])  # the removed target's series end
    assert is_stale_nan(stored("up", job="fs", instance=addr, zone="a")[-1][1])
    await m.run_once()
    assert stored("a", job="fs", instance=addr, zone="b")[0][1] == 1
    tf.write_text("- targets: [not a target]\n")  # a bad file keeps the targets it had
    clock.advance(5)
    await m.sync_targets_files()
    assert [t["labels"]["zone"] for t in m.targets_data()["activeTargets"]] == ["b"]
    await m.stop()


async def test_hundreds_of_targets_and_a_slow_one(writer: Writer, reader: Reader, clock: FakeClock) -> None:
    exp = Exporter()
    exp.body = "x 1\n"
    slow = Exporter()
    slow.delay = 6.0
    apps: list[web.AppRunner] = []
    addrs: list[str] = []

    async def serve(e: Exporter) -> str:
        app = web.Application()
        app.router.add_get("/metrics", e.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        apps.append(runner)
        return f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    try:
        for _ in range(20):
            addrs.append(await serve(exp))
        slow_addr = await serve(slow)
        # 300 targets: 20 servers x 15 jobs (a target is host:port, so distinct jobs per server).
        sources = "\n".join(
            f"  - {{name: job{j}, type: http, targets: {json.dumps(addrs)}, timeout: 10s}}" for j in range(15)
        )
        text = f"sources:\n{sources}\n  - {{name: slow, type: http, targets: ['{slow_addr}'], timeout: 10s}}\n"
        m = await manager_for(text, writer, reader, clock)
        started = time.monotonic()
        fast = asyncio.gather(*(m.tick(k) for k, r in m._runners.items() if r.target.job != "slow"))
        slow_task = asyncio.ensure_future(m.run_once("slow"))
        await fast
        fast_time = time.monotonic() - started
        await slow_task
        # 300 targets did not wait for the slow one (~1 s idle; the margin is for a loaded CI machine)
        assert fast_time < slow.delay - 1.5, fast_time
        assert sum(1 for h in m.healths() if h.health.value == "up") == 301
        assert exp.hits == 300
        await m.stop()
    finally:
        for r in apps:
            await r.cleanup()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_hostile_bodies_are_errors_of_the_target(body: bytes) -> None:
    from mlwatch.sources.http import ScrapeTarget

    cfg = parse_config("sources: [{name: j, type: http, targets: ['h:1'], sample_limit: 50}]").sources[0]
    target = ScrapeTarget(cfg, "http://h:1/metrics", "h:1", lambda: None)  # type: ignore[arg-type,return-value]

    async def fake_fetch(*_: Any) -> tuple[bytes, str]:
        return body, "text/plain"

    import mlwatch.sources.http as http_mod

    original: Callable[..., Any] = http_mod.fetch
    http_mod.fetch = fake_fetch  # type: ignore[assignment]
    try:
        col = asyncio.run(target.collect(1000))
    finally:
        http_mod.fetch = original
    assert (col.error is None) == (col.reason is None)
    assert all(isinstance(s.value, float) for s in col.samples)
    if col.error is None:
        assert col.kept <= 50  # sample_limit held
    else:
        assert col.reason in ("parse", "sample_limit", "label_limit")
