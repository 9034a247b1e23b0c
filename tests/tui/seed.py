"""A fixed seeded database for the TUI tests, written with the real Writer and alert store.

Everything is stamped relative to ``T0`` so that, with the clock fixed at ``T0``, every screen
draws the same frame on every run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mlwatch.model import Sample, SeriesKey
from mlwatch.sources.base import HEALTH_INDEX_KEY, Health, TargetHealth, health_key
from mlwatch.storage import alertstore
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.retention import RetentionPolicy
from mlwatch.storage.writer import WriteBatch, Writer

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
STEP = 15


def accuracy(t: float) -> float:
    """0.95 with a wobble, dropping to 0.82 over the last 40 minutes."""
    base = 0.95 + 0.01 * math.sin(t / 600)
    drop = max(0.0, (t - (T0 - 2400)) / 2400) * 0.13
    return round(base - drop, 4)


def build(path: Path, *, hours: float = 3, long_days: float = 0) -> Path:
    url = f"sqlite:///{path}"
    eng = make_engine(url)
    upgrade(eng)
    w = Writer(eng, clock=lambda: T0, out_of_order_window_ms=10**12)
    w.start()
    try:
        samples = []
        start = T0 - hours * 3600
        n = int(hours * 3600 / STEP)
        for i in range(n + 1):
            t = start + i * STEP
            ms = int(t * 1000)
            samples.append(Sample(SeriesKey.of("ai_model_accuracy", {"model": "fraud"}), ms, accuracy(t)))
            samples.append(
                Sample(
                    SeriesKey.of("ai_model_accuracy", {"model": "churn"}),
                    ms,
                    round(0.91 + 0.005 * math.cos(t / 900), 4),
                )
            )
            samples.append(Sample(SeriesKey.of("ai_model_predictions_total", {"model": "fraud"}), ms, float(i * 40)))
            samples.append(Sample(SeriesKey.of("up", {"job": "model-api", "instance": "127.0.0.1:8000"}), ms, 1.0))
            samples.append(
                Sample(
                    SeriesKey.of("up", {"job": "model-api", "instance": "127.0.0.1:8001"}),
                    ms,
                    1.0 if t < T0 - 600 else 0.0,
                )
            )
        w.write_sync(WriteBatch(samples=samples, backfill=True))
        if long_days:
            long = [
                Sample(
                    SeriesKey.of("node_load", {"host": "a"}),
                    int((T0 - long_days * 86400 + k * STEP) * 1000),
                    float(k % 5760) / 100,
                )
                for k in range(int(long_days * 86400 / STEP))
            ]
            w.write_sync(WriteBatch(samples=long, backfill=True))
            w.compact().result()
            w.maintain(
                RetentionPolicy(retention_ms=10**12, downsample=[(2 * 86400_000, 300_000)]), int(T0 * 1000)
            ).result()
        state = {}
        index = []
        up = TargetHealth("model-api", "127.0.0.1:8000", "http", "http://127.0.0.1:8000/metrics", {})
        up.health, up.last_scrape_ms, up.last_duration_s, up.samples_total = (
            Health.UP,
            int((T0 - 5) * 1000),
            0.012,
            5400,
        )
        down = TargetHealth("model-api", "127.0.0.1:8001", "http", "http://127.0.0.1:8001/metrics", {})
        down.health, down.last_scrape_ms, down.last_duration_s = Health.DOWN, int((T0 - 10) * 1000), 5.0
        down.last_error, down.last_error_ms, down.samples_total = "connection refused", int((T0 - 10) * 1000), 1200
        down.errors_total.update({"refused": 40})
        logs = TargetHealth("predictions", "/var/log/model/predictions.jsonl", "log", "", {})
        logs.health, logs.last_scrape_ms, logs.last_duration_s, logs.samples_total = (
            Health.UP,
            int((T0 - 1) * 1000),
            0.004,
            90000,
        )
        logs.record_bad(__import__("collections").Counter({"bad_json": 2}), ['{"pred": 1, "label": ', "garbage line"])
        for h in (up, down, logs):
            state[health_key(h.job, h.instance)] = h.to_json()
            index.append(health_key(h.job, h.instance))
        state[HEALTH_INDEX_KEY] = json.dumps(index).encode()
        w.write_sync(WriteBatch(state=state))
    finally:
        w.stop()
        eng.dispose()
    _alerts(path)
    return path


def _alerts(path: Path) -> None:
    conn = alertstore.open_direct(path)
    cond = 'ai_model_accuracy{model="fraud"} < 0.9'
    lab = {"alertname": "AccuracyLow", "model": "fraud", "severity": "critical"}
    ann = {"summary": "accuracy of fraud is 82%"}
    old = {"alertname": "AccuracyLow", "model": "churn", "severity": "critical"}
    ev = alertstore.EventRow
    events = [
        ev(T0 - 7000, "fp-churn", "AccuracyLow", "pending", old, {}, 0.89, T0 - 7000, cond.replace("fraud", "churn")),
        ev(T0 - 6700, "fp-churn", "AccuracyLow", "firing", old, {}, 0.88, T0 - 7000, cond.replace("fraud", "churn")),
        ev(T0 - 5400, "fp-churn", "AccuracyLow", "resolved", old, {}, 0.93, T0 - 7000, cond.replace("fraud", "churn")),
        ev(T0 - 1500, "fp-fraud", "AccuracyLow", "pending", lab, ann, 0.899, T0 - 1500, cond),
        ev(T0 - 1200, "fp-fraud", "AccuracyLow", "firing", lab, ann, 0.89, T0 - 1500, cond),
    ]
    alert = alertstore.AlertRow(
        "rules;AccuracyLow", "fp-fraud", lab, ann, "firing", 0.82, T0 - 1500, T0 - 1200, T0, T0, None, None
    )
    pend = alertstore.AlertRow(
        "rules;TargetDown",
        "fp-down",
        {"alertname": "TargetDown", "job": "model-api", "instance": "127.0.0.1:8001"},
        {"summary": "target 127.0.0.1:8001 down"},
        "pending",
        0.0,
        T0 - 120,
        None,
        T0,
        T0,
        None,
        None,
    )
    alertstore.save_alerts(conn, [alert, pend], [], events)
    payload = {"alerts": [{"labels": lab, "status": "firing"}]}
    alertstore.enqueue(
        conn,
        [
            ("k1", "oncall-email", "g1", payload, T0 - 1195, T0 + 86400),
            ("k2", "ops-hook", "g1", payload, T0 - 1195, T0 + 86400),
        ],
    )
    rows = {r.notifier: r.id for r in alertstore.load_notifications(conn)}
    alertstore.record_attempt(conn, rows["oncall-email"], T0 - 1190, True, "", 0.21, "delivered", 0)
    alertstore.record_attempt(
        conn, rows["ops-hook"], T0 - 1190, False, "HTTP 503 from http://127.0.0.1:5001/hook", 0.05, "pending", T0 - 1180
    )
    alertstore.record_attempt(conn, rows["ops-hook"], T0 - 1180, False, "connection refused", 0.01, "pending", T0 + 60)
    conn.close()
