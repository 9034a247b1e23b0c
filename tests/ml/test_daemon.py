"""A real ``mlwatch daemon`` turns a prediction log and a late label log into quality series (HTTP API, /metrics)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import requests

sklearn_metrics = pytest.importorskip("sklearn.metrics")

T0 = 1_700_000_000


def test_daemon_serves_quality_series_from_logs(daemon_factory: object, tmp_path: Path) -> None:
    rows = [{"ts": T0 + i, "model": "m1", "request_id": f"q{i}", "pred": i % 2, "label": (i // 3) % 2}
            for i in range(60)]  # fmt: skip
    (tmp_path / "predictions.jsonl").write_bytes(
        b"".join(orjson.dumps({k: v for k, v in r.items() if k != "label"}) + b"\n" for r in rows)
    )
    (tmp_path / "labels.jsonl").write_bytes(
        b"".join(
            orjson.dumps({"ts": T0 + 70, "request_id": r["request_id"], "label": r["label"]}) + b"\n" for r in rows
        )
    )
    config = f"""
sources:
  - name: predictions
    type: log
    path: {tmp_path}/predictions.jsonl
    timestamp: {{field: ts}}
    classification: {{prediction: pred, label: label, positive: 1, window: 5m, by: [model], prefix: ai_model}}
  - name: ground-truth
    type: log
    path: {tmp_path}/labels.jsonl
    timestamp: {{field: ts}}
    labels_for: {{source: predictions, key: request_id, max_delay: 1h}}
"""
    d = daemon_factory(config)  # type: ignore[operator]
    y, p = [r["label"] for r in rows], [r["pred"] for r in rows]
    want = sklearn_metrics.accuracy_score(y, p)
    deadline = time.monotonic() + 30
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        r = requests.get(f"{d.url}/api/v1/query", params={"query": "ai_model_samples", "time": str(T0 + 70)}, timeout=5)
        result = r.json()["data"]["result"]
        if result and float(result[0]["value"][1]) == 60:  # type: ignore[index]
            break
        time.sleep(0.3)
    assert result and float(result[0]["value"][1]) == 60, result  # type: ignore[index]
    r = requests.get(f"{d.url}/api/v1/query", params={"query": "ai_model_accuracy", "time": str(T0 + 70)}, timeout=5)
    (series,) = r.json()["data"]["result"]
    assert series["metric"]["model"] == "m1" and series["metric"]["job"] == "predictions"
    assert float(series["value"][1]) == pytest.approx(want, abs=1e-12)
    text = requests.get(f"{d.url}/metrics", timeout=5).text
    assert "# TYPE ai_model_tp_total counter" in text
    assert "# TYPE ai_model_label_delay_seconds histogram" in text
    assert d.stop() == 0
