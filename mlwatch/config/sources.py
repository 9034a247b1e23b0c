"""Source models: the keys every source has and one model per ``type`` (registered with :func:`source_type`)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlwatch.config._fields import _S, LabelSet, PositiveDuration, Size, _ctx, _Model, _whole_number
from mlwatch.config.ml import (
    ClassificationConfig,
    LabelsForConfig,
    RegressionConfig,
    check_ml_keys,
    classification_series,
    regression_series,
)
from mlwatch.config.parts import (
    FiniteFloat,
    JsonMetricConfig,
    LogMetricConfig,
    MetricName,
    PythonRegex,
    RelabelConfig,
    SamplingConfig,
    TimestampConfig,
)
from mlwatch.model import MetricType, format_duration_ms

# ------------------------------------------------------------------ sources


@dataclass(frozen=True, slots=True)
class MetricDeclaration:
    """A metric name that a part of the config writes, with its type and where it is declared.

    ``loc`` is the path to the declaration inside the owning model (e.g. ``("metrics", 0)``) until
    :meth:`Config.metric_declarations` prefixes it; the loader turns it into a line.
    """

    name: str
    type: MetricType
    loc: tuple[str | int, ...] = ()


_SourceT = TypeVar("_SourceT", bound="SourceConfig")

SOURCE_TYPES: dict[str, type[SourceConfig]] = {}
"""Every source ``type`` and the model that validates it, filled by :func:`source_type`."""


def source_type(name: str) -> Callable[[type[_SourceT]], type[_SourceT]]:
    """Register a ``SourceConfig`` subclass as the model for ``type: name``."""

    def register(cls: type[_SourceT]) -> type[_SourceT]:
        SOURCE_TYPES[name] = cls
        return cls

    return register


def _source_name(name: str) -> str:
    if not name.strip():
        raise ValueError("must not be empty")
    if name != name.strip() or any(not ch.isprintable() for ch in name):
        raise ValueError("must not start or end with spaces or contain control characters")
    return name


class SourceConfig(_Model):
    """Keys every source has; each ``type`` subclasses this with its own keys."""

    name: Annotated[str, AfterValidator(_source_name)]
    """The target's ``job`` label (unless ``labels`` sets one); unique across sources."""
    type: str
    interval: PositiveDuration = 15 * _S
    timeout: PositiveDuration = 10 * _S
    """At most ``interval``; when not given, the smaller of 10s and ``interval``."""
    labels: LabelSet = Field(default_factory=dict)

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, timeout: int, info: ValidationInfo) -> int:
        interval = info.data.get("interval")  # absent when the interval itself is invalid
        if interval is not None and timeout > interval:
            raise ValueError(
                f"must not be longer than interval ({format_duration_ms(timeout)} > {format_duration_ms(interval)})"
            )
        return timeout

    @model_validator(mode="after")
    def _default_timeout_within_interval(self) -> SourceConfig:
        if self.timeout > self.interval:  # only the default can get here: clamp it, as Prometheus does
            return self.model_copy(update={"timeout": self.interval})
        return self

    def declared_metrics(self) -> Iterable[MetricDeclaration]:
        """Metric names this source writes whose type is known from the config (none for the common keys)."""
        return ()


_TARGET_RE = re.compile(r"^(\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?):([0-9]{1,5})\Z")


def _target(value: str) -> str:
    m = _TARGET_RE.match(value)
    if not m or int(m.group(3)) > 65535:
        raise ValueError(f"invalid target {value!r}: expected host:port, e.g. 127.0.0.1:8000 (no scheme, no path)")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}: expected http://host[:port]/path or https://...")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(f"invalid port in URL {value!r}") from None
    return value


def _metrics_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with /")
    return value


def _relative_to_config(path: str, info: ValidationInfo) -> str:
    if not path:
        raise ValueError("expected a file path")
    base = _ctx(info).get("base_dir")
    if base is not None and not Path(path).is_absolute():
        return str(Path(str(base)) / path)
    return path


Target = Annotated[str, AfterValidator(_target)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
ConfigRelativePath = Annotated[str, AfterValidator(_relative_to_config)]
NonNegativeInt = Annotated[int, BeforeValidator(_whole_number), Field(ge=0)]


@source_type("http")
class HttpSourceConfig(SourceConfig):
    """Scrapes Prometheus text/OpenMetrics endpoints (one job, many targets) or a JSON endpoint."""

    type: Literal["http"] = "http"
    format: Literal["prometheus", "json"] = "prometheus"
    url: HttpUrl | None = None
    targets: list[Target] = Field(default_factory=list)
    targets_file: ConfigRelativePath | None = None
    scheme: Literal["http", "https"] = "http"
    metrics_path: Annotated[str, AfterValidator(_metrics_path)] = "/metrics"
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: NonNegativeInt = 0
    label_limit: NonNegativeInt = 0
    body_size_limit: Size = 64 * 1024 * 1024
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    metrics: list[JsonMetricConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _where(self) -> HttpSourceConfig:
        given = [k for k in ("url", "targets", "targets_file") if getattr(self, k)]
        if not given:
            raise ValueError("needs url, targets or targets_file")
        if self.url and len(given) > 1:
            raise ValueError("url is for one target; use either url or targets/targets_file")
        if self.format == "json":
            if not self.url:
                raise ValueError("format json needs url")
            if not self.metrics:
                raise ValueError("format json needs metrics (name and path of each number)")
            if self.metric_relabel_configs or self.honor_labels or self.sample_limit or self.label_limit:
                raise ValueError(
                    "metric_relabel_configs, honor_labels, sample_limit and label_limit are for format prometheus"
                )
        elif self.metrics:
            raise ValueError("metrics is for format json (a Prometheus endpoint names its own metrics)")
        return self

    def declared_metrics(self) -> Iterable[MetricDeclaration]:
        for i, m in enumerate(self.metrics):
            yield MetricDeclaration(m.name, MetricType(m.type), ("metrics", i, "name"))


DEFAULT_QUANTILES = (0.5, 0.9, 0.99)
DEFAULT_SUMMARY_MAX_AGE = 10 * 60 * _S


class LogSourceMetricConfig(LogMetricConfig):
    """A log source's derived metric; a ``summary`` also writes ``quantile`` series over a sliding window."""

    quantiles: list[FiniteFloat] | None = None
    """Summary only: the quantiles written (``quantile="0.5"``...), each in [0, 1]; default 0.5, 0.9, 0.99."""
    max_age: PositiveDuration | None = None
    """Summary only: how far back the quantiles look (as prometheus_client's ``MaxAge``); default 10m."""

    @model_validator(mode="after")
    def _summary_keys(self) -> LogSourceMetricConfig:
        if self.type != "summary":
            for key in ("quantiles", "max_age"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is only for summaries")
            return self
        qs = self.quantiles
        if qs is not None:
            if any(not 0.0 <= q <= 1.0 for q in qs):
                raise ValueError("quantiles must each be between 0 and 1")
            if any(a >= b for a, b in itertools.pairwise(qs)):
                raise ValueError("quantiles must be a strictly increasing list")
        return self

    @property
    def summary_quantiles(self) -> tuple[float, ...]:
        return DEFAULT_QUANTILES if self.quantiles is None else tuple(self.quantiles)

    @property
    def summary_max_age(self) -> int:
        """Milliseconds."""
        return DEFAULT_SUMMARY_MAX_AGE if self.max_age is None else self.max_age


@source_type("log")
class LogSourceConfig(SourceConfig):
    """Tails log files (a glob), derives metrics per line; offsets are committed with the samples."""

    type: Literal["log"] = "log"
    interval: PositiveDuration = 1 * _S
    """How often the files are polled for new lines."""
    path: Annotated[str, AfterValidator(_not_empty)]
    format: Literal["jsonl", "regex"] = "jsonl"
    pattern: PythonRegex | None = None
    start_at: Literal["beginning", "end"] = "beginning"
    timestamp: TimestampConfig | None = None
    sampling: SamplingConfig | None = None
    max_line_bytes: Size = 1024 * 1024
    metrics: list[LogSourceMetricConfig] = Field(default_factory=list)
    classification: ClassificationConfig | None = None
    regression: RegressionConfig | None = None
    labels_for: LabelsForConfig | None = None

    @model_validator(mode="after")
    def _ml(self) -> LogSourceConfig:
        check_ml_keys(self.classification, self.regression, self.labels_for)
        return self

    @model_validator(mode="after")
    def _pattern(self) -> LogSourceConfig:
        if self.format == "regex":
            if self.pattern is None:
                raise ValueError("format regex needs pattern (with named groups such as (?P<latency>\\d+))")
            if not re.compile(self.pattern).groupindex:
                raise ValueError("pattern has no named groups (?P<name>...), so no field can be read")
        elif self.pattern is not None:
            raise ValueError("pattern is for format regex")
        return self

    def declared_metrics(self) -> Iterable[MetricDeclaration]:
        for i, m in enumerate(self.metrics):
            yield MetricDeclaration(m.name, m.metric_type, ("metrics", i, "name"))
        if self.classification is not None:
            for name, mtype in classification_series(self.classification.prefix):
                yield MetricDeclaration(name, mtype, ("classification", "prefix"))
        if self.regression is not None:
            for name, mtype in regression_series(self.regression.prefix):
                yield MetricDeclaration(name, mtype, ("regression", "prefix"))


@source_type("command")
class CommandSourceConfig(SourceConfig):
    """Runs a command (an argv list, never a shell) and reads exposition text or one number from stdout."""

    type: Literal["command"] = "command"
    command: Annotated[list[Annotated[str, AfterValidator(_not_empty)]], Field(min_length=1)]
    format: Literal["auto", "text", "number"] = "auto"
    metric: MetricName | None = None
    metric_type: Literal["gauge", "counter", "untyped"] = "gauge"

    @model_validator(mode="after")
    def _metric(self) -> CommandSourceConfig:
        if self.format == "number" and self.metric is None:
            raise ValueError("format number needs metric (the name of the number)")
        if self.format == "text" and self.metric is not None:
            raise ValueError("metric is for a command that prints one number (format auto or number)")
        return self

    def declared_metrics(self) -> Iterable[MetricDeclaration]:
        if self.metric is not None:
            yield MetricDeclaration(self.metric, MetricType(self.metric_type), ("metric",))


def _not_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _type_tag(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("type")
    return getattr(value, "type", None)


def _tagged_union(registry: Mapping[str, type[BaseModel]]) -> Any:
    members = tuple(Annotated[model, Tag(tag)] for tag, model in registry.items())
    return Annotated[Union[members], Discriminator(_type_tag)]  # noqa: UP007 (a runtime-built union)


if TYPE_CHECKING:
    AnySource = SourceConfig
else:
    AnySource = _tagged_union(SOURCE_TYPES)
    """Validates a source with the model its ``type`` names."""
