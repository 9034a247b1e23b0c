"""Config models for rules, alerting, notifiers, routes and inhibit rules (the keys Prometheus and
Alertmanager users know, plus mlwatch's shorthands and ``resolve_expr``).

Every PromQL expression is parsed and every template checked against the supported subset
(:mod:`mlwatch.rules.templates`) while the config is validated, so ``check-config`` reports them
with the line. Rule files named by ``rule_files`` are read and checked the same way; their problems
carry the rule file's name and line (:func:`rule_file_problems`).
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import promql_parser as pp
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator

from mlwatch.config._fields import (
    _MIN,
    _S,
    Duration,
    EnvVarName,
    LabelName,
    PositiveDuration,
    _ctx,
    _Model,
    _scalar_to_str,
)
from mlwatch.config.parts import _regex
from mlwatch.errors import ConfigProblem
from mlwatch.model import METRIC_NAME_RE
from mlwatch.rules.templates import check_template

# ------------------------------------------------------------------ field types


def _promql(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    try:
        pp.parse(text)
    except ValueError as exc:
        raise ValueError(f"invalid PromQL: {exc}") from None
    problem = _unsupported(text)
    if problem:
        raise ValueError(f"invalid PromQL: {problem}")
    return text


class _NoSeries:
    def series(self, matchers: Any) -> list[Any]:
        return []

    def read_many(self, series_ids: Any, start_ms: int, end_ms: int) -> dict[int, Any]:
        return {}


def _unsupported(text: str) -> str | None:
    """What mlwatch's engine refuses in ``text`` (an unsupported function, a scalar comparison without
    bool ...), found by evaluating it once over no data; None when it runs."""
    from mlwatch.promql.engine import Engine
    from mlwatch.promql.errors import BadQuery, Unsupported

    try:
        Engine(_NoSeries()).instant(text, 0)
    except (Unsupported, BadQuery) as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - anything else depends on data; evaluation reports it as rule health
        return None
    return None


def _template(text: str) -> str:
    problem = check_template(text)
    if problem is not None:
        raise ValueError(f"invalid template: {problem}")
    return text


def _rule_name(name: str) -> str:
    if not METRIC_NAME_RE.match(name):
        raise ValueError(f"invalid name {name!r} (letters, digits, _ and :, not starting with a digit)")
    return name


PromQL = Annotated[str, AfterValidator(_promql)]
TemplateText = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_template)]
TemplatedLabels = dict[LabelName, TemplateText]
MatchMap = dict[str, Annotated[str, BeforeValidator(_scalar_to_str)]]
RegexMap = dict[str, Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_regex)]]


def _percent_or_number(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return {"relative": float(value.strip()[:-1]) / 100}
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a percentage such as 10% (relative) or a number (absolute)")  # noqa: TRY004
    return {"absolute": float(value)}


# ------------------------------------------------------------------ shorthands


class ThresholdShorthand(_Model):
    """``expr`` above or below a value (exactly one of ``above``/``below``), for a duration."""

    expr: PromQL
    above: float | None = None
    below: float | None = None
    for_: Duration | None = Field(default=None, alias="for")

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdShorthand:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above, below")
        return self


class DropShorthand(_Model):
    """The mean of ``metric`` over ``window`` fell ``by`` (10% relative, or 0.05 absolute) below its
    mean over the ``baseline`` window just before; with ``significance`` and ``samples`` (the metric
    holding each value's sample count), only when a two-proportion z-test finds the drop significant."""

    metric: PromQL
    window: PositiveDuration = 5 * _MIN
    baseline: PositiveDuration = 60 * _MIN
    by: Annotated[dict[str, float], BeforeValidator(_percent_or_number)] = Field(
        default_factory=lambda: {"relative": 0.1}
    )
    significance: float | None = None
    samples: PromQL | None = None
    for_: Duration | None = Field(default=None, alias="for")

    @model_validator(mode="after")
    def _check(self) -> DropShorthand:
        if self.significance is not None and not 0 < self.significance < 0.5:
            raise ValueError("significance must be between 0 and 0.5 (e.g. 0.01)")
        if self.significance is not None and self.samples is None:
            raise ValueError(
                "significance needs samples: the metric holding the sample count of each value (e.g. ai_model_samples)"
            )
        value = next(iter(self.by.values()))
        if not value > 0 or math.isinf(value):
            raise ValueError("by must be greater than 0")
        return self


class AbsentShorthand(_Model):
    """No sample of ``metric`` for ``for``."""

    metric: PromQL
    for_: PositiveDuration = Field(default=10 * _MIN, alias="for")


# ------------------------------------------------------------------ rules


class RuleConfig(_Model):
    """One rule: ``record`` or ``alert``, with ``expr`` or (alerts only) one shorthand."""

    alert: Annotated[str, AfterValidator(_rule_name)] | None = None
    record: Annotated[str, AfterValidator(_rule_name)] | None = None
    expr: PromQL | None = None
    for_: Duration = Field(default=0, alias="for")
    keep_firing_for: Duration = 0
    resolve_expr: PromQL | None = None
    """Extension (hysteresis): once firing, the alert resolves only when this expression returns the series."""
    labels: TemplatedLabels = Field(default_factory=dict)
    annotations: dict[str, TemplateText] = Field(default_factory=dict)
    threshold: ThresholdShorthand | None = None
    drop: DropShorthand | None = None
    absent: AbsentShorthand | None = None

    @model_validator(mode="after")
    def _shape(self) -> RuleConfig:
        if (self.alert is None) == (self.record is None):
            raise ValueError("give exactly one of alert, record")
        sources = [k for k in ("expr", "threshold", "drop", "absent") if getattr(self, k) is not None]
        if self.record is not None:
            if sources != ["expr"]:
                raise ValueError("a recording rule needs expr (shorthands are for alerts)")
            extra = [
                k
                for k in ("for", "keep_firing_for", "resolve_expr", "annotations")
                if k in self.model_fields_set or (k == "for" and "for_" in self.model_fields_set)
            ]
            if extra:
                raise ValueError(f"a recording rule has no {', '.join(extra)}")
            return self
        if len(sources) != 1:
            raise ValueError(
                "an alerting rule needs exactly one of expr, threshold, drop, absent"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        return self


class RuleGroupConfig(_Model):
    """A Prometheus rule group."""

    name: str
    interval: PositiveDuration | None = None
    limit: int = 0
    rules: list[RuleConfig] = Field(default_factory=list)


class RuleFileConfig(_Model):
    """A Prometheus rule file."""

    groups: list[RuleGroupConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_groups(self) -> RuleFileConfig:
        seen: set[str] = set()
        for g in self.groups:
            if g.name in seen:
                raise ValueError(f"{g.name!r}: group name repeated in the same file")
            seen.add(g.name)
        return self


def expand_rule_files(patterns: list[str], base_dir: str | Path | None) -> list[Path]:
    """The files ``rule_files`` names (globs relative to the config file's directory), sorted, unique."""
    out: dict[Path, None] = {}
    for pattern in patterns:
        full = pattern if base_dir is None or os.path.isabs(pattern) else os.path.join(str(base_dir), pattern)
        for name in sorted(glob.glob(full)):
            out[Path(name)] = None
    return list(out)


def _rule_files(patterns: list[str], info: ValidationInfo) -> list[str]:
    base = _ctx(info).get("base_dir")
    for p in patterns:
        if not p.strip():
            raise ValueError("must not be empty")
    # A loader that reports rule_file_problems() itself (one FILE:LINE line each) sets this flag;
    # otherwise they are reported here, at the rule_files line.
    problems = [] if _ctx(info).get("rule_files_by_loader") else rule_file_problems(patterns, base)
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    return [str(p) for p in expand_rule_files(patterns, base)] if base is not None else patterns


def rule_file_problems(patterns: list[str], base_dir: str | Path | None) -> list[ConfigProblem]:
    """Every problem in the rule files, as ``RULEFILE:LINE: path: message``."""
    from mlwatch.rules.loading import read_rule_file  # the loader shares the YAML reading

    problems: list[ConfigProblem] = []
    for path in expand_rule_files(patterns, base_dir):
        shown = str(path)
        if base_dir is not None and not any(os.path.isabs(p) for p in patterns):
            shown = os.path.relpath(path, str(base_dir))
        problems += read_rule_file(path, shown)[1]
    return problems


# ------------------------------------------------------------------ alerting


class StalenessAlertsConfig(_Model):
    """A ``SourceStale`` alert per source: no successful collection (or push) for ``after``."""

    enabled: bool = True
    after: PositiveDuration = 10 * _MIN
    labels: dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str)]] = Field(
        default_factory=lambda: {"severity": "warning"}
    )


class AlertingConfig(_Model):
    """Where alerts go besides the in-app history, and the built-in alerts."""

    alertmanagers: list[Annotated[str, AfterValidator(lambda u: _http_url(u))]] = Field(default_factory=list)
    """Alertmanager base URLs; every active alert is posted to ``/api/v2/alerts`` at every evaluation."""
    external_labels: dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str)]] = Field(default_factory=dict)
    staleness_alerts: StalenessAlertsConfig = Field(default_factory=StalenessAlertsConfig)
    watchdog: bool = False
    """An always-firing ``Watchdog`` alert, to route to an external dead-man's switch."""
    resend_delay: Duration = 0
    outbox_expiry: PositiveDuration = 24 * 60 * _MIN
    """A notification not delivered within this time is given up (recorded as expired)."""


def _http_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}: expected http://host[:port][/path] or https://...")
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise ValueError(f"invalid port in URL {value!r}") from None
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

# ------------------------------------------------------------------ notifiers


class NotifierTemplates(_Model):
    """Per-notifier subject and body templates (same subset as rule templates; see the README)."""

    subject: TemplateText | None = None
    body: TemplateText | None = None


class NotifierConfig(_Model):
    name: Annotated[str, AfterValidator(lambda s: _non_empty(s))]
    type: str
    send_resolved: bool = True
    templates: NotifierTemplates = Field(default_factory=NotifierTemplates)


def _non_empty(s: str) -> str:
    if not s.strip():
        raise ValueError("must not be empty")
    return s


class SmtpConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, le=65535)] = 25
    starttls: bool = False
    tls: bool = False
    """Implicit TLS (SMTPS, usually port 465)."""
    username_env: EnvVarName | None = None
    password_env: EnvVarName | None = None
    timeout: PositiveDuration = 10 * _S


class EmailNotifierConfig(NotifierConfig):
    type: Literal["email"] = "email"
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    from_: str = Field(alias="from")
    to: Annotated[list[str], Field(min_length=1)]


class WebhookNotifierConfig(NotifierConfig):
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    bearer_token_env: EnvVarName | None = None
    timeout: PositiveDuration = 10 * _S
    max_alerts: int = 0


class AppriseNotifierConfig(NotifierConfig):
    type: Literal["apprise"] = "apprise"
    urls: Annotated[list[str], Field(min_length=1)]


class ExecNotifierConfig(NotifierConfig):
    type: Literal["exec"] = "exec"
    command: Annotated[list[str], Field(min_length=1)]
    timeout: PositiveDuration = 30 * _S


NOTIFIER_TYPES: dict[str, type[NotifierConfig]] = {
    "email": EmailNotifierConfig, "webhook": WebhookNotifierConfig,
    "apprise": AppriseNotifierConfig, "exec": ExecNotifierConfig,
}  # fmt: skip


def _notifier_union() -> Any:
    from mlwatch.config.sources import _tagged_union

    return _tagged_union(NOTIFIER_TYPES)


if TYPE_CHECKING:
    AnyNotifier = NotifierConfig
else:
    AnyNotifier = _notifier_union()
    """Validates a notifier with the model its ``type`` names."""

# ------------------------------------------------------------------ routes, inhibition


class RouteConfig(_Model):
    """A route, as Alertmanager's (flat list: the first matching route takes the alert unless ``continue``)."""

    match: MatchMap = Field(default_factory=dict)
    match_re: RegexMap = Field(default_factory=dict)
    notifiers: list[str] = Field(default_factory=list)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    group_wait: Duration = 30 * _S
    group_interval: PositiveDuration = 5 * _MIN
    repeat_interval: PositiveDuration = 4 * 60 * _MIN


class InhibitRuleConfig(_Model):
    source_match: MatchMap = Field(default_factory=dict)
    source_match_re: RegexMap = Field(default_factory=dict)
    target_match: MatchMap = Field(default_factory=dict)
    target_match_re: RegexMap = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)


RuleFiles = Annotated[list[str], AfterValidator(_rule_files)]


def _unique_notifiers(notifiers: list[Any]) -> list[Any]:
    names = [n.name for n in notifiers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"notifier names must be unique; repeated: {', '.join(dup)}")
    return notifiers


def _routes_name_notifiers(routes: list[RouteConfig], info: ValidationInfo) -> list[RouteConfig]:
    notifiers = info.data.get("notifiers")
    if notifiers is None:  # the notifiers themselves are invalid: reported there
        return routes
    names = [n.name for n in notifiers]
    for i, r in enumerate(routes):
        for n in r.notifiers:
            if n not in names:
                known = f" (notifiers: {', '.join(names)})" if names else " (no notifiers are configured)"
                raise ValueError(f"routes[{i}]: no notifier named {n!r}{known}")
    return routes


Notifiers = Annotated[list[AnyNotifier], AfterValidator(_unique_notifiers)]
Routes = Annotated[list[RouteConfig], AfterValidator(_routes_name_notifiers)]
Rules = list[RuleConfig]


__all__ = [
    "NOTIFIER_TYPES",
    "AbsentShorthand",
    "AlertingConfig",
    "AnyNotifier",
    "AppriseNotifierConfig",
    "DropShorthand",
    "EmailNotifierConfig",
    "ExecNotifierConfig",
    "InhibitRuleConfig",
    "NotifierConfig",
    "Notifiers",
    "RouteConfig",
    "Routes",
    "RuleConfig",
    "RuleFileConfig",
    "RuleFiles",
    "RuleGroupConfig",
    "Rules",
    "SmtpConfig",
    "StalenessAlertsConfig",
    "ThresholdShorthand",
    "WebhookNotifierConfig",
    "expand_rule_files",
    "rule_file_problems",
]  # fmt: skip
