"""Shorthands (``threshold``, ``drop``, ``absent``) compiled to PromQL.

The compiled expression is what is evaluated, stored with the rule, shown by ``mlwatch alerts`` and in
``/api/v1/rules``; a user can paste it into ``mlwatch query`` to see why an alert fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

from mlwatch.config.alerting import AbsentShorthand, DropShorthand, RuleConfig, ThresholdShorthand
from mlwatch.model import format_duration_ms


@dataclass(frozen=True, slots=True)
class Compiled:
    """A rule's expression, its ``for``, and a one-line description of its condition."""

    expr: str
    for_ms: int
    condition: str


def _num(v: float) -> str:
    return repr(float(v)).removesuffix(".0") if float(v).is_integer() else repr(float(v))


def _wrap(expr: str) -> str:
    return f"({expr.strip()})"


def compile_threshold(s: ThresholdShorthand, default_for: int) -> Compiled:
    op, bound = (">", s.above) if s.above is not None else ("<", s.below)
    assert bound is not None
    expr = f"{_wrap(s.expr)} {op} {_num(bound)}"
    for_ms = s.for_ if s.for_ is not None else default_for
    cond = f"{s.expr.strip()} {'above' if op == '>' else 'below'} {_num(bound)}"
    if for_ms:
        cond += f" for {format_duration_ms(for_ms)}"
    return Compiled(expr, for_ms, cond)


def compile_drop(s: DropShorthand, default_for: int) -> Compiled:
    """Mean over ``window`` against the mean over the ``baseline`` window just before it.

    With ``significance``: a one-sided two-proportion z-test, p1 the window's mean with n1 the latest
    sample count, p2 the baseline's mean with n2 the baseline's mean sample count (a conservative
    choice: the baseline usually holds more outcomes, which would only make the test stricter to pass
    if undercounted). The alert also requires ``z > z_crit`` for the given significance.
    """
    w, b = format_duration_ms(s.window), format_duration_ms(s.baseline)
    m = s.metric.strip()
    p1 = f"avg_over_time({m}[{w}])"
    p2 = f"avg_over_time({m}[{b}] offset {w})"
    kind, amount = next(iter(s.by.items()))
    if kind == "relative":
        drop = f"{p1} < {_num(1 - amount)} * {p2}"
        what = f"{_num(round(amount * 100, 6))}%"
    else:
        drop = f"{p1} < {p2} - {_num(amount)}"
        what = _num(amount)
    expr = drop
    cond = f"mean of {m} over {w} dropped by more than {what} against the {b} before"
    if s.significance is not None and s.samples is not None:
        n = s.samples.strip()
        n1 = f"last_over_time({n}[{w}])"
        n2 = f"avg_over_time({n}[{b}] offset {w})"
        pooled = f"(({p1} * {n1} + {p2} * {n2}) / ({n1} + {n2}))"
        z = f"({p2} - {p1}) / sqrt({pooled} * (1 - {pooled}) * (1 / {n1} + 1 / {n2}))"
        zc = NormalDist().inv_cdf(1 - s.significance)
        expr = f"({drop}) and ({z} > {zc:.4f})"
        cond += f", significant at {_num(s.significance)} (two-proportion z > {zc:.3f}, sample counts from {n})"
    for_ms = s.for_ if s.for_ is not None else default_for
    return Compiled(expr, for_ms, cond)


def compile_absent(s: AbsentShorthand) -> Compiled:
    d = format_duration_ms(s.for_)
    m = s.metric.strip()
    return Compiled(f"absent_over_time({m}[{d}])", 0, f"no sample of {m} for {d}")


def compile_rule(rule: RuleConfig) -> Compiled:
    """The expression an alerting or recording rule evaluates."""
    if rule.threshold is not None:
        return compile_threshold(rule.threshold, rule.for_)
    if rule.drop is not None:
        return compile_drop(rule.drop, rule.for_)
    if rule.absent is not None:
        return compile_absent(rule.absent)
    assert rule.expr is not None
    return Compiled(rule.expr, rule.for_, rule.expr.strip())
