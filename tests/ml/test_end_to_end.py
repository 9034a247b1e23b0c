"""A real log file -> log source with ML operators -> source manager -> SQLite -> the expected series."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mlwatch.config import parse_config
from mlwatch.ml.operators import MlOperators
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.ml.conftest import FakeClock
from tests.sources.conftest import Stored

sklearn_metrics = pytest.importorskip("sklearn.metrics")

CONFIG = """
sources:
  - name: predictions
    type: log
    path: {dir}/predictions*.jsonl
    timestamp: {{field: ts}}
    classification:
      prediction: pred
      label: label
      positive: 1
      window: 1m
      by: [model]
      prefix: ai_model
  - name: ground-truth
    type: log
    path: {dir}/labels.jsonl
    timestamp: {{field: ts}}
    labels_for: {{source: predictions, key: request_id, max_delay: 1h}}
"""

T0 = 1_700_000_000  # seconds


async def test_log_file_to_stored_series(
    tmp_path: Path, writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    cfg = parse_config(CONFIG.format(dir=tmp_path))
    rows = [{"ts": T0 + i, "model": "m1" if i % 3 else "m2", "request_id": f"q{i}", "pred": (i * 5) % 2,
             "label": (i * 3 + i // 7) % 2} for i in range(50)]  # fmt: skip
    # the first 30 carry their label; the labels of the rest arrive later, ten seconds after the last
    preds = [r if i < 30 else {k: v for k, v in r.items() if k != "label"} for i, r in enumerate(rows)]
    labels = [{"ts": T0 + 60, "request_id": r["request_id"], "label": r["label"]} for r in rows[30:]]
    (tmp_path / "predictions.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in preds))
    (tmp_path / "labels.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in labels))
    m = SourceManager(cfg.sources, writer, reader, clock=clock, operators_for=MlOperators(cfg.sources))
    await m.start(None)
    await m.run_once()
    await m.run_once()  # the prediction source takes the labels the label source read
    await m.stop()
    job = {"job": "predictions", "instance": str(tmp_path / "predictions*.jsonl")}
    for model in ("m1", "m2"):
        mine = [r for r in rows if r["model"] == model]
        # at t = T0 + 60 s the window (T0, T0 + 60] holds every outcome but the one at T0 (i = 0, model m2)
        inside = [r for r in mine if r["ts"] > T0 or r["request_id"] in {x["request_id"] for x in rows[30:]}]
        y, p = [r["label"] for r in inside], [r["pred"] for r in inside]
        acc = stored("ai_model_accuracy", **job, model=model)
        assert acc[-1] == ((T0 + 60) * 1000, pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12))
        f1 = stored("ai_model_f1", **job, model=model)
        assert f1[-1][1] == pytest.approx(sklearn_metrics.f1_score(y, p), abs=1e-12)
        tp = stored("ai_model_tp_total", **job, model=model)
        yy, pp = [r["label"] for r in mine], [r["pred"] for r in mine]
        assert tp[-1][1] == sklearn_metrics.confusion_matrix(yy, pp)[1, 1]
        assert stored("ai_model_label_coverage", **job, model=model)[-1][1] == 1.0


async def test_restarts_between_predictions_and_labels_count_each_outcome_once(
    tmp_path: Path, writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    cfg = parse_config(CONFIG.format(dir=tmp_path))
    rows = [{"ts": T0 + i, "model": "m1", "request_id": f"q{i}", "pred": i % 2, "label": (i // 2) % 2}
            for i in range(40)]  # fmt: skip
    preds = tmp_path / "predictions.jsonl"
    labels = tmp_path / "labels.jsonl"
    preds.write_bytes(b"".join(orjson.dumps({k: v for k, v in r.items() if k != "label"}) + b"\n" for r in rows))

    async def daemon_run(times: int) -> None:  # a fresh manager and operators each time: a restart
        m = SourceManager(cfg.sources, writer, reader, clock=clock, operators_for=MlOperators(cfg.sources))
        await m.start(None)
        for _ in range(times):
            await m.run_once()
            clock.advance(1)
        await m.stop()

    await daemon_run(1)
    for half in (rows[:20], rows[20:]):
        with labels.open("ab") as f:
            f.writelines(orjson.dumps({"ts": T0 + 45, "request_id": r["request_id"], "label": r["label"]}) + b"\n"
                         for r in half)  # fmt: skip
        await daemon_run(1)  # the label source reads the labels; the prediction source may take them now or next time
    await daemon_run(2)
    job = {"job": "predictions", "instance": str(tmp_path / "predictions*.jsonl"), "model": "m1"}
    y, p = [r["label"] for r in rows], [r["pred"] for r in rows]
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(y, p).ravel()
    got = [stored(f"ai_model_{c}_total", **job)[-1][1] for c in ("tp", "fp", "tn", "fn")]
    assert got == [tp, fp, tn, fn]
    assert stored("ai_model_accuracy", **job)[-1][1] == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    assert stored("ai_model_samples", **job)[-1][1] == 40
    assert stored("ai_model_orphan_labels_total", job="predictions", instance=job["instance"])[-1][1] == 0
