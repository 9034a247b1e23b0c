"""The sample count behind an alert: how many outcomes the alert's value was computed from.

A notification that says "accuracy 0.81" means little without "over 37 outcomes". The count is looked
up at evaluation time through the manager's ``query(expr, t)`` seam, by this rule of thumb:

1. A ``drop`` shorthand with ``samples:`` uses that expression.
2. Otherwise the alert's metric is its series' ``__name__`` if the result kept it, else the only metric
   the rule selects whose name ends in a quality figure (see :data:`FIGURES`). A metric named
   ``<prefix>_<figure>`` (``fraud_accuracy``, ``fraud_f1``, ``m_rmse``) has the companion
   ``<prefix>_samples``, which the ML sources write with the same labels.
3. The count is the companion's value at ``t`` for the series whose labels (other than the name) all
   equal the alert's series' labels; when none or several match (e.g. the rule aggregated the labels
   away), the count is unknown and simply not shown.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import promql_parser as pp

log = logging.getLogger("mlwatch.rules")

FIGURES = (
    "accuracy",
    "accuracy_lower",
    "accuracy_upper",
    "precision",
    "recall",
    "f1",
    "log_loss",
    "roc_auc",
    "mae",
    "rmse",
    "mape",
    "r2",
)
"""Suffixes of the quality figures that ML sources write beside ``<prefix>_samples``."""

Vector = Sequence[tuple[Mapping[str, str], float]]


def companion(metric: str) -> str | None:
    """``<prefix>_samples`` for a metric named ``<prefix>_<figure>``; None for any other name."""
    for figure in sorted(FIGURES, key=len, reverse=True):  # accuracy_lower before accuracy
        suffix = f"_{figure}"
        if metric.endswith(suffix) and len(metric) > len(suffix):
            return metric[: -len(suffix)] + "_samples"
    return None


def _selected_names(node: Any) -> Iterator[str]:
    if isinstance(node, pp.VectorSelector):
        if node.name:
            yield node.name
        return
    if isinstance(node, pp.MatrixSelector):
        yield from _selected_names(node.vector_selector)
        return
    if isinstance(node, pp.Call):
        for arg in node.args:
            yield from _selected_names(arg)
        return
    for attr in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from _selected_names(child)


def rule_companion(expr: str) -> str | None:
    """The companion of the only quality-figure metric ``expr`` selects (None: none, or ambiguous)."""
    try:
        names = set(_selected_names(pp.parse(expr)))
    except ValueError:
        return None
    found = {c for n in names if (c := companion(n)) is not None}
    return found.pop() if len(found) == 1 else None


def count_for(source_labels: Mapping[str, str], counts: Vector) -> float | None:
    """The value of the one series of ``counts`` whose labels all equal ``source_labels``' (an exact label
    set preferred); None when none or several match."""
    matches = [
        (labels, float(v))
        for labels, v in counts
        if not math.isnan(float(v)) and all(source_labels.get(k) == x for k, x in labels.items() if k != "__name__")
    ]
    if len(matches) > 1:
        matches = [(lab, v) for lab, v in matches if {k for k in lab if k != "__name__"} == set(source_labels)]
    return matches[0][1] if len(matches) == 1 else None


def sample_counts(
    query: Callable[[str, float], Vector],
    vector: Vector,
    t: float,
    *,
    samples_expr: str | None,
    rule_expr: str,
) -> list[float | None]:
    """The sample count of each element of an alerting rule's result ``vector`` at ``t`` (None: unknown).

    One query per distinct companion expression. A failing query leaves the counts unknown and is
    logged: the count explains an alert, it never decides one.
    """
    fallback = samples_expr or rule_companion(rule_expr)
    exprs: list[str | None] = []
    for labels, _ in vector:
        name = labels.get("__name__")
        exprs.append(samples_expr or (companion(name) if name else None) or fallback)
    results: dict[str, Vector | None] = {}
    for expr in dict.fromkeys(x for x in exprs if x is not None):
        try:
            results[expr] = query(expr, t)
        except Exception as exc:  # noqa: BLE001 - shown as unknown, logged, never fails the rule
            log.warning("sample count %s: %s", expr, exc)
            results[expr] = None
    out: list[float | None] = []
    for (labels, _), e in zip(vector, exprs, strict=True):
        counts = results.get(e) if e is not None else None
        src = {k: v for k, v in labels.items() if k != "__name__"}
        out.append(None if counts is None else count_for(src, counts))
    return out


def format_count(n: float) -> str:
    """A count as it is shown: an integer without a fraction, else the number."""
    return str(int(n)) if float(n).is_integer() else repr(float(n))
