"""The source manager: buffering while storage is down, reload, /api/v1/targets, collectors, scheduling."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, generate_latest

from mlwatch.config import parse_config
from mlwatch.errors import StorageUnavailable
from mlwatch.model import is_stale_nan
from mlwatch.sources.manager import SourceManager, load_targets_file
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer, WriteResult
from tests.sources.conftest import FakeClock, Stored


def cmd_source(name: str, value: str) -> str:
    return f"  - {{name: {name}, type: command, command: [{json.dumps(sys.executable)}, -c, 'print({value})'], metric: {name}_value}}\n"


class DownWriter:
    """A writer whose database is down until ``up`` is set; records what it commits."""

    def __init__(self, real: Writer) -> None:
        self.real = real
        self.up = False

    async def write(self, batch: WriteBatch) -> WriteResult:
        if not self.up:
            raise StorageUnavailable("database is locked")
        return await self.real.write(batch)


async def test_scrapes_wait_in_memory_while_storage_is_down(writer: Writer, reader: Reader, stored: Stored,
                                                            clock: FakeClock) -> None:  # fmt: skip
    w = DownWriter(writer)
    m = SourceManager(parse_config("sources:\n" + cmd_source("a", "7")).sources, w, reader, clock=clock)
    await m.start(None)
    await m.run_once()
    clock.advance(15)
    await m.run_once()
    assert m.healths()[0].errors_total == {"storage": 2}
    w.up = True
    clock.advance(15)
    await m.run_once()
    assert len(stored("a_value", job="a", instance=Path(sys.executable).name)) == 3  # nothing lost
    await m.stop()


async def test_buffer_is_bounded_and_drops_are_counted(writer: Writer, reader: Reader, clock: FakeClock) -> None:
    w = DownWriter(writer)
    m = SourceManager(parse_config("sources:\n" + cmd_source("a", "7")).sources, w, reader, clock=clock,
                      max_buffered_samples=10)  # fmt: skip
    await m.start(None)
    for _ in range(5):  # 5 samples per collection (value + 4 report series)
        await m.run_once()
        clock.advance(15)
    assert m.healths()[0].dropped_samples == 15
    text = generate_latest(_registry(m)).decode()
    assert 'mlwatch_source_dropped_samples_total{job="a"} 15.0' in text
    await m.stop()


def _registry(m: SourceManager) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(m.collector)
    return r


async def test_reconfigure_keeps_unchanged_targets_and_ends_removed_ones(writer: Writer, reader: Reader,
                                                                         stored: Stored, clock: FakeClock) -> None:  # fmt: skip
    cfg = parse_config("sources:\n" + cmd_source("a", "1") + cmd_source("b", "2"))
    m = SourceManager(cfg.sources, writer, reader, clock=clock)
    await m.start(None)
    await m.run_once()
    kept = m._runners["a|command"]
    clock.advance(15)
    await m.reconfigure(parse_config("sources:\n" + cmd_source("a", "1") + cmd_source("c", "3")).sources)
    assert m._runners["a|command"] is kept
    assert sorted(r.target.job for r in m._runners.values()) == ["a", "c"]
    inst = Path(sys.executable).name
    assert is_stale_nan(stored("b_value", job="b", instance=inst)[-1][1])
    assert is_stale_nan(stored("up", job="b", instance=inst)[-1][1])
    await m.stop()


async def test_collector_targets_api_and_metrics_families(tmp_path: Path, writer: Writer, reader: Reader,
                                                          clock: FakeClock) -> None:  # fmt: skip
    log = tmp_path / "p.jsonl"
    log.write_text('{"m": "x"}\nnot json\n')
    text = "sources:\n" + cmd_source("a", "7") + f"""  - name: logs
    type: log
    path: {log}
    metrics: [{{name: lines_by_m_total, type: counter, labels: {{m: "{{m}}"}}}}]
  - {{name: down, type: command, command: [/nonexistent]}}
"""
    m = SourceManager(parse_config(text).sources, writer, reader, clock=clock)
    await m.start(None)
    await m.run_once()
    exposition = generate_latest(_registry(m)).decode()
    assert 'mlwatch_source_errors_total{job="logs",reason="invalid_json"} 1.0' in exposition
    assert 'mlwatch_source_errors_total{job="down",reason="exec"} 1.0' in exposition
    assert 'mlwatch_source_samples_total{instance="' in exposition
    assert "mlwatch_source_duration_seconds{" in exposition
    fams = {f.name: f for f in m.families()}
    ups = {s.labels["job"]: s.value for s in fams["up"].samples}
    assert ups == {"a": 1.0, "logs": 1.0, "down": 0.0}
    assert fams["lines_by_m_total"].samples[0].value == 1 and fams["lines_by_m_total"].type.value == "counter"
    assert fams["a_value"].samples[0].value == 7
    health = json.loads(reader.state(f"source_health/logs/{log}") or b"{}")
    assert health["errors_total"] == {"invalid_json": 1} and health["rejected"] == ["invalid_json: not json"]

    app = web.Application()
    m.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/api/v1/targets")).json()
        assert body["status"] == "success"
        targets = {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}
        assert targets["down"]["health"] == "down" and "nonexistent" in targets["down"]["lastError"]
        assert targets["a"]["scrapeInterval"] == "15s" and targets["a"]["lastScrape"].endswith("Z")
        assert body["data"]["droppedTargets"] == []
        only = await (await client.get("/api/v1/targets?state=active&scrapePool=logs")).json()
        assert [t["scrapePool"] for t in only["data"]["activeTargets"]] == ["logs"]
        assert "droppedTargets" not in only["data"]
    await m.stop()


async def test_scheduler_runs_targets_on_their_own(writer: Writer, reader: Reader, tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    log.write_text('{"m": "x"}\n')
    text = f"sources:\n  - {{name: logs, type: log, path: '{log}', interval: 100ms, metrics: [{{name: n_total, type: counter}}]}}\n"
    m = SourceManager(parse_config(text).sources, writer, reader)
    scheduler = AsyncIOScheduler()
    await m.start(scheduler)
    scheduler.start()
    for _ in range(300):  # generous: a loaded CI machine
        await asyncio.sleep(0.1)
        if m.healths()[0].last_scrape_ms and reader.state(f"source_health/logs/{log}"):
            break
    scheduler.shutdown(wait=False)
    await m.stop()
    assert json.loads(reader.state(f"source_health/logs/{log}") or b"{}")["health"] == "up"


def test_targets_file_formats(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"targets": ["a:1", "b:2"], "labels": {"zone": "x", "n": 1}}, "c:3"]))
    assert load_targets_file(str(f)) == [("a:1", {"zone": "x", "n": "1"}), ("b:2", {"zone": "x", "n": "1"}), ("c:3", {})]
    f.write_text("targets: [a:1]\n")
    try:
        load_targets_file(str(f))
    except ValueError as exc:
        assert "expected a list" in str(exc)
    else:
        raise AssertionError("a mapping is not a targets file")


async def test_lines_lost_to_truncation_are_exposed_and_stored_with_health(tmp_path: Path, writer: Writer,
                                                                          reader: Reader, clock: FakeClock) -> None:  # fmt: skip
    log = tmp_path / "p.jsonl"
    log.write_text('{"m": "x"}\n{"m": "y"')  # the second line is still being written
    text = f"""sources:
  - name: logs
    type: log
    path: {log}
    metrics: [{{name: lines_by_m_total, type: counter, labels: {{m: "{{m}}"}}}}]
"""
    m = SourceManager(parse_config(text).sources, writer, reader, clock=clock)
    await m.start(None)
    await m.run_once()
    log.write_text('{"m": "z"}\n')  # truncated in place, no rotated copy: the unread partial line is lost
    clock.advance(15)
    await m.run_once()
    exposition = generate_latest(_registry(m)).decode()
    assert f'mlwatch_source_lost_lines_total{{instance="{log}",job="logs"}} 1.0' in exposition
    assert f'mlwatch_source_lost_bytes_total{{instance="{log}",job="logs"}} 9.0' in exposition
    stored_health = json.loads(reader.state(f"source_health/logs/{log}") or b"{}")
    assert stored_health["lost_lines_total"] == 1 and stored_health["lost_bytes_total"] == 9
    await m.stop()
    # the totals are committed with the offsets: a restart continues them
    m2 = SourceManager(parse_config(text).sources, writer, reader, clock=clock)
    await m2.start(None)
    clock.advance(15)
    await m2.run_once()
    assert (m2.healths()[0].lost_bytes_total, m2.healths()[0].lost_lines_total) == (9, 1)
    await m2.stop()
