"""The sample count behind an alert (mlwatch.rules.samples): the rule of thumb that finds the companion
series, label matching, and the rule manager carrying the count on the alert and its annotations."""

from __future__ import annotations

import asyncio
import math

import pytest

from mlwatch.config import parse_config
from mlwatch.rules.evaluation import RuleManager
from mlwatch.rules.loading import build_groups
from mlwatch.rules.samples import companion, count_for, format_count, rule_companion, sample_counts


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("fraud_accuracy", "fraud_samples"),
        ("fraud_v2_accuracy_lower", "fraud_v2_samples"),
        ("m_log_loss", "m_samples"),
        ("m_rmse", "m_samples"),
        ("ai_model_f1", "ai_model_samples"),
        ("accuracy", None),  # no prefix
        ("fraud_latency_seconds", None),
        ("fraud_samples", None),
    ],
)
def test_companion(metric: str, expected: str | None) -> None:
    assert companion(metric) == expected


def test_rule_companion_is_the_only_quality_metric_selected() -> None:
    assert rule_companion("avg_over_time(m_accuracy[5m]) < 0.9 * avg_over_time(m_accuracy[1h] offset 5m)") == (
        "m_samples"
    )
    assert rule_companion("m_accuracy < 0.9 and m_samples > 100") == "m_samples"
    assert rule_companion("sum by (model) (rate(x_total[5m])) > 1") is None
    assert rule_companion("a_accuracy < 0.9 or b_accuracy < 0.9") is None  # ambiguous: unknown
    assert rule_companion("-(max(m_f1) < bool 0.5)") == "m_samples"


def test_count_for_matches_the_alerts_labels() -> None:
    counts = [({"__name__": "m_samples", "model": "a"}, 40.0), ({"__name__": "m_samples", "model": "b"}, 7.0)]
    assert count_for({"model": "b"}, counts) == 7.0
    assert count_for({"model": "b", "average": "macro"}, counts) == 7.0  # per-average figures share the count
    assert count_for({}, counts) is None  # aggregated away: which one?
    assert count_for({"model": "c"}, counts) is None
    both = [({"model": "a"}, 40.0), ({"model": "a", "class": "x"}, 3.0)]
    assert count_for({"model": "a"}, both) == 40.0  # the exact label set wins
    assert count_for({"model": "a"}, [({"model": "a"}, math.nan)]) is None


def test_sample_counts_queries_each_companion_once_and_survives_failures() -> None:
    asked: list[str] = []

    def query(expr: str, t: float) -> list[tuple[dict[str, str], float]]:
        asked.append(expr)
        if expr == "b_samples":
            raise RuntimeError("boom")
        return [({"__name__": "a_samples", "model": "x"}, 12.0), ({"__name__": "a_samples", "model": "y"}, 30.0)]

    vector = [
        ({"__name__": "a_accuracy", "model": "x"}, 0.8),
        ({"__name__": "a_accuracy", "model": "y"}, 0.7),
        ({"__name__": "b_accuracy", "model": "x"}, 0.7),
        ({"model": "z"}, 0.1),  # no name, and the rule selects two figures: unknown
    ]
    got = sample_counts(query, vector, 0.0, samples_expr=None, rule_expr="a_accuracy < 0.9 or b_accuracy < 0.9")
    assert got == [12.0, 30.0, None, None]
    assert asked == ["a_samples", "b_samples"]
    named = sample_counts(query, vector[:1], 0.0, samples_expr="a_samples", rule_expr="whatever")
    assert named == [12.0]


def test_format_count() -> None:
    assert format_count(37.0) == "37"
    assert format_count(2.5) == "2.5"


RULES = """
alerting: {staleness_alerts: {enabled: false}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
  - alert: Own
    expr: ai_model_accuracy < 0.9
    annotations: {samples: "see the dashboard"}
  - alert: Drop
    drop: {metric: ai_model_accuracy, by: 10%, significance: 0.01, samples: 'sum without (kind) (outcomes)'}
  - alert: Latency
    expr: latency_seconds > 1
"""


class Store:
    async def load(self) -> list[object]:
        return []

    async def save(self, *a: object) -> None: ...


def test_the_manager_puts_the_count_on_the_alert_and_its_annotations() -> None:
    asked: list[str] = []

    def query(expr: str, t: float) -> list[tuple[dict[str, str], float]]:
        asked.append(expr)
        if expr == "ai_model_samples":
            return [({"__name__": "ai_model_samples", "model": "m"}, 37.0)]
        if expr == "sum without (kind) (outcomes)":
            return [({"model": "m"}, 1200.0)]
        if expr == "latency_seconds > 1":
            return [({"__name__": "latency_seconds", "model": "m"}, 2.0)]
        if expr.startswith(("ai_model_accuracy", "(avg_over_time")):
            return [({"model": "m"}, 0.8)]
        return []

    async def notify(alerts: object, t: float) -> None: ...
    async def append(samples: object) -> None: ...

    mgr = RuleManager(query, append, Store(), notify, clock=lambda: 1_700_000_000.0)  # type: ignore[arg-type]
    groups, problems = build_groups(parse_config(RULES))
    assert problems == []
    mgr.set_groups(groups)
    asyncio.run(mgr.evaluate_all())
    alerts = {a.name: a for a in mgr.active_alerts()}
    assert alerts["AccuracyLow"].samples == 37.0 and alerts["AccuracyLow"].annotations["samples"] == "37"
    assert alerts["Own"].samples == 37.0 and alerts["Own"].annotations["samples"] == "see the dashboard"
    assert alerts["Drop"].samples == 1200.0 and alerts["Drop"].annotations["samples"] == "1200"
    assert alerts["Latency"].samples is None and "samples" not in alerts["Latency"].annotations
    assert asked.count("ai_model_samples") == 2  # once per rule with alerts, not per alert
