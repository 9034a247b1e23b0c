"""Latency quantiles and throughput of a synthetic prediction log, through the log source, SQLite and PromQL."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from mlwatch.config import parse_config
from mlwatch.ml.operators import MlOperators
from mlwatch.ml.synthetic import ModelSpec, SyntheticStream
from mlwatch.promql.engine import Engine
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.ml.conftest import FakeClock

BUCKETS = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1]
CONFIG = f"""
sources:
  - name: predictions
    type: log
    path: {{dir}}/predictions.jsonl
    timestamp: {{{{field: ts}}}}
    metrics:
      - {{{{name: ai_model_predictions_total, type: counter, labels: {{{{model: "{{{{model}}}}"}}}}}}}}
      - {{{{name: ai_model_latency_seconds, type: histogram, field: latency_ms, scale: 0.001, buckets: {BUCKETS}}}}}
    classification: {{{{prediction: pred, label: label, positive: 1, window: 5m, prefix: ai_model}}}}
"""


async def test_latency_quantiles_and_tps_through_promql(
    tmp_path: Path, writer: Writer, reader: Reader, clock: FakeClock
) -> None:
    stream = SyntheticStream(models=(ModelSpec("m", drop_at_s=None),), rate_per_s=20, seed=4)
    events = list(stream.events(600))
    cfg = parse_config(CONFIG.format(dir=tmp_path))
    m = SourceManager(cfg.sources, writer, reader, clock=clock, operators_for=MlOperators(cfg.sources))
    await m.start(None)
    path = tmp_path / "predictions.jsonl"
    for step in range(60):  # written and read ten seconds at a time
        lo, hi = stream.start_s + step * 10, stream.start_s + (step + 1) * 10
        chunk = [e for e in events if lo <= e.ts < hi]
        with path.open("ab") as f:
            f.writelines(orjson.dumps(e.line(with_label=True)) + b"\n" for e in chunk)
        await m.run_once()
        clock.advance(10)
    await m.stop()
    engine = Engine(reader)
    t = int(events[-1].ts * 1000)
    recent = sorted(e.latency_ms / 1000 for e in events if e.ts > events[-1].ts - 300)
    for q in (0.5, 0.95, 0.99):
        res = engine.instant(f"histogram_quantile({q}, sum by (le) (rate(ai_model_latency_seconds_bucket[5m])))", t)
        ((_, _, values),) = res.series
        got = float(values[-1])
        exact = recent[min(len(recent) - 1, math.ceil(q * len(recent)) - 1)]
        # the estimate interpolates inside the bucket holding the exact quantile
        upper = next(b for b in BUCKETS if b >= exact)
        lower = max([0.0] + [b for b in BUCKETS if b < exact])
        assert lower <= got <= upper, (q, got, exact)
    res = engine.instant("sum(rate(ai_model_predictions_total[5m]))", t)
    ((_, _, values),) = res.series
    assert float(values[-1]) == pytest.approx(20, rel=0.1)
    # quality over any range is a ratio of summed counters
    ratio = engine.instant(
        "sum(increase(ai_model_tp_total[5m])) / (sum(increase(ai_model_tp_total[5m])) + sum(increase(ai_model_fn_total[5m])))",
        t,
    )
    ((_, _, values),) = ratio.series
    assert 0.8 < float(values[-1]) <= 1.0
