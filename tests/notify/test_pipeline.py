"""The whole alerting pipeline on a real database: rule -> alert history -> route -> outbox -> a real
webhook receiver on loopback; outages, retries with backoff, idempotency keys, restarts."""

from __future__ import annotations

import email
import itertools
import json
import random
import sqlite3
import sys
from email import policy
from pathlib import Path
from typing import Any

from mlwatch.config import parse_config
from mlwatch.notify.service import AlertingService
from mlwatch.storage import alertstore
from mlwatch.storage.writer import Writer
from tests.notify.conftest import Clock, Receiver, Sink


def _config(url: str, extra: str = "", hook: str = "", env: dict[str, str] | None = None) -> object:
    return parse_config(env=env or {}, text=f"""
alerting: {{staleness_alerts: {{enabled: false}}}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    for: 30s
    labels: {{severity: critical}}
    annotations: {{summary: "accuracy of {{{{ $labels.model }}}} is {{{{ $value | humanizePercentage }}}}"}}
notifiers:
  - {{name: hook, type: webhook, url: {url}/hook{hook}}}
routes:
  - {{notifiers: [hook], group_by: [alertname], group_wait: 10s, group_interval: 1m, repeat_interval: 1h}}
{extra}""")


class Acc:
    """ai_model_accuracy{model="m"} at ``value``, computed from ``samples`` outcomes (ai_model_samples)."""

    def __init__(self) -> None:
        self.value = 0.95
        self.samples = 37.0

    def __call__(self, expr: str, t: float) -> list:
        if expr == "ai_model_samples":  # the sample count's companion (mlwatch.rules.samples)
            return [({"__name__": "ai_model_samples", "model": "m"}, self.samples)]
        assert expr == "ai_model_accuracy < 0.9"
        return [({"__name__": "ai_model_accuracy", "model": "m"}, self.value)] if self.value < 0.9 else []


def _db(writer: Writer) -> sqlite3.Connection:
    url = str(writer._engine.url)
    return alertstore.open_direct(url.removeprefix("sqlite:///"), readonly=True)


async def _run(svc: AlertingService, clock: Clock, seconds: int, step: int = 5) -> None:
    for _ in range(seconds // step):
        clock.t += step
        await svc.evaluate(t=clock.t)
        await svc.tick(clock.t)


async def test_fire_notify_resolve(writer: Writer, clock: Clock, receiver: Receiver) -> None:
    acc = Acc()
    svc = AlertingService(_config(receiver.url), query=acc, writer=writer, clock=clock, rng=random.Random(1))

    class Sched:
        def add_job(self, *a: object, **k: object) -> None: ...
        def get_jobs(self) -> list:
            return []

    await svc.start(Sched())
    await _run(svc, clock, 20)
    assert receiver.bodies == []
    acc.value = 0.8
    await _run(svc, clock, 60)  # pending 30s, firing, then group_wait 10s
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["model"] == "m"
    assert body["alerts"][0]["annotations"]["summary"] == "accuracy of m is 80%"
    key = body["mlwatch"]["idempotencyKey"]
    assert receiver.headers[0]["Idempotency-Key"] == key
    acc.value = 0.95
    await _run(svc, clock, 70)
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    conn = _db(writer)
    events = alertstore.load_events(conn)
    assert [e.event for e in events] == ["pending", "firing", "resolved"]
    notes = alertstore.load_notifications(conn)
    assert [n.status for n in notes] == ["delivered", "delivered"]
    assert all(n.attempts == 1 for n in notes)


async def test_receiver_outage_retries_with_backoff_without_duplicates(
    writer: Writer, clock: Clock, receiver: Receiver
) -> None:
    acc = Acc()
    acc.value = 0.5
    svc = AlertingService(_config(receiver.url), query=acc, writer=writer, clock=clock, rng=random.Random(7))
    receiver.fail = 4
    await _run(svc, clock, 45)  # firing after 30s, group_wait 10s: first attempts fail
    for _ in range(300):  # five minutes in 1s steps: retries until the receiver is back
        clock.t += 1
        await svc.tick(clock.t)
    assert len(receiver.bodies) == 1  # delivered exactly once
    conn = _db(writer)
    (n,) = alertstore.load_notifications(conn)
    assert n.status == "delivered" and n.attempts == 5
    attempts = alertstore.load_attempts(conn, n.id)
    assert [ok for _, ok, _, _ in attempts] == [False] * 4 + [True]
    assert "503" in attempts[0][2]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # backing off


async def test_undeliverable_notification_expires(writer: Writer, clock: Clock, receiver: Receiver) -> None:
    acc = Acc()
    acc.value = 0.5
    cfg = _config("http://127.0.0.1:9", "")  # nothing listens on port 9
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"outbox_expiry": 120_000})})
    svc = AlertingService(cfg, query=acc, writer=writer, clock=clock, rng=random.Random(3))
    await _run(svc, clock, 45)
    for _ in range(30):
        clock.t += 10
        await svc.tick(clock.t)
    (n,) = alertstore.load_notifications(_db(writer))
    assert n.status == "expired" and n.attempts >= 2 and n.last_error


async def test_restart_neither_refires_nor_renotifies(
    tmp_path: Path, engine: object, clock: Clock, receiver: Receiver
) -> None:
    acc = Acc()
    acc.value = 0.5
    w = Writer(engine, clock=clock)  # type: ignore[arg-type]
    w.start()
    svc = AlertingService(_config(receiver.url), query=acc, writer=w, clock=clock)

    class Sched:
        def add_job(self, *a: object, **k: object) -> None: ...
        def get_jobs(self) -> list:
            return []

    await svc.start(Sched())
    await _run(svc, clock, 60)
    assert len(receiver.bodies) == 1
    w.stop()

    w2 = Writer(engine, clock=clock)  # type: ignore[arg-type]
    w2.start()
    try:
        svc2 = AlertingService(_config(receiver.url), query=acc, writer=w2, clock=clock)
        await svc2.start(Sched())
        await _run(svc2, clock, 120)
        assert len(receiver.bodies) == 1  # no second notification
        events = alertstore.load_events(_db(w2))
        assert [e.event for e in events] == ["pending", "firing"]
        assert svc2.active_alerts()[0].state.value == "firing"
    finally:
        w2.stop()


async def test_silence_through_the_service(writer: Writer, clock: Clock, receiver: Receiver) -> None:
    from mlwatch.notify.silences import Silence, parse_matcher

    acc = Acc()
    acc.value = 0.5
    svc = AlertingService(_config(receiver.url), query=acc, writer=writer, clock=clock)
    await svc.add_silence(Silence("s", (parse_matcher("alertname=AccuracyLow"),), clock.t, clock.t + 3600))
    await _run(svc, clock, 120)
    assert receiver.bodies == []
    assert await svc.expire_silence("s")
    await _run(svc, clock, 90)
    assert len(receiver.bodies) == 1


async def test_notify_test(writer: Writer, clock: Clock, receiver: Receiver) -> None:
    svc = AlertingService(_config(receiver.url), query=Acc(), writer=writer, clock=clock)
    assert await svc.notify_test("hook") == "delivered"
    assert receiver.bodies[0]["alerts"][0]["labels"]["alertname"] == "MlwatchTestNotification"


async def test_reload_keeps_alerts_of_kept_rules_and_resolves_removed_ones(
    writer: Writer, clock: Clock, receiver: Receiver
) -> None:
    import asyncio

    acc = Acc()
    acc.value = 0.5
    svc = AlertingService(_config(receiver.url), query=acc, writer=writer, clock=clock)
    jobs: list[str] = []

    class Sched:
        def add_job(self, *a: object, **k: object) -> None:
            jobs.append(str(k["id"]))

        def get_jobs(self) -> list:
            return []

    await svc.start(Sched())
    await _run(svc, clock, 60)
    assert "alerting-tick" in jobs and any(j.startswith("rules:") for j in jobs)
    svc.reconfigure(_config(receiver.url))  # same rules: the alert stays, no new events
    await asyncio.gather(*svc._background)
    assert svc.active_alerts()[0].state.value == "firing"
    svc.reconfigure(_config(receiver.url).model_copy(update={"rules": []}))
    await asyncio.gather(*svc._background)
    assert svc.active_alerts() == []
    events = alertstore.load_events(_db(writer))
    assert [e.event for e in events] == ["pending", "firing", "resolved"]
    assert events[-1].condition == "rule removed"
    clock.t += 60
    await svc.tick(clock.t)
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]  # receivers hear it ended


async def test_history_retention(writer: Writer, clock: Clock, receiver: Receiver) -> None:
    acc = Acc()
    acc.value = 0.5
    svc = AlertingService(_config(receiver.url), query=acc, writer=writer, clock=clock)
    await _run(svc, clock, 60)
    acc.value = 0.95
    await _run(svc, clock, 90)
    assert len(alertstore.load_events(_db(writer))) == 3
    assert await svc.maintain(clock.t) == 0
    assert await svc.maintain(clock.t + 31 * 86400) > 0  # storage.retention defaults to 30d
    conn = _db(writer)
    assert alertstore.load_events(conn) == [] and alertstore.load_notifications(conn) == []


async def test_every_channel_says_the_sample_count(
    writer: Writer, clock: Clock, receiver: Receiver, smtp_sink: Any, tmp_path: Path
) -> None:
    """Value, condition, sample count and how to silence: in the e-mail (text and HTML), the webhook
    payload (a ``samples`` field and annotation), the Apprise body and the exec JSON."""
    sink: Sink = smtp_sink[0]
    port = receiver.url.rsplit(":", 1)[1]
    out = tmp_path / "exec.json"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    extra = f"""
  - {{name: mail, type: email, smtp: {{host: 127.0.0.1, port: {smtp_sink[1]}}}, from: a@example.com, to: [b@example.com]}}
  - {{name: chat, type: apprise, urls: ["json://127.0.0.1:{port}/apprise"]}}
  - {{name: failover, type: exec, command: {json.dumps([sys.executable, "-c", script, str(out)])}}}
"""
    cfg = parse_config(
        f"""
alerting: {{staleness_alerts: {{enabled: false}}}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    for: 30s
notifiers:
  - {{name: hook, type: webhook, url: {receiver.url}/hook}}{extra}
routes:
  - {{notifiers: [hook, mail, chat, failover], group_wait: 10s, group_interval: 1m, repeat_interval: 1h}}
"""
    )
    acc = Acc()
    acc.value, acc.samples = 0.8, 412.0
    svc = AlertingService(cfg, query=acc, writer=writer, clock=clock, rng=random.Random(1))
    await _run(svc, clock, 60)
    for _ in range(20):  # the channels deliver from the outbox
        clock.t += 1
        await svc.tick(clock.t)
    hook, chat = (
        next(b for b in receiver.bodies if "mlwatch" in b),
        next(b for b in receiver.bodies if "mlwatch" not in b),
    )
    (alert,) = hook["alerts"]
    assert alert["samples"] == 412 and alert["annotations"]["samples"] == "412"
    assert alert["value"] == "0.8" and alert["condition"] == "ai_model_accuracy < 0.9"
    assert "  samples: 412" in hook["mlwatch"]["text"] and hook["mlwatch"]["text"].count("samples:") == 1
    assert hook["mlwatch"]["silence"] == "mlwatch silence add 'alertname=\"AccuracyLow\"' --duration 2h --comment '...'"

    assert "samples: 412" in chat["message"] and "To silence: mlwatch silence add" in chat["message"]

    ((_, _, raw),) = sink.messages
    msg = email.message_from_bytes(raw, policy=policy.default)
    plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "value: 0.8" in plain and "condition: ai_model_accuracy < 0.9" in plain and "samples: 412" in plain
    assert "<th>samples</th>" in html and "<td>412</td>" in html

    got = json.loads(out.read_text())
    assert got["alerts"][0]["samples"] == 412

    events = alertstore.load_events(_db(writer))  # the history keeps the count with the alert
    assert [e.annotations.get("samples") for e in events] == ["412", "412"]


async def test_a_secret_echoed_by_a_receiver_is_not_recorded(
    writer: Writer, clock: Clock, receiver: Receiver, caplog: Any
) -> None:
    """A receiver that echoes the Authorization header in its error: the token reaches neither the
    attempt's recorded error nor the log."""
    token = "s3cr3t-token-value"
    receiver.fail, receiver.echo_auth = 1000, True
    cfg = _config(receiver.url, hook=", bearer_token_env: HOOK_TOKEN", env={"HOOK_TOKEN": token})
    acc = Acc()
    acc.value = 0.5
    svc = AlertingService(cfg, query=acc, writer=writer, clock=clock, env={"HOOK_TOKEN": token})
    await _run(svc, clock, 45)
    (n,) = alertstore.load_notifications(_db(writer))
    errors = [e for _, _, e, _ in alertstore.load_attempts(_db(writer), n.id)]
    assert errors and all("bad auth: Bearer <secret>" in e for e in errors), errors
    assert token not in caplog.text and "<secret>" in caplog.text
