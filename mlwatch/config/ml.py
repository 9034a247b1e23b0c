"""ML quality keys of a log source: ``classification``, ``regression`` and ``labels_for``.

The series each one writes (:func:`classification_series`, :func:`regression_series`) are declared
with their types, so a metric name has one type across the whole config.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from mlwatch.config._fields import _D, _MIN, LabelName, PositiveDuration, PositiveInt, _Model
from mlwatch.config.parts import FieldPath, MetricName
from mlwatch.model import MetricType

__all__ = [
    "ClassificationConfig",
    "DriftConfig",
    "LabelsForConfig",
    "RegressionConfig",
    "class_text",
    "classification_series",
    "labels_for_problems",
    "regression_series",
]


def class_text(value: Any) -> str:
    """A class value as label text: ``1``, ``1.0`` and ``"1"`` are the same class; ``true`` is ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    return str(value)


def _class_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return class_text(value)
    raise ValueError("expected a class value (a string, number or true/false)")


def _level(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1 (exclusive), e.g. 0.95")
    return value


class DriftConfig(_Model):
    """Population stability index (and KS for numbers) of fields, current window against a reference."""

    numeric: list[FieldPath] = Field(default_factory=list)
    categorical: list[FieldPath] = Field(default_factory=list)
    reference: Literal["previous", "baseline"] = "previous"
    """``previous``: the window just before; ``baseline``: the first ``window`` of data, kept fixed."""
    bins: Annotated[int, Field(ge=2, le=1000)] = 10

    @model_validator(mode="after")
    def _some(self) -> DriftConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("drift needs numeric or categorical (the fields to compare)")
        return self


class _WindowedConfig(_Model):
    prediction: FieldPath
    window: PositiveDuration = 5 * _MIN
    resolution: PositiveDuration | None = None
    """Bucket width: default window/300, at least 1s; a window's start is exact to one bucket."""
    by: list[LabelName] = Field(default_factory=list)
    """Fields whose values become labels (e.g. ``model``); one window per combination."""
    prefix: MetricName
    drift: DriftConfig | None = None
    by_prediction_time: bool = False

    @model_validator(mode="after")
    def _resolution(self) -> _WindowedConfig:
        if self.resolution is not None and self.resolution > self.window:
            raise ValueError("resolution must not be longer than window")
        return self


class ClassificationConfig(_WindowedConfig):
    label: FieldPath
    score: FieldPath | None = None
    """Binary: the positive class' probability; multiclass: a mapping of class to probability."""
    positive: Annotated[str, BeforeValidator(_class_value)] | None = None
    auc_bins: Annotated[int, Field(ge=2, le=100_000)] = 100
    confidence: Annotated[float, Field(allow_inf_nan=False)] = 0.95
    """Level of the Wilson interval ``_accuracy_lower``/``_upper`` (written when the source samples)."""

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, value: float) -> float:
        return _level(value)


class RegressionConfig(_WindowedConfig):
    target: FieldPath


class LabelsForConfig(_Model):
    """This source's lines are true labels for the predictions of ``source``, joined by ``key``."""

    source: Annotated[str, Field(min_length=1)]
    key: FieldPath
    max_delay: PositiveDuration = 1 * _D
    max_pending: PositiveInt = 100_000
    """Pending predictions kept (per prediction source); beyond it the oldest are dropped and counted."""


_CLASSIFICATION_GAUGES = (
    "accuracy", "precision", "recall", "f1", "samples", "log_loss", "roc_auc", "accuracy_lower",
    "accuracy_upper", "accuracy_population", "accuracy_population_lower", "accuracy_population_upper",
    "label_coverage", "drift_psi", "drift_ks",
)  # fmt: skip
_REGRESSION_GAUGES = ("mae", "rmse", "mape", "r2", "samples", "label_coverage", "drift_psi", "drift_ks")
_JOIN_COUNTERS = ("undefined_total", "unlabeled_total", "orphan_labels_total", "pending_dropped_total")


def classification_series(prefix: str) -> Iterable[tuple[str, MetricType]]:
    """Every metric a ``classification`` with this prefix may write, with its type."""
    for g in _CLASSIFICATION_GAUGES:
        yield f"{prefix}_{g}", MetricType.GAUGE
    for c in ("tp_total", "fp_total", "tn_total", "fn_total", *_JOIN_COUNTERS):
        yield f"{prefix}_{c}", MetricType.COUNTER
    yield f"{prefix}_label_delay_seconds", MetricType.HISTOGRAM


def regression_series(prefix: str) -> Iterable[tuple[str, MetricType]]:
    """Every metric a ``regression`` with this prefix may write, with its type."""
    for g in _REGRESSION_GAUGES:
        yield f"{prefix}_{g}", MetricType.GAUGE
    sums = ("outcomes_total", "abs_error_total", "squared_error_total", "abs_percentage_error_total",
            "target_total", "target_squared_total")  # fmt: skip
    for c in (*sums, *_JOIN_COUNTERS):
        yield f"{prefix}_{c}", MetricType.COUNTER
    yield f"{prefix}_label_delay_seconds", MetricType.HISTOGRAM


def check_ml_keys(
    classification: ClassificationConfig | None, regression: RegressionConfig | None, labels_for: LabelsForConfig | None
) -> None:
    """The checks of one log source's ML keys together (ValueError with the problem)."""
    if labels_for is not None and (classification is not None or regression is not None):
        raise ValueError("labels_for (a source of true labels) cannot also have classification or regression")
    if classification is not None and regression is not None and classification.prefix == regression.prefix:
        raise ValueError("classification and regression need different prefixes (their series would collide)")


def labels_for_problems(sources: Sequence[Any]) -> list[tuple[int, str]]:
    """``(index, message)`` for every ``labels_for`` whose ``source`` is not a log source with
    classification or regression (a check of the whole config)."""
    targets = {
        s.name
        for s in sources
        if getattr(s, "classification", None) is not None or getattr(s, "regression", None) is not None
    }
    out = []
    for i, s in enumerate(sources):
        lf = getattr(s, "labels_for", None)
        if lf is not None and lf.source not in targets:
            out.append((i, f"labels_for.source: {lf.source!r} is not a log source with classification or regression"))
    return out
