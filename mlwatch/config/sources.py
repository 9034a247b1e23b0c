"""Source models: the keys every source has and one model per ``type`` (registered with :func:`source_type`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlwatch.config._fields import _S, LabelSet, PositiveDuration, _Model
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


@source_type("http")
class HttpSourceConfig(SourceConfig):
    """Scrapes Prometheus text/OpenMetrics or JSON endpoints (its keys come with the HTTP source)."""

    type: Literal["http"] = "http"


@source_type("log")
class LogSourceConfig(SourceConfig):
    """Tails log files (its keys come with the log source)."""

    type: Literal["log"] = "log"


@source_type("command")
class CommandSourceConfig(SourceConfig):
    """Runs a command and reads its output (its keys come with the command source)."""

    type: Literal["command"] = "command"


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
