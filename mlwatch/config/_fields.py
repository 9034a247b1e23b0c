"""Field types and the base model every config model uses (durations, sizes, label sets, env names)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from mlwatch.model import LABEL_NAME_RE, parse_duration_ms, parse_size

DEFAULT_CONFIG_FILE = "mlwatch.yaml"
CONFIG_ENV_VAR = "MLWATCH_CONFIG"

_S = 1000
_MIN = 60 * _S
_H = 60 * _MIN
_D = 24 * _H
# Prometheus durations are int64 nanoseconds; staying below that keeps every duration representable.
_MAX_DURATION_MS = (2**63 - 1) // 1_000_000

# ------------------------------------------------------------------ field types


def _ctx(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _parse_duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use Prometheus syntax such as 30s, 5m, 1h30m, 7d)")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, int):
        # Python callers pass milliseconds; in a file a bare number has no unit and is ambiguous.
        if value == 0 or not _ctx(info).get("from_file"):
            return value
        raise ValueError(f"invalid duration {value}: a unit is required (e.g. {value}s)")
    if isinstance(value, str):
        if value.strip() == "0":
            return 0
        ms = parse_duration_ms(value)
        if ms > _MAX_DURATION_MS:
            raise ValueError(f"duration {value!r} is too large")
        return ms
    raise ValueError(f"expected a duration such as 30s or 5m, got {_kind(value)}")


def _positive_duration(value: int) -> int:
    if value <= 0:
        raise ValueError("must be a duration greater than 0")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_size(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r} (use e.g. 512KiB, 10MiB, 2GB)")  # noqa: TRY004
    if isinstance(value, int | str):
        size = parse_size(value)
        if size <= 0:
            raise ValueError("must be a size greater than 0")
        return size
    raise ValueError(f"expected a size such as 10MiB, got {_kind(value)}")


def _whole_number(value: Any) -> Any:
    """Refuse ``true`` as 1, which pydantic's lax mode would accept for an int."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")  # noqa: TRY004
    return value


def _label_name(name: str) -> str:
    if not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r} (letters, digits and _, not starting with a digit)")
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is reserved (names starting with __ are internal)")
    return name


def _scalar_to_str(value: Any) -> Any:
    # `labels: {version: 2}` is common; a number is a fine label value, true/false is probably a mistake.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _env_var_name(name: str, info: ValidationInfo) -> str:
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    ctx = _ctx(info)
    if "env" in ctx:  # only a load checks the environment; Python callers resolve later
        value = ctx["env"].get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        if value == "":
            raise ValueError(f"environment variable {name} is set but empty")
    return name


Duration = Annotated[int, BeforeValidator(_parse_duration), AfterValidator(_non_negative)]
"""A Prometheus duration (``30s``, ``1h30m``) in the file; ``int`` milliseconds in the model; 0 allowed."""
PositiveDuration = Annotated[int, BeforeValidator(_parse_duration), AfterValidator(_positive_duration)]
"""A duration that must be greater than 0."""
Size = Annotated[int, BeforeValidator(_parse_size)]
"""A byte size (``4096``, ``512KiB``, ``10MiB``, ``2GB``) greater than 0, as ``int`` bytes."""
PositiveInt = Annotated[int, BeforeValidator(_whole_number), Field(gt=0)]
EnvVarName = Annotated[str, AfterValidator(_env_var_name)]
"""The name of an environment variable holding a secret; it must be set (and non-empty) at load."""
LabelName = Annotated[str, AfterValidator(_label_name)]
LabelSet = dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str)]]

SECRET: dict[str, Any] = {"secret": True}
"""``Field(json_schema_extra=SECRET)`` marks a field whose value never appears in an error message."""


class _Model(BaseModel):
    """Base of every config model: immutable, unknown keys are errors, an empty value means the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keys = _keys_of(cls)
            return {k: v for k, v in data.items() if v is not None or k not in keys}
        return data


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "true/false"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
    (int, "an integer"), (float, "a number"), (date, "a date"), (type(None), "null"),
)  # fmt: skip


def _kind(value: Any) -> str:
    """What a YAML value is, in the file's terms, without its content."""
    return next((word for tp, word in _KINDS if isinstance(value, tp)), f"a {type(value).__name__}")


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]
