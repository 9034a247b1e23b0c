"""``mlwatch import`` and ``mlwatch query``: validation, idempotence, retention, CSV, through a daemon, outputs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from mlwatch.commands.importer import import_command
from mlwatch.commands.query import query_command
from mlwatch.server.api import PrometheusApi
from mlwatch.storage.database import DaemonLock, make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.helpers import free_port

NOW = int(time.time())
OM = (
    "# TYPE jobs counter\n"
    "# HELP jobs Jobs done.\n"
    + "".join(f'jobs_total{{queue="a b"}} {k * 2} {NOW - 7200 + k * 60}\n' for k in range(60))
    + "".join(f'jobs_total{{queue="q\\"2"}} {k} {NOW - 7200 + k * 60}\n' for k in range(60))
    + "# TYPE temp gauge\n"
    + f"temp 20.5 {NOW - 3600}\n"
    + "temp 1 1000\n"  # 1970: older than the retention
    + "# EOF\n"
)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "mlwatch.yaml"
    path.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'm.db'}\n  retention: 30d\n")
    return path


def run(cmd: Any, *args: str) -> Any:
    return CliRunner().invoke(cmd, list(args), catch_exceptions=False)


def count(tmp_path: Path) -> int:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}", readonly=True)
    try:
        return Reader(engine).count_samples()
    finally:
        engine.dispose()


def test_import_is_validated_idempotent_and_skips_old(tmp_path: Path, cfg: Path) -> None:
    f = tmp_path / "data.om"
    f.write_text(OM)
    r = run(import_command, str(f), "-c", str(cfg), "-q")
    assert r.exit_code == 0, r.output
    assert "imported 121 samples" in r.output and "1 older than the retention skipped" in r.output
    assert count(tmp_path) == 121
    r = run(import_command, str(f), "-c", str(cfg), "-q")
    assert r.exit_code == 0
    assert count(tmp_path) == 121  # a re-run stores nothing twice
    r = run(query_command, "sum(increase(jobs_total[1h]))", "-c", str(cfg), "--time", str(NOW - 7200 + 3540),
            "-o", "json")
    body = json.loads(r.output)
    assert body["status"] == "success" and float(body["data"]["result"][0]["value"][1]) > 0


def test_a_file_with_errors_imports_nothing(tmp_path: Path, cfg: Path) -> None:
    f = tmp_path / "bad.om"
    f.write_text(f"ok 1 {NOW}\nbroken{{a=\"1\" 2 {NOW}\nno_ts 3\nok 1 {NOW}\n# EOF\nafter 1 2\n")
    r = CliRunner().invoke(import_command, [str(f), "-c", str(cfg), "-q"])
    assert r.exit_code == 1
    assert f"{f}:2: " in r.output and f"{f}:3: a sample needs a timestamp" in r.output
    assert f"{f}:6: content after '# EOF'" in r.output
    assert "nothing imported" in r.output
    assert not (tmp_path / "m.db").exists() or count(tmp_path) == 0


def test_import_csv(tmp_path: Path, cfg: Path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("metric,timestamp,value,model,env\n"
                 f"acc,{NOW - 600},0.9,m1,\n"
                 f"acc,{NOW - 300},0.8,m1,prod\n"
                 "acc,2026-01-01T00:00:00Z,0.7,m2,\n")
    r = run(import_command, str(f), "-c", str(cfg), "-q")
    assert r.exit_code == 0, r.output
    r = run(query_command, "acc", "-c", str(cfg), "--time", str(NOW - 300), "-o", "csv")
    assert r.output.splitlines() == ["__name__,env,model,timestamp,value", f"acc,prod,m1,{float(NOW - 300)},0.8",
                                     f"acc,,m1,{float(NOW - 300)},0.9"]
    bad = tmp_path / "bad.csv"
    bad.write_text("metric,value\nx,1\n")
    r = CliRunner().invoke(import_command, [str(bad), "-c", str(cfg), "-q"])
    assert r.exit_code == 1 and "timestamp" in r.output


def test_query_outputs(tmp_path: Path, cfg: Path) -> None:
    f = tmp_path / "data.om"
    f.write_text(OM)
    run(import_command, str(f), "-c", str(cfg), "-q")
    t = str(NOW - 3600)
    r = run(query_command, "temp", "-c", str(cfg), "--time", t)
    lines = r.output.splitlines()
    assert lines[0].split() == ["SERIES", "TIME", "VALUE"] and "temp{}" in lines[1] and lines[1].endswith("20.5")
    r = run(query_command, "temp", "-c", str(cfg), "--time", t, "-o", "json")
    assert json.loads(r.output) == {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "temp"}, "value": [NOW - 3600, "20.5"]}]}}
    r = run(query_command, "temp", "-c", str(cfg), "--start", str(NOW - 3600), "--end", str(NOW - 3540),
            "--step", "30s", "-o", "json")
    assert json.loads(r.output)["data"]["result"][0]["values"] == [[NOW - 3600, "20.5"], [NOW - 3570, "20.5"],
                                                                  [NOW - 3540, "20.5"]]
    r = CliRunner().invoke(query_command, ["sum(", "-c", str(cfg)])
    assert r.exit_code == 1 and "parse error" in r.output
    r = run(query_command, "1 + 1", "-c", str(cfg), "--time", "-1h")
    assert r.output.split()[-1] == "2"


@pytest.fixture
def daemon_api(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An API server with a writer in a background thread, holding the daemon lock like a daemon."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    upgrade(engine)
    writer = Writer(engine)
    writer.start()
    port = free_port()
    lock = DaemonLock.acquire(tmp_path / "m.db", f"127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    app = web.Application()
    api = PrometheusApi(Reader(engine), writer=writer, retention_ms=30 * 86_400_000)
    api.add_routes(app)
    runner = web.AppRunner(app)
    started = threading.Event()
    calls: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        calls.append(request.path)
        return await handler(request)  # type: ignore[no-any-return]

    app.middlewares.append(record)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    started.wait(10)
    yield {"calls": calls}
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    th.join(10)
    loop.close()
    lock.release()
    writer.stop()
    engine.dispose()


def test_import_goes_through_the_daemon(tmp_path: Path, cfg: Path, daemon_api: dict[str, Any]) -> None:
    f = tmp_path / "data.om"
    f.write_text(OM)
    r = run(import_command, str(f), "-c", str(cfg), "-q")
    assert r.exit_code == 0, r.output
    assert "through the running daemon" in r.output and "imported 121 samples" in r.output
    assert "1 older than the retention skipped" in r.output
    assert "/api/v1/import" in daemon_api["calls"]
    assert count(tmp_path) == 121
