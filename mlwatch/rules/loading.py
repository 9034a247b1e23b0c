"""Rules from the config: Prometheus rule files (``rule_files`` globs), inline ``rules:``, shorthands,
the per-source staleness alerts and the optional ``Watchdog``, as immutable rule groups."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mlwatch.config.alerting import RuleConfig, RuleFileConfig, expand_rule_files
from mlwatch.errors import ConfigError, ConfigProblem
from mlwatch.rules.shorthands import compile_rule

INLINE_GROUP = "mlwatch.yaml"
BUILTIN_GROUP = "mlwatch-builtin"


@dataclass(frozen=True, slots=True)
class AlertingRule:
    name: str
    expr: str
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    resolve_expr: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    condition: str = ""  # human description (the shorthand, or the expression)
    shorthand: str | None = None  # "threshold", "drop", "absent" when compiled from one
    samples: str | None = None  # the sample count's expression when the rule names it (drop's samples:)


@dataclass(frozen=True, slots=True)
class RecordingRule:
    name: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)


Rule = AlertingRule | RecordingRule


@dataclass(frozen=True, slots=True)
class RuleGroup:
    name: str
    file: str
    interval_ms: int
    rules: tuple[Rule, ...]

    @property
    def key(self) -> str:
        """Unique across files: Prometheus keys groups by file and name."""
        return f"{self.file};{self.name}"


def make_rule(cfg: RuleConfig) -> Rule:
    if cfg.record is not None:
        assert cfg.expr is not None
        return RecordingRule(cfg.record, cfg.expr, dict(cfg.labels))
    assert cfg.alert is not None
    compiled = compile_rule(cfg)
    short = next((k for k in ("threshold", "drop", "absent") if getattr(cfg, k) is not None), None)
    return AlertingRule(
        name=cfg.alert,
        expr=compiled.expr,
        for_ms=compiled.for_ms,
        keep_firing_for_ms=cfg.keep_firing_for,
        resolve_expr=cfg.resolve_expr,
        labels=dict(cfg.labels),
        annotations=_default_summary(dict(cfg.annotations), short, compiled.condition),
        # A shorthand explains itself and shows what it compiled to; a plain rule is its expression.
        condition=f"{compiled.condition} (PromQL: {compiled.expr})" if short else compiled.condition,
        shorthand=short,
        samples=cfg.drop.samples if cfg.drop is not None else None,
    )


def _default_summary(annotations: dict[str, str], shorthand: str | None, condition: str) -> dict[str, str]:
    """A shorthand without a ``summary`` gets one that says what it checks and the current value."""
    if shorthand is None or "summary" in annotations or "{{" in condition:
        return annotations
    value = "" if shorthand == "absent" else " (now {{ $value | humanize }})"
    return {**annotations, "summary": condition + value}


# ------------------------------------------------------------------ rule files


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    line = getattr(getattr(node, "lc", None), "line", 0) + 1
    for key in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, list) and isinstance(key, int) and key < len(node):
                line = lc.item(key)[0] + 1 if lc is not None else line
                node = node[key]
            elif isinstance(node, dict) and key in node:
                line = lc.key(key)[0] + 1 if lc is not None else line
                node = node[key]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for k in loc:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def read_rule_file(
    path: str | os.PathLike[str],
    shown: str | None = None,
) -> tuple[RuleFileConfig | None, list[ConfigProblem]]:
    """Parse and validate one Prometheus rule file; problems carry its name (``shown``) and the line."""
    from mlwatch.config.loader import plain_tree, read_yaml_text  # bounded: size, depth, aliases

    name = shown or str(path)
    try:
        text = read_yaml_text(path, "rule file")
    except ConfigError as exc:
        return None, [ConfigProblem(name, p.line, p.message) for p in exc.problems]
    yaml = YAML(typ="rt", pure=True)
    yaml.max_depth = 100
    try:
        doc = yaml.load(text)
        tree = plain_tree(doc)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        return None, [ConfigProblem(name, line, f"invalid YAML: {getattr(exc, 'problem', None) or exc}")]
    except (ValueError, TypeError, RecursionError) as exc:
        return None, [ConfigProblem(name, 0, f"invalid YAML: {exc}")]
    if doc is None:
        return RuleFileConfig(), []
    try:
        return RuleFileConfig.model_validate(tree, context={"from_file": True}), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            ctx = err.get("ctx") or {}
            kind = err["type"]
            if kind == "extra_forbidden":
                msg = "unknown key"
            elif kind == "missing":
                loc, msg = loc[:-1], f"missing required key {loc[-1]!r}"
            elif kind == "value_error":
                msg = str(ctx.get("error", err["msg"]))
            else:
                msg = str(err["msg"])
            where = _fmt_loc(loc)
            problems.append(ConfigProblem(name, _line_of(doc, loc), f"{where}: {msg}" if where else msg))
        return None, sorted(dict.fromkeys(problems), key=lambda p: p.line)


# ------------------------------------------------------------------ building the groups


def _staleness_rules(config: Any) -> list[Rule]:
    st = config.alerting.staleness_alerts
    if not st.enabled:
        return []
    from mlwatch.model import format_duration_ms

    d = format_duration_ms(st.after)
    rules: list[Rule] = []
    for src in config.sources:
        job = (src.labels or {}).get("job", src.name).replace("\\", "\\\\").replace('"', '\\"')
        if src.type == "log":
            expr = (
                f'(max_over_time(scrape_samples_scraped{{job="{job}"}}[{d}]) == 0)'
                f' or absent_over_time(up{{job="{job}"}}[{d}])'
            )
            cond = f"no new line read from source {src.name} for {d}"
        else:
            expr = f'(max_over_time(up{{job="{job}"}}[{d}]) == 0) or absent_over_time(up{{job="{job}"}}[{d}])'
            cond = f"no successful collection from source {src.name} for {d}"
        rules.append(
            AlertingRule(
                "SourceStale",
                expr,
                0,
                labels={**st.labels, "source": src.name},
                annotations={"summary": f"source {src.name} is stale: {cond}"},
                condition=cond,
            )
        )
    if st.enabled and config.push is not None:
        rules.append(
            AlertingRule(
                "PushGroupStale",
                f"time() - push_time_seconds > {st.after / 1000:g}",
                0,
                labels=dict(st.labels),
                annotations={
                    "summary": "push group {{ $labels.job }} has not been pushed for {{ $value | humanizeDuration }}"
                },
                condition=f"no push to the group for {d}",
            )
        )
    return rules


def build_groups(config: Any, base_dir: str | Path | None = None) -> tuple[list[RuleGroup], list[ConfigProblem]]:
    """Every rule group the config defines, in a stable order; problems of unreadable rule files."""
    interval = config.evaluation_interval
    groups: list[RuleGroup] = []
    problems: list[ConfigProblem] = []
    for path in expand_rule_files(list(config.rule_files), base_dir):
        parsed, probs = read_rule_file(path)
        problems += probs
        if parsed is None:
            continue
        for g in parsed.groups:
            groups.append(RuleGroup(g.name, str(path), g.interval or interval, tuple(make_rule(r) for r in g.rules)))
    if config.rules:
        groups.append(RuleGroup("rules", INLINE_GROUP, interval, tuple(make_rule(r) for r in config.rules)))
    builtin = _staleness_rules(config)
    if config.alerting.watchdog:
        builtin.append(
            AlertingRule(
                "Watchdog",
                "vector(1)",
                0,
                labels={"severity": "none"},
                annotations={
                    "summary": "always firing: mlwatch's alerting pipeline works. Route it to a dead man's switch."
                },
                condition="always",
            )
        )
    if builtin:
        groups.append(RuleGroup("builtin", BUILTIN_GROUP, interval, tuple(builtin)))
    return groups, problems
