"""``alerting.alertmanagers`` against a real Alertmanager (Debian's prometheus-alertmanager) on a free
loopback port with a temporary storage dir: it receives our alerts, groups them, notifies its own
webhook receiver, and resolves them when we send endsAt."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlwatch.notify.alertmanager import AlertmanagerSender, am_alerts
from mlwatch.rules.state import Alert, AlertState
from tests.helpers import free_port, wait_http
from tests.notify.conftest import Receiver

AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(AM is None, reason="prometheus-alertmanager is not installed"),
]


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    cfg = tmp_path / "am.yml"
    cfg.write_text(f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {receiver.url}/am
        send_resolved: true
""")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(AM),
            f"--config.file={cfg}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _alert(t: float, state: AlertState, model: str) -> Alert:
    a = Alert(
        "r",
        {"alertname": "AccuracyLow", "model": model, "severity": "critical"},
        {"summary": f"accuracy of {model} is low"},
        state,
        0.8,
        t - 120,
        fired_at=t - 60,
    )
    if state is AlertState.RESOLVED:
        a.resolved_at = t
    return a


def test_shape_of_posted_alerts() -> None:
    t = 1_700_000_000.0
    body = am_alerts(
        [_alert(t, AlertState.FIRING, "a"), _alert(t, AlertState.PENDING, "p"), _alert(t, AlertState.RESOLVED, "b")],
        t,
        60.0,
        {"site": "lab", "model": "ignored"},
    )
    assert [b["labels"]["model"] for b in body] == ["a", "b"]  # pending alerts are not sent
    assert body[0]["labels"]["site"] == "lab"
    assert body[0]["startsAt"] == "2023-11-14T22:12:20.000Z"
    assert body[0]["endsAt"] == "2023-11-14T22:14:20.000Z"  # t + valid_for
    assert body[1]["endsAt"] == "2023-11-14T22:13:20.000Z"  # resolved at t


async def test_real_alertmanager_receives_groups_and_resolves(alertmanager: str, receiver: Receiver) -> None:
    import time

    sender = AlertmanagerSender([alertmanager], external_labels={"site": "lab"})
    now = time.time()
    await sender.send(
        [_alert(now, AlertState.FIRING, "a"), _alert(now, AlertState.FIRING, "b")],
        now,
        60.0,
        "http://127.0.0.1:9091/graph",
    )
    assert sender.errors == 0 and sender.sent == 2
    got = (await asyncio.to_thread(requests.get, f"{alertmanager}/api/v2/alerts", timeout=5)).json()
    assert sorted(a["labels"]["model"] for a in got) == ["a", "b"]
    assert all(a["status"]["state"] == "active" and a["labels"]["site"] == "lab" for a in got)
    # One group holding both (a loaded machine may see a first flush with one, then the group_interval update).
    await _wait(lambda: any(b["status"] == "firing" and len(b["alerts"]) == 2 for b in receiver.bodies))
    assert all(b["groupLabels"] == {"alertname": "AccuracyLow"} for b in receiver.bodies)

    # Every evaluation sends every active alert again; resolving one sends endsAt = resolution time.
    now = time.time()
    await sender.send([_alert(now, AlertState.FIRING, "a"), _alert(now, AlertState.RESOLVED, "b")], now, 60.0)
    await _wait(
        lambda: any(
            any(x["status"] == "resolved" and x["labels"]["model"] == "b" for x in b["alerts"]) for b in receiver.bodies
        )
    )
    got = (await asyncio.to_thread(requests.get, f"{alertmanager}/api/v2/alerts?active=true", timeout=5)).json()
    assert [a["labels"]["model"] for a in got if a["status"]["state"] == "active"] == ["a"]


async def test_unreachable_alertmanager_is_counted_not_fatal() -> None:
    sender = AlertmanagerSender([f"http://127.0.0.1:{free_port()}"], timeout_s=2)
    await sender.send([_alert(1.0, AlertState.FIRING, "a")], 1.0, 60.0)
    assert sender.errors == 1 and "127.0.0.1" in sender.last_error


async def _wait(cond: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_service_sends_every_evaluation(alertmanager: str, engine: object) -> None:
    """The daemon's path: evaluation -> AlertmanagerSender, with endsAt 4 evaluation intervals ahead."""
    import time

    from mlwatch.config import parse_config
    from mlwatch.notify.service import AlertingService
    from mlwatch.storage.writer import Writer

    cfg = parse_config(f"""
evaluation_interval: 30s
alerting: {{alertmanagers: ["{alertmanager}"], staleness_alerts: {{enabled: false}}, external_labels: {{site: lab}}}}
rules: [{{alert: ModelDown, expr: "vector(1)", labels: {{model: m}}}}]
""")
    w = Writer(engine)  # type: ignore[arg-type]
    w.start()
    try:
        svc = AlertingService(cfg, query=lambda e, t: [({}, 1.0)], writer=w)
        await svc.evaluate()
        got = (await asyncio.to_thread(requests.get, f"{alertmanager}/api/v2/alerts", timeout=5)).json()
        (a,) = got
        assert a["labels"] == {"alertname": "ModelDown", "model": "m", "site": "lab"}
        ends = a["endsAt"]
        import datetime as dt

        left = dt.datetime.fromisoformat(ends).timestamp() - time.time()
        assert 100 < left <= 120  # 4 x 30s
        assert svc.am.sent == 1 and svc.am.errors == 0
    finally:
        w.stop()
