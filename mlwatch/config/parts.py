"""Pieces that source models share: relabelling rules, sampling, derived metrics, timestamps, paths."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from mlwatch.config._fields import _MIN, LabelName, PositiveDuration, PositiveInt, _Model, _scalar_to_str
from mlwatch.model import LABEL_NAME_RE, METRIC_NAME_RE, MetricType
from mlwatch.regex import RegexError, compile_regex

# ------------------------------------------------------------------ small field types


def _metric_name(name: str) -> str:
    if not METRIC_NAME_RE.match(name):
        raise ValueError(f"invalid metric name {name!r} (letters, digits, _ and :, not starting with a digit)")
    return name


def _regex(pattern: str) -> str:
    try:
        compile_regex(pattern)  # RE2, as the matchers that will run it
    except RegexError as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def _any_label_name(name: str) -> str:
    # relabelling may address internal labels such as __name__
    if not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r}")
    return name


_PATH_TOKEN_RE = re.compile(r"([^.\[\]]+)|\[(\d{1,9})\]")  # an index of 10+ digits is no list index


def parse_path(path: str) -> tuple[str | int, ...]:
    """``models[0].metrics.accuracy`` -> ``("models", 0, "metrics", "accuracy")``; ValueError if malformed."""
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and out and pos + 1 < len(path) and path[pos + 1] != "[":
            pos += 1
        m = _PATH_TOKEN_RE.match(path, pos)
        if m is None or (m.group(1) is not None and out and path[pos - 1] not in ".["):
            raise ValueError(f"invalid path {path!r} (dotted keys and [N] indices, e.g. models[0].metrics.accuracy)")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not out:
        raise ValueError("must not be empty")
    return tuple(out)


def _path(path: str) -> str:
    parse_path(path)
    return path


_TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")


def template_fields(template: str) -> list[str]:
    """The field paths a label template (``"{model}-{version}"``) reads; ``{{``/``}}`` are literal braces."""
    return [m.group(1) for m in _TEMPLATE_RE.finditer(template.replace("{{", "").replace("}}", ""))]


def _template(value: str) -> str:
    stripped = value.replace("{{", "").replace("}}", "")
    if _TEMPLATE_RE.sub("", stripped).count("{") or _TEMPLATE_RE.sub("", stripped).count("}"):
        raise ValueError(f"unbalanced braces in label template {value!r} (write {{{{ and }}}} for literal braces)")
    for name in template_fields(value):
        parse_path(name)
    return value


MetricName = Annotated[str, AfterValidator(_metric_name)]
Regex = Annotated[str, AfterValidator(_regex)]


def _python_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


PythonRegex = Annotated[str, AfterValidator(_python_regex)]
"""A log line pattern: Python's ``re`` (its named groups), which the log source runs."""
FieldPath = Annotated[str, AfterValidator(_path)]
LabelTemplates = dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_template)]]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


FiniteFloat = Annotated[float, AfterValidator(_finite)]

# ------------------------------------------------------------------ relabelling


class RelabelConfig(_Model):
    """One ``metric_relabel_configs`` rule, as Prometheus applies it to every scraped series."""

    source_labels: list[Annotated[str, AfterValidator(_any_label_name)]] = Field(default_factory=list)
    separator: str = ";"
    regex: Regex = "(.*)"
    target_label: Annotated[str, AfterValidator(_any_label_name)] | None = None
    replacement: str = "$1"
    action: Literal["replace", "keep", "drop", "labeldrop", "labelkeep"] = "replace"

    @model_validator(mode="after")
    def _needs(self) -> RelabelConfig:
        if self.action == "replace" and self.target_label is None:
            raise ValueError("action replace needs target_label")
        if self.action in ("keep", "drop") and not self.source_labels:
            raise ValueError(f"action {self.action} needs source_labels")
        if self.action in ("labeldrop", "labelkeep") and (self.source_labels or self.target_label):
            raise ValueError(f"action {self.action} takes only regex (it matches label names)")
        return self


# ------------------------------------------------------------------ sampling


class SamplingConfig(_Model):
    """Which lines feed per-line metrics (and, later, ML windows); raw line counters stay exact.

    ``random`` keeps a line when a hash of ``key`` (or of its position) falls below ``rate``;
    ``stratified`` keeps at most ``per_stratum`` lines (or a ``rate`` share) of each value of ``by`` per
    ``window``; ``reservoir`` keeps a uniform sample of ``size`` lines per ``window``.
    """

    strategy: Literal["random", "stratified", "reservoir"]
    rate: Annotated[float, Field(gt=0, le=1)] | None = None
    key: FieldPath | None = None
    by: FieldPath | None = None
    per_stratum: PositiveInt | None = None
    size: PositiveInt | None = None
    window: PositiveDuration = 1 * _MIN

    @model_validator(mode="after")
    def _consistent(self) -> SamplingConfig:
        s = self.strategy
        if s == "random":
            if self.rate is None:
                raise ValueError("strategy random needs rate")
            extra = [k for k in ("by", "per_stratum", "size") if getattr(self, k) is not None]
        elif s == "stratified":
            if self.by is None:
                raise ValueError("strategy stratified needs by (the field whose values are the strata)")
            if (self.per_stratum is None) == (self.rate is None):
                raise ValueError("strategy stratified needs exactly one of per_stratum and rate")
            extra = [k for k in ("key", "size") if getattr(self, k) is not None]
        else:
            if self.size is None:
                raise ValueError("strategy reservoir needs size")
            extra = [k for k in ("rate", "by", "per_stratum") if getattr(self, k) is not None]
        if extra:
            raise ValueError(f"strategy {s} does not use {', '.join(extra)}")
        return self


# ------------------------------------------------------------------ derived metrics

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LogMetricConfig(_Model):
    """A metric derived from each (sampled) log line."""

    name: MetricName
    type: Literal["counter", "gauge", "histogram", "summary"]
    field: FieldPath | None = None
    """The number read from the line; a counter without it counts lines."""
    scale: FiniteFloat = 1.0
    labels: LabelTemplates = Field(default_factory=dict)
    buckets: list[FiniteFloat] | None = None
    help: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> LogMetricConfig:
        if self.type != "counter" and self.field is None:
            raise ValueError(f"a {self.type} needs field (the number to read from each line)")
        if self.buckets is not None:
            if self.type != "histogram":
                raise ValueError("buckets is only for histograms")
            if not self.buckets or any(b >= c for b, c in zip(self.buckets, self.buckets[1:], strict=False)):
                raise ValueError("buckets must be a non-empty, strictly increasing list")
        for reserved in ("le", "quantile"):
            if reserved in self.labels and self.type in ("histogram", "summary"):
                raise ValueError(f"label {reserved!r} is reserved in a {self.type}")
        return self

    @property
    def metric_type(self) -> MetricType:
        return MetricType(self.type)


class JsonMetricConfig(_Model):
    """A number read from a JSON document by path."""

    name: MetricName
    path: FieldPath
    type: Literal["gauge", "counter", "untyped"] = "gauge"
    labels: dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str)]] = Field(default_factory=dict)
    help: str = ""


class TimestampConfig(_Model):
    """Where a log line's time comes from (default: the time it is read)."""

    field: FieldPath
    format: Literal["auto", "unix", "unix_ms", "rfc3339"] = "auto"
    """``auto``: a number below 1e11 is seconds, above is milliseconds; a string is RFC 3339."""
