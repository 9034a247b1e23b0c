"""The synthetic prediction stream, and the accuracy drop it makes visible through the log sources."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import orjson
import pytest

from mlwatch.config import LogSourceConfig, parse_config
from mlwatch.ml.operators import MlOperators
from mlwatch.ml.synthetic import ModelSpec, SyntheticStream, default_models, write_logs
from mlwatch.sources.logfile import LogFileSource


def test_stream_is_deterministic_imbalanced_and_drops() -> None:
    stream = SyntheticStream(models=default_models(drop_at_s=300), rate_per_s=50, seed=3)
    a = list(stream.events(600))
    assert a == list(SyntheticStream(models=default_models(drop_at_s=300), rate_per_s=50, seed=3).events(600))
    assert 25_000 < len(a) < 35_000
    assert all(x.ts <= y.ts for x, y in itertools.pairwise(a))
    fraud = [p for p in a if p.model == "fraud-v2"]
    assert 0.6 < len(fraud) / len(a) < 0.73  # share 2 of 3
    share_positive = Counter(p.label for p in fraud)["1"] / len(fraud)
    assert share_positive == pytest.approx(0.1, abs=0.02)
    before = [p.pred == p.label for p in fraud if p.ts < stream.start_s + 300]
    after = [p.pred == p.label for p in fraud if p.ts >= stream.start_s + 300]
    assert sum(before) / len(before) == pytest.approx(0.95, abs=0.01)
    assert sum(after) / len(after) == pytest.approx(0.6, abs=0.02)
    router = [p for p in a if p.model == "router-v1"]
    assert {p.pred for p in router} == {"billing", "support", "sales"} and all(p.score is None for p in router)
    assert all(0 <= p.score <= 1 for p in fraud if p.score is not None)
    delays = [p.label_ts - p.ts for p in a if p.label_ts is not None]
    assert len(delays) / len(a) == pytest.approx(0.9, abs=0.02)
    assert sum(delays) / len(delays) == pytest.approx(30, rel=0.1)
    lat = sorted(p.latency_ms for p in fraud)
    assert lat[len(lat) // 2] == pytest.approx(40, rel=0.1)


CONFIG = """
sources:
  - name: predictions
    type: log
    path: {dir}/predictions.jsonl
    timestamp: {{field: ts}}
    classification: {{prediction: pred, label: label, positive: 1, score: score, window: 1m, by: [model], prefix: demo}}
  - name: truth
    type: log
    path: {dir}/labels.jsonl
    timestamp: {{field: ts}}
    labels_for: {{source: predictions, key: request_id, max_delay: 10m}}
"""


def test_the_drop_shows_in_the_accuracy_series(tmp_path: Path) -> None:
    models = (ModelSpec("fraud-v2", weights=(0.5, 0.5), drop_at_s=300),)
    stream = SyntheticStream(models=models, rate_per_s=20, label_delay_s=5, label_share=1.0, seed=1)
    events = list(stream.events(600))
    labels = sorted((d for p in events if (d := p.label_line()) is not None), key=lambda d: d["ts"])
    cfgs = [s for s in parse_config(CONFIG.format(dir=tmp_path)).sources if isinstance(s, LogSourceConfig)]
    ops = MlOperators(cfgs)
    preds, truth = (LogFileSource(c, ops(c)) for c in cfgs)
    for src in (preds, truth):
        src.restore(None)
    accuracy: dict[int, float] = {}
    start = stream.start_s
    for step in range(60):  # the logs as they are written, ten seconds at a time
        lo, hi = start + step * 10, start + (step + 1) * 10
        with open(tmp_path / "predictions.jsonl", "ab") as f:
            f.writelines(orjson.dumps(p.line()) + b"\n" for p in events if lo <= p.ts < hi)
        with open(tmp_path / "labels.jsonl", "ab") as f:
            f.writelines(orjson.dumps(d) + b"\n" for d in labels if lo <= d["ts"] < hi)
        for src in (truth, preds):
            col = src.collect_sync(0)
            col.commit()
            accuracy.update((s.ts, s.value) for s in col.samples if s.key.name == "demo_accuracy")
    t0 = int(start * 1000)
    early = [v for ts, v in accuracy.items() if t0 + 120_000 <= ts < t0 + 290_000]
    late = [v for ts, v in accuracy.items() if ts >= t0 + 420_000]
    assert len(early) > 10 and len(late) > 10
    assert min(early) > 0.85 and max(late) < 0.75
    total = sum(1 for p in events)
    assert total == len(labels)
    assert write_logs(tmp_path, stream, 10) > 0  # the one-shot writer the demo uses
