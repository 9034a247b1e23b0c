"""Prometheus rule files: groups, intervals, problems with the rule file's name and line."""

from __future__ import annotations

from pathlib import Path

from mlwatch.config import parse_config
from mlwatch.rules.loading import AlertingRule, RecordingRule, build_groups, read_rule_file


def test_rule_files_and_inline_rules(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yml").write_text("""
groups:
  - name: quality
    interval: 30s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: AccuracyLow
        expr: ai_model_accuracy < 0.9
        for: 5m
        keep_firing_for: 1m
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.model }}"}
""")
    cfg_path = tmp_path / "mlwatch.yaml"
    cfg_path.write_text(
        "rule_files: [rules/*.yml]\nevaluation_interval: 20s\nrules: [{alert: X, absent: {metric: up, for: 5m}}]\n"
    )
    from mlwatch.config import load_config

    cfg = load_config(str(cfg_path))
    groups, problems = build_groups(cfg, tmp_path)
    assert problems == []
    quality, inline, builtin = groups
    assert quality.name == "quality" and quality.interval_ms == 30_000
    rec, alert = quality.rules
    assert isinstance(rec, RecordingRule) and rec.name == "job:up:sum"
    assert isinstance(alert, AlertingRule) and alert.for_ms == 300_000 and alert.keep_firing_for_ms == 60_000
    assert inline.interval_ms == 20_000 and inline.rules[0].expr == "absent_over_time(up[5m])"
    assert [r.name for r in builtin.rules] == ["PushGroupStale"]


def test_rule_file_problems_have_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yml"
    p.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n      - record: r\n")
    _, problems = read_rule_file(p, "bad.yml")
    assert [str(x) for x in problems] == [
        "bad.yml:5: groups[0].rules[0].expr: invalid PromQL: invalid promql query",
        "bad.yml:6: groups[0].rules[1]: a recording rule needs expr (shorthands are for alerts)",
    ]
    p.write_text("groups: [\n")
    _, problems = read_rule_file(p, "bad.yml")
    assert problems[0].file == "bad.yml" and problems[0].line == 2


def test_staleness_alerts_can_be_turned_off() -> None:
    cfg = parse_config("alerting: {staleness_alerts: {enabled: false}}")
    assert build_groups(cfg)[0] == []


def test_shorthands_explain_themselves() -> None:
    from mlwatch.rules.templates import render_template

    cfg = parse_config(
        "alerting: {staleness_alerts: {enabled: false}}\nrules:\n"
        "  - {alert: T, threshold: {expr: 'sum(rate(x[1m]))', above: 6000, for: 2m}}\n"
        "  - {alert: A, absent: {metric: x, for: 10m}}\n"
        "  - {alert: S, threshold: {expr: x, below: 1}, annotations: {summary: mine}}\n"
    )
    (group,) = build_groups(cfg)[0]
    t, a, s = group.rules
    assert isinstance(t, AlertingRule) and isinstance(a, AlertingRule) and isinstance(s, AlertingRule)
    assert render_template(t.annotations["summary"], {}, 6543.0) == "sum(rate(x[1m])) above 6000 for 2m (now 6.543k)"
    assert a.annotations["summary"] == "no sample of x for 10m"
    assert s.annotations == {"summary": "mine"}
    assert t.condition == "sum(rate(x[1m])) above 6000 for 2m (PromQL: (sum(rate(x[1m]))) > 6000)"
