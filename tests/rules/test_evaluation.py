"""The alert state machine, recording rules, ALERTS/ALERTS_FOR_STATE, flap control and restarts."""

from __future__ import annotations

import math

from mlwatch.config import parse_config
from mlwatch.rules.evaluation import RuleManager
from mlwatch.rules.loading import build_groups
from tests.rules.conftest import Clock, MemoryStore, Script, Sink, is_stale

ACC = 'ai_model_accuracy{model="m"}'


def _groups(rules_yaml: str) -> list:
    cfg = parse_config("alerting: {staleness_alerts: {enabled: false}}\nrules:\n" + rules_yaml)
    groups, problems = build_groups(cfg)
    assert problems == []
    return groups


def _manager(rig, rules_yaml: str) -> RuleManager:
    mgr = rig[0]
    mgr.set_groups(_groups(rules_yaml))
    return mgr


LOW = """
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    for: 1m
    labels: {severity: critical, model: "{{ $labels.model }}"}
    annotations: {summary: "accuracy of {{ $labels.model }} is {{ $value | humanizePercentage }} at {{ $externalLabels.site }}"}
"""


async def test_pending_then_firing_then_resolved(rig, clock: Clock) -> None:
    mgr = _manager(rig, LOW)
    _, script, store, sink = rig
    low = [({"__name__": "ai_model_accuracy", "model": "m"}, 0.85)]
    script.values["ai_model_accuracy < 0.9"] = low
    await mgr.evaluate_all()
    (a,) = mgr.active_alerts()
    assert a.state.value == "pending"
    assert a.labels == {"alertname": "AccuracyLow", "model": "m", "severity": "critical"}
    assert a.annotations == {"summary": "accuracy of m is 85% at lab"}
    t0 = clock.t
    got = sink.at(t0)
    assert got['ALERTS{alertname="AccuracyLow",alertstate="pending",model="m",severity="critical"}'] == 1
    assert got['ALERTS_FOR_STATE{alertname="AccuracyLow",model="m",severity="critical"}'] == t0
    assert sink.notified[-1][1] == []  # pending alerts are not sent

    clock.t += 30
    await mgr.evaluate_all()
    assert mgr.active_alerts()[0].state.value == "pending"
    clock.t += 30
    await mgr.evaluate_all()
    assert mgr.active_alerts()[0].state.value == "firing"
    got = sink.at(clock.t)
    # The pending series ends with a staleness marker as Prometheus writes it; the firing one starts.
    assert is_stale(got['ALERTS{alertname="AccuracyLow",alertstate="pending",model="m",severity="critical"}'])
    assert got['ALERTS{alertname="AccuracyLow",alertstate="firing",model="m",severity="critical"}'] == 1
    assert got['ALERTS_FOR_STATE{alertname="AccuracyLow",model="m",severity="critical"}'] == t0
    assert [x.state.value for x in sink.notified[-1][1]] == ["firing"]

    script.values["ai_model_accuracy < 0.9"] = []
    clock.t += 15
    await mgr.evaluate_all()
    assert mgr.active_alerts() == []
    got = sink.at(clock.t)
    assert all(is_stale(v) for v in got.values()) and len(got) == 2
    assert [e.event for e in store.events] == ["pending", "firing", "resolved"]
    assert store.rows == {}
    # The resolved alert is sent on (for 15 minutes), so receivers see it resolve.
    (resolved,) = sink.notified[-1][1]
    assert resolved.state.value == "resolved" and resolved.resolved_at == clock.t


async def test_for_zero_fires_at_once(rig) -> None:
    mgr = _manager(rig, "  - {alert: Now, expr: up == 0}\n")
    rig[1].values["up == 0"] = [({"__name__": "up", "job": "a"}, 0.0)]
    await mgr.evaluate_all()
    assert mgr.active_alerts()[0].state.value == "firing"
    assert [e.event for e in rig[2].events] == ["firing"]


async def test_pending_that_clears_never_fires(rig, clock: Clock) -> None:
    mgr = _manager(rig, LOW)
    _, script, store, sink = rig
    script.values["ai_model_accuracy < 0.9"] = [({"model": "m"}, 0.85)]
    await mgr.evaluate_all()
    script.values["ai_model_accuracy < 0.9"] = []
    clock.t += 15
    await mgr.evaluate_all()
    assert [e.event for e in store.events] == ["pending", "resolved"]
    assert all(not n for _, n in sink.notified)


async def test_keep_firing_for(rig, clock: Clock) -> None:
    mgr = _manager(rig, "  - {alert: K, expr: x > 1, keep_firing_for: 1m}\n")
    _, script, store, _ = rig
    script.values["x > 1"] = [({"i": "1"}, 2.0)]
    await mgr.evaluate_all()
    script.values["x > 1"] = []
    for _ in range(3):
        clock.t += 20
        await mgr.evaluate_all()
        assert mgr.active_alerts()[0].state.value == "firing"
    clock.t += 20
    await mgr.evaluate_all()
    assert mgr.active_alerts() == []
    assert [e.event for e in store.events] == ["firing", "resolved"]


async def test_keep_firing_for_is_reset_when_the_condition_returns(rig, clock: Clock) -> None:
    mgr = _manager(rig, "  - {alert: K, expr: x > 1, keep_firing_for: 1m}\n")
    script = rig[1]
    script.values["x > 1"] = [({"i": "1"}, 2.0)]
    await mgr.evaluate_all()
    script.values["x > 1"] = []
    clock.t += 50
    await mgr.evaluate_all()
    script.values["x > 1"] = [({"i": "1"}, 2.0)]
    clock.t += 5
    await mgr.evaluate_all()
    script.values["x > 1"] = []
    clock.t += 50
    await mgr.evaluate_all()
    assert mgr.active_alerts()[0].state.value == "firing"


HYST = f"""
  - alert: AccuracyLow
    expr: {ACC} < 0.9
    resolve_expr: {ACC} > 0.92
"""


async def test_resolve_expr_hysteresis(rig, clock: Clock) -> None:
    mgr = _manager(rig, HYST)
    _, script, store, _ = rig
    acc = {"v": 0.85}

    def below(_t: float) -> list:
        return [({"model": "m"}, acc["v"])] if acc["v"] < 0.9 else []

    def above(_t: float) -> list:
        return [({"model": "m"}, acc["v"])] if acc["v"] > 0.92 else []

    script.values[f"{ACC} < 0.9"] = below
    script.values[f"{ACC} > 0.92"] = above
    await mgr.evaluate_all()
    assert mgr.active_alerts()[0].state.value == "firing"
    for v in (0.91, 0.905, 0.92, 0.895, 0.915):  # flapping around 0.9: no resolve, no re-fire
        acc["v"] = v
        clock.t += 15
        await mgr.evaluate_all()
        assert mgr.active_alerts()[0].state.value == "firing", v
    acc["v"] = 0.93
    clock.t += 15
    await mgr.evaluate_all()
    assert mgr.active_alerts() == []
    assert [e.event for e in store.events] == ["firing", "resolved"]


async def test_restart_neither_refires_nor_forgets(clock: Clock) -> None:
    script, store, sink = Script(), MemoryStore(), Sink()
    script.values["ai_model_accuracy < 0.9"] = [({"model": "m"}, 0.85)]
    groups = _groups(LOW)

    mgr = RuleManager(script, sink.append, store, sink.notify, clock=clock)
    mgr.set_groups(groups)
    await mgr.restore()
    await mgr.evaluate_all()
    clock.t += 40
    await mgr.evaluate_all()  # pending for 40s of the 60s

    again = RuleManager(script, sink.append, store, sink.notify, clock=clock)  # a restart
    again.set_groups(groups)
    await again.restore()
    clock.t += 25
    await again.evaluate_all()
    (a,) = again.active_alerts()
    assert a.state.value == "firing"  # the for-timer continued across the restart
    clock.t += 15

    third = RuleManager(script, sink.append, store, sink.notify, clock=clock)
    third.set_groups(groups)
    await third.restore()
    await third.evaluate_all()
    assert third.active_alerts()[0].state.value == "firing"
    assert [e.event for e in store.events] == ["pending", "firing"]  # no second firing event


async def test_recording_rule_writes_series_and_ends_them(rig, clock: Clock) -> None:
    mgr = _manager(rig, "  - {record: 'job:up:sum', expr: sum by (job) (up), labels: {team: ml}}\n")
    _, script, _, sink = rig
    script.values["sum by (job) (up)"] = [({"job": "a"}, 2.0), ({"job": "b"}, 1.0)]
    await mgr.evaluate_all()
    assert sink.at(clock.t) == {'job:up:sum{job="a",team="ml"}': 2.0, 'job:up:sum{job="b",team="ml"}': 1.0}
    script.values["sum by (job) (up)"] = [({"job": "a"}, 3.0)]
    clock.t += 15
    await mgr.evaluate_all()
    got = sink.at(clock.t)
    assert got['job:up:sum{job="a",team="ml"}'] == 3.0
    assert is_stale(got['job:up:sum{job="b",team="ml"}'])


async def test_a_failing_rule_is_reported_and_others_run(rig) -> None:
    mgr = _manager(rig, "  - {alert: A, expr: bad_one > 1}\n  - {alert: B, expr: good > 1}\n")
    _, script, _, _ = rig

    def boom(_t: float) -> list:
        raise RuntimeError("query timed out")

    script.values["bad_one > 1"] = boom
    script.values["good > 1"] = [({}, 2.0)]
    await mgr.evaluate_all()
    rules = mgr.rules_api()["groups"][0]["rules"]
    assert rules[0]["health"] == "err" and rules[0]["lastError"] == "query timed out"
    assert rules[1]["health"] == "ok" and rules[1]["state"] == "firing"
    assert rules[1]["alerts"][0]["value"] == "2"


async def test_value_template_and_nan() -> None:
    from mlwatch.rules.templates import render_template

    assert render_template("{{ $value }}", {}, math.nan) == "NaN"
