"""/api/v2/silences, /api/v1/alerts and /api/v1/rules over a running AlertingService, and the
`alerts`, `silence` and `notify` commands, both directly on the database and through a daemon's API."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import requests
from aiohttp import web
from click.testing import CliRunner

from mlwatch.commands.alerts import alerts_command
from mlwatch.commands.notify import notify_group
from mlwatch.commands.silence import silence_group
from mlwatch.notify.service import AlertingService
from mlwatch.server.alerting_api import AlertingApi
from mlwatch.storage.database import DaemonLock, make_engine, upgrade
from mlwatch.storage.writer import Writer
from tests.helpers import free_port

RULES = """
alerting: {staleness_alerts: {enabled: false}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    labels: {severity: critical}
    annotations: {summary: "accuracy of {{ $labels.model }} is {{ $value | humanizePercentage }}"}
  - alert: TPSHigh
    threshold: {expr: "sum(rate(ai_model_predictions_total[1m]))", above: 6000, for: 2m}
  - record: "job:acc:avg"
    expr: avg(ai_model_accuracy)
"""


def query(expr: str, t: float) -> list[tuple[dict[str, str], float]]:
    if expr == "ai_model_accuracy < 0.9":
        return [({"__name__": "ai_model_accuracy", "model": "m"}, 0.85)]
    if expr == "ai_model_samples":  # the sample count behind the accuracy (mlwatch.rules.samples)
        return [({"__name__": "ai_model_samples", "model": "m"}, 240.0)]
    return []


class Daemonish:
    """An AlertingService and its API on a loopback port, in a thread with its own loop."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.db = tmp_path / "mlwatch.db"
        self.url_db = f"sqlite:///{self.db}"
        upgrade(make_engine(self.url_db))
        self.cfg_path = tmp_path / "mlwatch.yaml"
        self.port = free_port()
        self.cfg_path.write_text(
            f"storage: {{url: '{self.url_db}'}}\nserver: {{listen: '127.0.0.1:{self.port}'}}\n" + RULES + extra
        )
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        from mlwatch.config import load_config

        self.writer = Writer(make_engine(self.url_db))
        self.writer.start()
        self.service = AlertingService(load_config(str(self.cfg_path)), query=query, writer=self.writer)
        await self.service.evaluate()
        app = web.Application()
        AlertingApi(self.service).add_routes(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> Daemonish:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.writer.stop()
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def daemonish(tmp_path: Path) -> Iterator[Daemonish]:
    d = Daemonish(tmp_path).start()
    yield d
    d.stop()


def run(cmd: click.Command, args: list[str]) -> Any:
    return CliRunner().invoke(cmd, args, catch_exceptions=False)


def test_prometheus_alerts_and_rules_shapes(daemonish: Daemonish) -> None:
    body = requests.get(f"{daemonish.url}/api/v1/alerts", timeout=5).json()
    assert body["status"] == "success"
    (a,) = body["data"]["alerts"]
    assert a["labels"] == {"alertname": "AccuracyLow", "model": "m", "severity": "critical"}
    assert a["state"] == "firing" and a["value"] == "0.85" and a["activeAt"].endswith("Z")
    assert a["annotations"]["summary"] == "accuracy of m is 85%"
    rules = requests.get(f"{daemonish.url}/api/v1/rules", timeout=5).json()["data"]["groups"][0]["rules"]
    assert [r["type"] for r in rules] == ["alerting", "alerting", "recording"]
    assert rules[0]["state"] == "firing" and rules[0]["health"] == "ok"
    assert rules[1]["query"] == "(sum(rate(ai_model_predictions_total[1m]))) > 6000" and rules[1]["duration"] == 120
    only = requests.get(f"{daemonish.url}/api/v1/rules?type=record", timeout=5).json()["data"]["groups"][0]["rules"]
    assert [r["name"] for r in only] == ["job:acc:avg"]


def test_silences_api_is_alertmanager_shaped(daemonish: Daemonish) -> None:
    post = {
        "matchers": [{"name": "alertname", "value": "AccuracyLow", "isRegex": False}],
        "startsAt": "2020-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "me",
        "comment": "x",
    }
    sid = requests.post(f"{daemonish.url}/api/v2/silences", json=post, timeout=5).json()["silenceID"]
    (s,) = requests.get(f"{daemonish.url}/api/v2/silences", timeout=5).json()
    assert s["id"] == sid and s["status"] == {"state": "active"} and s["matchers"][0]["isEqual"] is True
    assert requests.delete(f"{daemonish.url}/api/v2/silence/{sid}", timeout=5).status_code == 200
    assert requests.get(f"{daemonish.url}/api/v2/silences", timeout=5).json()[0]["status"]["state"] == "expired"
    bad = requests.post(f"{daemonish.url}/api/v2/silences", json={"matchers": []}, timeout=5)
    assert bad.status_code == 400 and "matcher" in bad.json()
    assert requests.delete(f"{daemonish.url}/api/v2/silence/nope", timeout=5).status_code == 404


def test_cli_goes_through_the_daemon_when_one_holds_the_db(daemonish: Daemonish) -> None:
    lock = DaemonLock.acquire(daemonish.db, f"127.0.0.1:{daemonish.port}")
    try:
        res = run(
            silence_group,
            [
                "add",
                "alertname=AccuracyLow",
                'model=~"m.*"',
                "--duration",
                "1h",
                "--comment",
                "deploy",
                "-c",
                str(daemonish.cfg_path),
            ],
        )
        assert res.exit_code == 0, res.output
        sid = res.output.strip()
        assert [s.id for s in daemonish.service.silences] == [sid]  # applied in the daemon at once
        res = run(silence_group, ["list", "-c", str(daemonish.cfg_path)])
        assert sid in res.output and 'model=~"m.*"' in res.output and "deploy" in res.output
        res = run(silence_group, ["expire", sid, "-c", str(daemonish.cfg_path)])
        assert res.exit_code == 0 and daemonish.service.silences[0].state(daemonish.service.clock()) == "expired"
    finally:
        lock.release()


def test_cli_without_a_daemon(daemonish: Daemonish) -> None:
    cfg = str(daemonish.cfg_path)
    res = run(alerts_command, ["-o", "json", "-c", cfg])
    (item,) = json.loads(res.output)
    assert set(item) >= {"labels", "annotations", "state", "activeAt", "value"}
    assert item["state"] == "firing" and item["condition"] == "ai_model_accuracy < 0.9"
    assert item["annotations"]["samples"] == "240"
    res = run(alerts_command, ["--history", "-o", "json", "-c", cfg])
    assert [e["event"] for e in json.loads(res.output)] == ["firing"]
    res = run(alerts_command, ["-c", cfg])
    assert "FIRING" in res.output and "AccuracyLow" in res.output and "accuracy of m is 85%" in res.output
    header, row = res.output.splitlines()[:2]
    assert "SAMPLES" in header and row[header.index("SAMPLES") :].startswith("240 ")
    res = run(silence_group, ["add", "alertname=AccuracyLow", "--duration", "30m", "-c", cfg])
    assert res.exit_code == 0
    res = run(silence_group, ["list", "-o", "json", "-c", cfg])
    assert json.loads(res.output)[0]["matchers"][0]["value"] == "AccuracyLow"
    res = CliRunner().invoke(silence_group, ["add", "alertname", "-c", cfg])
    assert res.exit_code == 2 and "invalid matcher" in res.output


def test_notify_test_command(tmp_path: Path) -> None:
    d = Daemonish(
        tmp_path,
        "notifiers:\n  - {name: fail, type: exec, command: [/bin/false]}\n"
        "  - {name: ok, type: exec, command: [/bin/true]}\n",
    ).start()
    try:
        cfg = str(d.cfg_path)
        res = run(notify_group, ["test", "ok", "-c", cfg])
        assert res.exit_code == 0 and "delivered" in res.output
        res = CliRunner().invoke(notify_group, ["test", "fail", "-c", cfg])
        assert res.exit_code == 1 and "exited with 1" in res.output
        res = CliRunner().invoke(notify_group, ["test", "nope", "-c", cfg])
        assert res.exit_code == 2 and "notifiers: fail, ok" in res.output
        lock = DaemonLock.acquire(d.db, f"127.0.0.1:{d.port}")
        try:
            res = run(notify_group, ["test", "ok", "-c", cfg])
            assert res.exit_code == 0
        finally:
            lock.release()
    finally:
        d.stop()
