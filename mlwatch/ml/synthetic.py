"""A realistic synthetic prediction stream, for tests, benchmarks and ``mlwatch demo``.

Several models, each with its classes and their (imbalanced) frequencies, an accuracy that drops
suddenly at a configurable time, scores (binary models: the positive class' probability, higher
for positive predictions), log-normal latencies, and true labels that arrive after a random delay
(exponential), some never. Deterministic for a seed.

``SyntheticStream(...).events(duration_s)`` yields :class:`Prediction` objects in time order; their
``line()`` and ``label_line()`` are the JSON objects of a prediction log and of a ground-truth log;
:func:`write_logs` writes both files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ModelSpec", "Prediction", "SyntheticStream", "default_models", "write_logs"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    classes: tuple[str, ...] = ("0", "1")
    weights: tuple[float, ...] = (0.9, 0.1)  # class frequencies of the true labels (imbalance)
    accuracy: float = 0.95
    drop_at_s: float | None = None  # seconds after the start when accuracy drops
    accuracy_after: float = 0.6
    latency_ms: float = 40.0  # median
    latency_sigma: float = 0.5  # of the log-normal
    share: float = 1.0  # relative traffic

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def accuracy_at(self, offset_s: float) -> float:
        return self.accuracy_after if self.drop_at_s is not None and offset_s >= self.drop_at_s else self.accuracy


def default_models(drop_at_s: float | None = 600.0) -> tuple[ModelSpec, ...]:
    """Two models: an imbalanced binary fraud model whose accuracy drops, and a steady 3-class router."""
    return (
        ModelSpec("fraud-v2", drop_at_s=drop_at_s, share=2.0),
        ModelSpec("router-v1", classes=("billing", "support", "sales"), weights=(0.5, 0.3, 0.2), accuracy=0.85,
                  latency_ms=120.0),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Prediction:
    ts: float  # seconds since the epoch
    request_id: str
    model: str
    pred: str
    label: str
    score: float | None
    latency_ms: float
    label_ts: float | None  # when the label arrives; None: never

    def line(self, with_label: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"ts": round(self.ts, 3), "request_id": self.request_id, "model": self.model,
                               "pred": self.pred, "latency_ms": round(self.latency_ms, 3)}  # fmt: skip
        if self.score is not None:
            doc["score"] = round(self.score, 6)
        if with_label:
            doc["label"] = self.label
        return doc

    def label_line(self) -> dict[str, Any] | None:
        if self.label_ts is None:
            return None
        return {"ts": round(self.label_ts, 3), "request_id": self.request_id, "label": self.label}


@dataclass
class SyntheticStream:
    models: Sequence[ModelSpec] = field(default_factory=default_models)
    start_s: float = 1_700_000_000.0
    rate_per_s: float = 20.0  # predictions per second, all models together (Poisson arrivals)
    label_delay_s: float = 30.0  # mean delay of a label
    label_share: float = 0.9  # share of predictions whose label ever arrives
    seed: int = 0

    def events(self, duration_s: float) -> Iterator[Prediction]:
        rnd = random.Random(self.seed)
        total_share = sum(m.share for m in self.models)
        t = 0.0
        i = 0
        while True:
            t += rnd.expovariate(self.rate_per_s)
            if t >= duration_s:
                return
            pick = rnd.random() * total_share
            model = self.models[-1]
            for m in self.models:
                pick -= m.share
                if pick < 0:
                    model = m
                    break
            yield self._one(rnd, model, t, i)
            i += 1

    def _one(self, rnd: random.Random, m: ModelSpec, offset_s: float, i: int) -> Prediction:
        label = rnd.choices(m.classes, weights=m.weights)[0]
        if rnd.random() < m.accuracy_at(offset_s):
            pred = label
        else:
            pred = rnd.choice([c for c in m.classes if c != label])
        score = None
        if m.binary:
            positive = pred == m.classes[1]
            score = 0.5 + 0.5 * rnd.betavariate(4, 2) if positive else 0.5 * rnd.betavariate(2, 4)
        latency = m.latency_ms * math.exp(m.latency_sigma * rnd.gauss(0.0, 1.0))
        ts = self.start_s + offset_s
        label_ts = ts + rnd.expovariate(1 / self.label_delay_s) if rnd.random() < self.label_share else None
        return Prediction(ts, f"req-{self.seed}-{i}", m.name, pred, label, score, latency, label_ts)


def write_logs(directory: Path, stream: SyntheticStream, duration_s: float, labels_inline: bool = False) -> int:
    """Write ``predictions.jsonl`` and (unless ``labels_inline``) ``labels.jsonl``, in time order; the count."""
    preds = list(stream.events(duration_s))
    with open(directory / "predictions.jsonl", "ab") as f:
        f.writelines(orjson.dumps(p.line(labels_inline)) + b"\n" for p in preds)
    if not labels_inline:
        labels = sorted((doc for p in preds if (doc := p.label_line()) is not None), key=lambda d: d["ts"])
        with open(directory / "labels.jsonl", "ab") as f:
            f.writelines(orjson.dumps(doc) + b"\n" for doc in labels)
    return len(preds)
