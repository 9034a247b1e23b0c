"""``kill -9`` of a real daemon at random moments under mixed load (pushes, a scrape, a log, rules, a
webhook notifier) loses nothing acknowledged (CONTRACT §6); the harness is tests/reliability/mixedload.py,
its long version benchmarks/soak_kill.py."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from mlwatch.config import parse_config
from mlwatch.notify.service import AlertingService
from mlwatch.storage import alertstore
from mlwatch.storage.writer import Writer
from tests.reliability.mixedload import WebhookReceiver, run


@pytest.mark.timeout(300)  # four daemon starts: slow when the machine is busy
def test_kill_9_under_mixed_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    # Kills during a restart, bulk pushes and offline history (compactions under kills) are in the soak,
    # benchmarks/soak_kill.py; each costs time.
    f = run(tmp_path, 3, seed=20261125, run_s=(0.3, 1.5), startup_kill_chance=0.0)
    assert not f.failed, "\n".join(f.problems)
    assert f.kills >= 3
    assert f.acked_pushes > 0 and f.lines_written > 0 and f.lines_committed == f.lines_written
    assert f.notifications > 0 and f.deliveries >= f.notifications
    assert f.pending_kills >= 1  # a pending alert's for-timer was carried over a kill


# A deterministic case of what the random kills found: an alert resolves (its event is stored) and the
# daemon dies before the router's next flush queues the resolved notification.


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class Accuracy:
    """``ai_model_accuracy < 0.9`` over a settable value (the rules' query function)."""

    value = 0.5

    def __call__(self, expr: str, t: float) -> list[tuple[Mapping[str, str], float]]:
        if expr == "ai_model_samples":
            return []
        return [({"__name__": "ai_model_accuracy", "model": "m"}, self.value)] if self.value < 0.9 else []


class Scheduler:
    """The two calls AlertingService.start makes on APScheduler; time is driven by the test."""

    def add_job(self, *args: object, **kwargs: object) -> None:
        return None

    def get_jobs(self) -> list[Any]:
        return []


def _service(url: str, writer: Writer, clock: Clock, acc: Accuracy) -> AlertingService:
    cfg = parse_config(f"""
alerting: {{staleness_alerts: {{enabled: false}}}}
rules:
  - {{alert: AccuracyLow, expr: ai_model_accuracy < 0.9, for: 30s}}
notifiers:
  - {{name: hook, type: webhook, url: {url}}}
routes:
  - {{notifiers: [hook], group_by: [alertname], group_wait: 10s, group_interval: 1m, repeat_interval: 1h}}
""")
    return AlertingService(cfg, query=acc, writer=writer, clock=clock, rng=random.Random(1))


async def _step(svc: AlertingService, clock: Clock, seconds: int) -> None:
    for _ in range(seconds // 5):
        clock.t += 5
        await svc.evaluate(t=clock.t)
        await svc.tick(clock.t)


async def test_resolution_stored_just_before_a_crash_is_still_notified(engine: Engine) -> None:
    receiver = WebhookReceiver()
    clock, acc = Clock(), Accuracy()
    w = Writer(engine, clock=clock)
    w.start()
    try:
        svc = _service(receiver.url, w, clock, acc)
        await svc.start(Scheduler())
        await _step(svc, clock, 60)  # pending 30s, firing, group_wait 10s: "firing" delivered
        assert [d.status for d in receiver.snapshot()] == ["firing"]
        acc.value = 0.95
        clock.t += 5
        await svc.evaluate(t=clock.t)  # the resolved event is stored; the crash comes before the next tick
    finally:
        w.stop()
    w2 = Writer(engine, clock=clock)
    w2.start()
    try:
        svc2 = _service(receiver.url, w2, clock, acc)
        await svc2.start(Scheduler())
        await _step(svc2, clock, 30)
        assert [d.status for d in receiver.snapshot()] == ["firing", "resolved"]
        await _step(svc2, clock, 120)
        assert len(receiver.snapshot()) == 2  # told once
        conn = alertstore.open_direct(str(engine.url).removeprefix("sqlite:///"), readonly=True)
        try:
            assert [e.event for e in alertstore.load_events(conn)] == ["pending", "firing", "resolved"]
            assert all(n.status == "delivered" for n in alertstore.load_notifications(conn))
        finally:
            conn.close()
    finally:
        w2.stop()
        receiver.server.close()
