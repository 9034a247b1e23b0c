"""Rules over the real PromQL engine and storage: the compiled shorthands fire when they should,
recording rules and ALERTS / ALERTS_FOR_STATE come back through PromQL, staleness alerts and the
Watchdog."""

from __future__ import annotations

import random

from sqlalchemy import Engine

from mlwatch.config import parse_config
from mlwatch.model import Sample, SeriesKey
from mlwatch.notify.service import AlertingService, query_from_engine
from mlwatch.promql.engine import Engine as PromEngine
from mlwatch.rules.shorthands import compile_drop
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _fill(
    w: Writer, name: str, labels: dict[str, str], start: float, end: float, value: float, step: float = 15.0
) -> None:
    key = SeriesKey.of(name, labels)
    t = start
    samples = []
    while t < end:
        samples.append(Sample(key, int(t * 1000), value))
        t += step
    w.write_sync(WriteBatch(samples=samples))


def _service(engine: Engine, cfg_text: str, clock: Clock) -> tuple[AlertingService, Writer, PromEngine]:
    w = Writer(engine, clock=clock)
    w.start()
    prom = PromEngine(Reader(engine), clock=clock)
    svc = AlertingService(parse_config(cfg_text), query=query_from_engine(lambda: prom), writer=w, clock=clock)
    return svc, w, prom


def _firing(svc: AlertingService) -> dict[str, str]:
    return {a.labels.get("model", a.labels.get("source", a.name)): a.state.value for a in svc.active_alerts()}


DROP = """
alerting: {staleness_alerts: {enabled: false}}
rules:
  - alert: AccuracySuddenDrop
    drop: {metric: ai_model_accuracy, window: 5m, baseline: 1h, by: 10%, significance: 0.01, samples: ai_model_samples}
"""


async def test_drop_fires_only_when_significant(engine: Engine) -> None:
    clock = Clock()
    svc, w, _ = _service(engine, DROP, clock)
    try:
        for model, n in (("big", 2000.0), ("small", 12.0)):
            lab = {"model": model}
            _fill(w, "ai_model_accuracy", lab, T0, T0 + 3600, 0.95)
            _fill(w, "ai_model_accuracy", lab, T0 + 3600, T0 + 3900, 0.80)
            _fill(w, "ai_model_samples", lab, T0, T0 + 3900, n)
        clock.t = T0 + 3900
        await svc.evaluate()
        # Same 16% drop: significant with 2000 outcomes per window, sampling noise with 12.
        assert _firing(svc) == {"big": "firing"}
        (alert,) = svc.active_alerts()  # the notification can say how many outcomes the value rests on
        assert alert.samples == 2000.0 and alert.annotations["samples"] == "2000"
    finally:
        w.stop()


async def test_drop_without_significance_and_absolute() -> None:
    from mlwatch.config.alerting import DropShorthand

    c = compile_drop(DropShorthand.model_validate({"metric": "m", "by": 0.05}), 0)
    assert c.expr == "avg_over_time(m[5m]) < avg_over_time(m[1h] offset 5m) - 0.05"
    c = compile_drop(DropShorthand.model_validate({"metric": "m", "by": "10%", "window": "10m"}), 60_000)
    assert c.expr == "avg_over_time(m[10m]) < 0.9 * avg_over_time(m[1h] offset 10m)" and c.for_ms == 60_000
    assert "dropped by more than 10%" in c.condition


THRESH = """
alerting: {staleness_alerts: {enabled: false}, watchdog: true}
rules:
  - alert: LatencyHigh
    threshold: {expr: "avg by (model) (latency)", above: 0.5, for: 1m}
  - alert: PredictionsMissing
    absent: {metric: 'predictions_total{model="gone"}', for: 10m}
  - record: model:latency:avg
    expr: avg by (model) (latency)
"""


async def test_threshold_absent_watchdog_and_alerts_series(engine: Engine) -> None:
    clock = Clock()
    svc, w, prom = _service(engine, THRESH, clock)
    try:
        _fill(w, "latency", {"model": "a"}, T0, T0 + 1200, 0.9)
        _fill(w, "latency", {"model": "b"}, T0, T0 + 1200, 0.1)
        _fill(w, "predictions_total", {"model": "gone"}, T0, T0 + 300, 5)
        for t in range(int(T0) + 600, int(T0) + 1200, 15):
            clock.t = float(t)
            await svc.evaluate()
        states = {a.name + ":" + a.labels.get("model", ""): a.state.value for a in svc.active_alerts()}
        assert states == {"LatencyHigh:a": "firing", "PredictionsMissing:gone": "firing", "Watchdog:": "firing"}
        t_ms = int(clock.t * 1000)
        res = prom.instant('ALERTS{alertname="LatencyHigh"}', t_ms)
        assert [dict(lab)["alertstate"] for lab, _, _ in res.series] == ["firing"]
        res = prom.instant('ALERTS_FOR_STATE{alertname="LatencyHigh"}', t_ms)
        ((_lab, _, vals),) = res.series
        assert vals[0] == T0 + 600  # activeAt, Unix seconds
        res = prom.instant("model:latency:avg", t_ms)
        assert sorted((dict(lab)["model"], float(v[0])) for lab, _, v in res.series) == [("a", 0.9), ("b", 0.1)]
        rules = svc.rules.rules_api()["groups"]
        inline = next(g for g in rules if g["file"] == "mlwatch.yaml")
        assert inline["rules"][0]["query"] == "(avg by (model) (latency)) > 0.5"
        assert inline["rules"][1]["query"] == 'absent_over_time(predictions_total{model="gone"}[10m])'
    finally:
        w.stop()


STALE = """
alerting: {staleness_alerts: {after: 2m}}
sources:
  - {name: api, type: http, url: "http://127.0.0.1:9/metrics"}
"""


async def test_every_source_gets_a_staleness_alert(engine: Engine) -> None:
    clock = Clock()
    svc, w, _ = _service(engine, STALE, clock)
    try:
        _fill(w, "up", {"job": "api", "instance": "127.0.0.1:9"}, T0, T0 + 60, 1.0)
        _fill(w, "up", {"job": "api", "instance": "127.0.0.1:9"}, T0 + 60, T0 + 400, 0.0)
        clock.t = T0 + 120
        await svc.evaluate()
        assert [a.name for a in svc.active_alerts()] == []
        clock.t = T0 + 400
        await svc.evaluate()
        (a,) = [a for a in svc.active_alerts() if a.name == "SourceStale"]
        assert a.labels["source"] == "api" and a.labels["severity"] == "warning"
    finally:
        w.stop()


def test_random_templates_never_raise() -> None:
    from mlwatch.rules.templates import TemplateError, parse_template

    rng = random.Random(5)
    parts = [
        "{{",
        "}}",
        "$labels",
        ".x",
        "|",
        "humanize",
        "if",
        "end",
        "else",
        "(",
        ")",
        '"s"',
        "1",
        " ",
        "with",
        "printf",
        "%d",
        "$value",
        "-",
    ]
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))
        try:
            parse_template(text).render({"x": "1"}, 0.5)
        except TemplateError:
            pass
