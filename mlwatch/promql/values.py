"""The values the evaluator passes around, each over all evaluation steps at once.

An expression is evaluated at an array of step timestamps ``T`` (one for an instant query). Its value is

- :class:`Scalar`: one float per step;
- :class:`StringValue`: a constant string;
- :class:`InstantVector`: rows of series (labels) by steps, with a presence mask, since a series may be
  absent at some steps and NaN is a legitimate sample value;
- :class:`RangeVector`: raw samples per series (staleness markers removed) plus, for every step, the
  window ``[end - range, end]`` that a range function reads (both ends inclusive, as Prometheus 2.x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlwatch.promql.errors import ExecutionError

Labels = tuple[tuple[str, str], ...]
"""Sorted (name, value) pairs, ``__name__`` included when the series still has a name."""

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

NAME = "__name__"


def drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME) if labels and any(p[0] == NAME for p in labels) else labels


def make_labels(d: dict[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def format_labels(labels: Labels) -> str:
    name = ""
    rest = []
    for k, v in labels:
        if k == NAME:
            name = v
        else:
            rest.append(f'{k}="{v}"'.replace("\n", "\\n"))
    return f"{name}{{{', '.join(rest)}}}"


@dataclass(slots=True)
class Scalar:
    values: F64


@dataclass(slots=True)
class StringValue:
    value: str


@dataclass(slots=True)
class InstantVector:
    labels: list[Labels]
    values: F64  # (series, steps)
    present: Bools  # (series, steps)
    timestamps: I64 | None = None  # sample timestamps (series, steps), only straight from a selector

    @classmethod
    def empty(cls, steps: int) -> InstantVector:
        return cls([], np.zeros((0, steps)), np.zeros((0, steps), bool))

    @property
    def steps(self) -> int:
        return int(self.values.shape[1])

    def select(self, rows: npt.NDArray[np.intp] | list[int]) -> InstantVector:
        idx = np.asarray(rows, dtype=np.intp)
        return InstantVector([self.labels[i] for i in idx], self.values[idx], self.present[idx])

    def compact(self) -> InstantVector:
        """Drop rows that are absent at every step."""
        keep = self.present.any(axis=1)
        if keep.all():
            return self
        return self.select(np.flatnonzero(keep))


@dataclass(slots=True)
class RangeVector:
    """Samples of each series and, per step, the half-open index window ``[lo, hi)`` into them."""

    labels: list[Labels]
    ts: list[I64]
    values: list[F64]
    lo: list[I64]
    hi: list[I64]
    ends: I64  # the window's end per step (eval time minus offset)
    range_ms: int


def merge_same_labels(vec: InstantVector) -> InstantVector:
    """Merge rows with equal labels; two of them present at one step is Prometheus' duplicate-labelset error."""
    if len(vec.labels) < 2:
        return vec
    first: dict[Labels, int] = {}
    dupes = False
    for i, lab in enumerate(vec.labels):
        if lab in first:
            dupes = True
        else:
            first[lab] = i
    if not dupes:
        return vec
    order = list(first)
    index = {lab: k for k, lab in enumerate(order)}
    values = np.zeros((len(order), vec.steps))
    present = np.zeros((len(order), vec.steps), bool)
    for i, lab in enumerate(vec.labels):
        k = index[lab]
        row = vec.present[i]
        if (present[k] & row).any():
            raise ExecutionError("vector cannot contain metrics with the same labelset")
        values[k, row] = vec.values[i, row]
        present[k] |= row
    return InstantVector(order, values, present)
