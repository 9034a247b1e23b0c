"""The classification window's whole-chunk path (numpy) gives what its per-line ``feed`` gives.

A :class:`~mlwatch.ml.operators.QualityOperator` fed a chunk through ``take_chunk`` (falling back to
``feed`` line by line when it refuses the chunk) must end in the same state as one fed line by line:
the same confusion cells, score bins and counts per window bucket, per group, per matured window;
log-loss sums equal up to rounding. Also through a real log source with a classification window
beside the metrics, that both operators take the chunk whole and commit the same series as a source
whose chunks go line by line.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatch.config import LogSourceConfig, parse_config
from mlwatch.ml.operators import MlOperators, QualityOperator
from mlwatch.sources.linechunk import LineChunk
from mlwatch.sources.logfile import LogFileSource
from mlwatch.sources.sampling import LineEvent

T0 = 1_700_000_000_000


CONFIGS = {
    "binary_scored": ", positive: 1, score: score, auc_bins: 10",
    "binary_by_prediction_time": ", positive: 1, score: score, by_prediction_time: true",
    "multiclass": "",
    "two_groups": "",
}

_class = st.sampled_from([0, 1, 2]) | st.sampled_from(["0", "1", "cat"]) | st.sampled_from([1.0, 0.0, True])
_score = st.floats(0, 1)
_line = st.fixed_dictionaries(  # mostly clean lines, so that a chunk is often taken whole
    {
        "pred": _class,
        "label": st.one_of(*[_class] * 40, st.none()),  # null: no label in the line (refused: there is no join)
        "model": st.sampled_from(["a", "b"] * 30 + [None, 3, 3.0]),
        "region": st.sampled_from(["eu", "us"]),
        "score": st.one_of(*[_score] * 80, st.just(1.5), st.just("0.5"), st.just(True), st.integers(0, 1), st.none()),
    },
)


@functools.cache
def _config(name: str) -> LogSourceConfig:
    by = "[model, region]" if name == "two_groups" else "[model]"
    src = parse_config(f"""
sources:
  - name: preds
    type: log
    path: /nonexistent.jsonl
    classification: {{prediction: pred, label: label, window: 1m, by: {by}, prefix: m{CONFIGS[name]}}}
""").sources[0]
    assert isinstance(src, LogSourceConfig)
    return src


def _ops(name: str) -> QualityOperator:
    src = _config(name)
    (op,) = MlOperators([src])(src)
    assert isinstance(op, QualityOperator)
    return op


def _state(op: QualityOperator) -> Any:
    """The operator's state with floats rounded (sums in another order differ in the last bits)."""

    def norm(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 6)
        if isinstance(x, list):
            return [norm(v) for v in x]
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        return x

    snap = op.snapshot()
    for g in snap["groups"]:  # counters are Counters in insertion order: compare as sorted lists
        g["window"] = [[b, _canon(acc)] for b, acc in g["window"]]
        g["cum"] = _canon(g["cum"])
        g["matured"] = sorted([w, _canon(acc)] for w, acc in g["matured"])
    snap["groups"] = sorted(snap["groups"], key=lambda g: g["key"])
    return norm(snap)


def _canon(acc: list[Any]) -> list[Any]:
    return [sorted(acc[0]), *acc[1:]]


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(CONFIGS)),
    docs=st.lists(_line, max_size=40),
    times=st.none() | st.lists(st.integers(0, 200_000), min_size=40, max_size=40),
)
def test_chunk_path_equals_per_line(name: str, docs: list[dict[str, Any]], times: list[int] | None) -> None:
    per_line, chunked = _ops(name), _ops(name)
    ts: list[int] = [T0 + (times[i] if times else 0) for i in range(len(docs))]
    reasons = [per_line.feed(LineEvent(dict(d), t, "")) for d, t in zip(docs, ts, strict=False)]
    chunk = LineChunk([dict(d) for d in docs], np.asarray(ts, dtype=np.int64) if times else T0)
    took = chunked.take_chunk(chunk)
    if took:
        assert all(r is None for r in reasons)  # a chunk is taken whole only when no line is refused
    else:
        assert _state(chunked) == _state(_ops(name))  # refused: nothing changed
        for d, t in zip(docs, ts, strict=False):
            chunked.feed(LineEvent(dict(d), t, ""))
    assert _state(chunked) == _state(per_line)


def test_clean_chunks_take_the_numpy_path() -> None:
    rng = np.random.default_rng(3)
    docs = [
        {"pred": int(p), "label": int(lab), "model": m, "score": float(s), "region": "eu"}
        for p, lab, m, s in zip(
            rng.integers(0, 2, 500), rng.integers(0, 2, 500), rng.choice(["a", "b", "c"], 500), rng.random(500),
            strict=True,
        )
    ]  # fmt: skip
    for name in CONFIGS:
        op = _ops(name)
        ts = np.asarray(T0 + rng.integers(0, 300_000, len(docs)), dtype=np.int64)
        assert op.take_chunk(LineChunk(docs, ts)), name
        ref = _ops(name)
        for d, t in zip(docs, ts.tolist(), strict=True):
            assert ref.feed(LineEvent(d, t, "")) is None
        assert _state(op) == _state(ref), name


def _source(log: Path) -> LogFileSource:
    cfg = parse_config(f"""
sources:
  - name: preds
    type: log
    path: {log}
    metrics:
      - {{name: preds_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: latency_seconds, type: histogram, field: latency_ms, scale: 0.001, buckets: [0.01, 0.1, 1]}}
    classification: {{prediction: pred, label: label, score: score, positive: 1, window: 5m, by: [model], prefix: m}}
""").sources[0]
    assert isinstance(cfg, LogSourceConfig)
    return LogFileSource(cfg, MlOperators([cfg])(cfg))


def test_log_source_shares_the_chunk_between_operators(tmp_path: Path) -> None:
    """Both operators take a clean chunk whole; a chunk with a bad line still counts it once and the
    rest the same as when every line goes through ``feed``."""
    rng = np.random.default_rng(5)
    log = tmp_path / "preds.jsonl"
    lines = [
        orjson.dumps({"model": str(m), "latency_ms": float(lat), "pred": int(p), "label": int(lab), "score": float(s)})
        for m, lat, p, lab, s in zip(
            rng.choice(["a", "b"], 3000), rng.exponential(40, 3000), rng.integers(0, 2, 3000),
            rng.integers(0, 2, 3000), rng.random(3000), strict=True,
        )
    ]  # fmt: skip
    lines.insert(1500, b"not json")
    log.write_bytes(b"\n".join(lines) + b"\n")
    src = _source(log)
    taken: list[str] = []
    for op in src.operators:
        orig = op.take_chunk  # type: ignore[attr-defined]

        def spy(chunk: LineChunk, orig: Any = orig, name: str = op.name) -> bool:
            ok = bool(orig(chunk))
            taken.append(f"{name}:{ok}")
            return ok

        op.take_chunk = spy  # type: ignore[attr-defined]
    col = src.collect_sync(T0)
    col.commit()
    assert sorted(taken) == ["classification:True", "metrics:True"]
    assert col.bad == {"invalid_json": 1}
    # the same lines, every operator line by line
    ref = _source(log)
    for op in ref.operators:
        op.take_chunk = lambda chunk: False  # type: ignore[attr-defined]
    ref_col = ref.collect_sync(T0)

    def series(samples: list[Any]) -> dict[Any, float]:
        return {s.key: s.value for s in samples}

    a, b = series(col.samples), series(ref_col.samples)
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert math.isclose(v, b[k], rel_tol=1e-9, abs_tol=1e-12), k
    assert ref_col.bad == {"invalid_json": 1}
