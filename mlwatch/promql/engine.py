"""The PromQL evaluator: the promql-parser AST evaluated over numpy arrays, all steps at once.

Every node is evaluated at an array of reference timestamps (one per step of a range query, one for
an instant query), so a range query is not an instant query re-run per step. Semantics follow
Prometheus 2.x: a vector selector takes the newest sample within the lookback delta (inclusive) unless
it is a staleness marker; range selectors read ``[t - range, t]``; ``offset`` and ``@`` shift the
reference time; subqueries evaluate their inner expression on a grid aligned to their step.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal, Protocol

import numpy as np
import promql_parser as pp

from mlwatch.model import STALE_NAN_BITS, Matcher, MatchOp
from mlwatch.promql import aggregations, binops, functions
from mlwatch.promql.errors import BadQuery, ExecutionError, QueryTimeout, TooManySamples, Unsupported
from mlwatch.promql.values import (
    I64,
    InstantVector,
    Labels,
    RangeVector,
    Scalar,
    StringValue,
    make_labels,
    merge_same_labels,
)
from mlwatch.regex import RegexError

Value = Scalar | StringValue | InstantVector | RangeVector

_MATCH_OPS = {"Equal": MatchOp.EQ, "NotEqual": MatchOp.NE, "Re": MatchOp.RE, "NotRe": MatchOp.NRE}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_POINTS = 11_000


def _register_holt_winters() -> None:
    """promql-parser follows Prometheus 3 (double_exponential_smoothing); 2.x calls it holt_winters."""
    vt = pp.ValueType
    try:
        pp.register_extra_functions([pp.Function("holt_winters", [vt.Matrix, vt.Scalar, vt.Scalar], vt.Vector)])
    except ValueError:  # already registered in this process
        pass


_register_holt_winters()


class SeriesSource(Protocol):
    """What the evaluator needs from storage (mlwatch.storage.reader.Reader satisfies it)."""

    def series(self, matchers: Sequence[Matcher]) -> Sequence[Any]: ...

    def read_many(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> dict[int, tuple[Any, Any]]: ...


MAX_EXPR_DEPTH = 150  # levels of brackets (a binary operator counts half a level); deeper queries are refused
# Strings and comments (skipped), opening brackets, closing brackets, binary operators.
_STRUCTURE_RE = re.compile(
    r""""[^"\\]*+(?:\\.[^"\\]*+)*+"|'[^'\\]*+(?:\\.[^'\\]*+)*+'|`[^`]*+`|\#[^\n]*+|([(\[])|([)\]])"""
    r"""|(\b(?:and|or|unless)\b|[-+*/%^]|[=!<>]=|[<>])"""
)


def _check_depth(text: str) -> None:
    """promql-parser recurses on the C stack: a few thousand nested calls or chained operators crash the
    whole process (SIGSEGV), and evaluation recurses too. Refuse such queries with a clear error first."""
    depth = deepest = ops = 0
    for m in _STRUCTURE_RE.finditer(text):
        if m.group(1):
            depth += 1
            deepest = max(deepest, depth)
        elif m.group(2):
            depth -= 1
        elif m.group(3):
            ops += 1
        if 2 * deepest + ops > 2 * MAX_EXPR_DEPTH:
            raise BadQuery(f"parse error: the expression is nested too deeply (more than {MAX_EXPR_DEPTH} levels of "
                           f"brackets, or {2 * MAX_EXPR_DEPTH} binary operators)")


def parse_expr(text: str) -> Any:
    """Parse ``text`` with promql-parser; a syntax error is a BadQuery, as Prometheus' bad_data."""
    if not text.strip():
        raise BadQuery("parse error: no expression found in input")
    _check_depth(text)
    try:
        return pp.parse(text)
    except ValueError as exc:
        raise BadQuery(f"parse error: {exc}") from None


def td_ms(value: dt.timedelta | None) -> int:
    if value is None:
        return 0
    return value.days * 86_400_000 + value.seconds * 1000 + value.microseconds // 1000


def _dt_ms(value: dt.datetime) -> int:
    return td_ms(value - _EPOCH)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """``kind`` is the API's resultType; ``series`` holds (labels, timestamps, values) per series."""

    kind: str
    series: list[tuple[Labels, I64, Any]]
    scalar: tuple[int, float] | None = None
    string: tuple[int, str] | None = None


@dataclass
class EngineOptions:
    lookback_ms: int = 300_000
    timeout_ms: int = 120_000
    max_samples: int = 50_000_000
    subquery_step_ms: int = 60_000  # Prometheus' default global evaluation_interval


class Engine:
    """Evaluates PromQL against a storage reader. Thread-safe: each query gets its own evaluator."""

    def __init__(self, source: SeriesSource, options: EngineOptions | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.options = options or EngineOptions()
        self.clock = clock

    def instant(self, expr: str, t_ms: int) -> QueryResult:
        node = parse_expr(expr)
        ev = _Evaluator(self, t_ms, t_ms, 0)
        value = ev.run(node)
        return ev.to_instant(value, node)

    def range(self, expr: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        if step_ms <= 0:
            raise BadQuery("zero or negative query resolution step widths are not accepted. Try a positive integer")
        if end_ms < start_ms:
            raise BadQuery("end timestamp must not be before start time")
        if (end_ms - start_ms) // step_ms > MAX_POINTS:
            raise BadQuery("exceeded maximum resolution of 11,000 points per timeseries. "
                           "Try decreasing the query resolution (?step=XX)")
        node = parse_expr(expr)
        if _type_of(node) not in ("vector", "scalar"):
            raise BadQuery(f"invalid expression type \"{_display_type(node)}\" for range query, "
                           "must be Scalar or instant Vector")
        ev = _Evaluator(self, start_ms, end_ms, step_ms)
        value = ev.run(node)
        return ev.to_matrix(value)


def _type_of(node: Any) -> str:
    if isinstance(node, pp.ParenExpr):
        return _type_of(node.expr)
    if isinstance(node, pp.NumberLiteral):
        return "scalar"
    if isinstance(node, pp.StringLiteral):
        return "string"
    if isinstance(node, (pp.MatrixSelector, pp.SubqueryExpr)):
        return "matrix"
    if isinstance(node, pp.Call):
        rt = node.func.return_type
        return {str(pp.ValueType.Scalar): "scalar", str(pp.ValueType.String): "string"}.get(str(rt), "vector")
    if isinstance(node, pp.BinaryExpr):
        if _type_of(node.lhs) == "scalar" and _type_of(node.rhs) == "scalar":
            return "scalar"
        return "vector"
    if isinstance(node, pp.UnaryExpr):
        return _type_of(node.expr)
    return "vector"


def _display_type(node: Any) -> str:
    return {"matrix": "range vector", "vector": "instant vector"}.get(_type_of(node), _type_of(node))


class _Evaluator:
    def __init__(self, engine: Engine, start: int, end: int, step: int) -> None:
        self.engine = engine
        self.opts = engine.options
        self.start, self.end, self.step = start, end, step
        self.steps = np.arange(start, end + 1, step, dtype=np.int64) if step else np.array([start], np.int64)
        self.deadline = time.monotonic() + self.opts.timeout_ms / 1000
        self.samples = 0

    # ------------------------------------------------------------ bookkeeping
    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise QueryTimeout()

    def account(self, n: int) -> None:
        self.samples += n
        if self.samples > self.opts.max_samples:
            raise TooManySamples()

    def run(self, node: Any) -> Value:
        return self.eval(node, self.steps)

    # ------------------------------------------------------------ dispatch
    def eval(self, node: Any, T: I64) -> Value:
        self.check_time()
        value = self._eval(node, T)
        self.check_time()
        return value

    def _eval(self, node: Any, T: I64) -> Value:
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr, T)
        if isinstance(node, pp.NumberLiteral):
            return Scalar(np.full(len(T), float(node.val)))
        if isinstance(node, pp.StringLiteral):
            return StringValue(str(node.val))
        if isinstance(node, pp.VectorSelector):
            return self.vector_selector(node, T)
        if isinstance(node, pp.MatrixSelector):
            return self.matrix_selector(node, T)
        if isinstance(node, pp.SubqueryExpr):
            return self.subquery(node, T)
        if isinstance(node, pp.UnaryExpr):
            return self.unary(node, T)
        if isinstance(node, pp.BinaryExpr):
            lhs, rhs = self.eval(node.lhs, T), self.eval(node.rhs, T)
            out = binops.evaluate(node, lhs, rhs)
            self.check_points(out)
            return out
        if isinstance(node, pp.AggregateExpr):
            op = str(node.op)
            param = self.eval(node.param, T) if node.param is not None else None
            vec = self.eval(node.expr, T)
            assert isinstance(vec, InstantVector)
            out = aggregations.aggregate(op, node.modifier, param, vec)
            self.check_points(out)
            return out
        if isinstance(node, pp.Call):
            result: Value = functions.call(self, node, T)
            self.check_points(result)
            return result
        raise Unsupported(f"expression {type(node).__name__}")

    def check_points(self, value: Value) -> None:
        if isinstance(value, InstantVector) and self.samples + int(value.present.sum()) > self.opts.max_samples:
            raise TooManySamples()

    # ------------------------------------------------------------ time references
    def ref_times(self, node: Any, T: I64) -> I64:
        """Evaluation times of a selector or subquery after ``@`` and ``offset``."""
        at = node.at
        if at is not None:
            kind = str(at.type).rsplit(".", 1)[-1]
            if kind == "Start":
                t0 = self.start
            elif kind == "End":
                t0 = self.end
            else:
                try:
                    t0 = _dt_ms(at.at)
                except (OverflowError, ValueError):  # the parser's datetime cannot hold it
                    raise BadQuery("parse error: timestamp out of bounds for @ modifier") from None
            base = np.full(len(T), t0, np.int64)
        else:
            base = T
        return base - td_ms(node.offset)

    # ------------------------------------------------------------ selectors
    def matchers(self, node: Any) -> list[Matcher]:
        out: list[Matcher] = []
        if node.name:
            out.append(Matcher.make("__name__", MatchOp.EQ, node.name))
        if node.matchers.or_matchers:
            raise Unsupported("'or' between label matchers inside a selector")
        for m in node.matchers.matchers:
            try:
                out.append(Matcher.make(m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value))
            except RegexError as exc:
                raise BadQuery(f"parse error: invalid regular expression {m.value!r}: {exc}") from None
        return out

    def fetch(self, node: Any, lo: int, hi: int) -> list[tuple[Labels, I64, Any]]:
        """Samples of every series the selector matches in ``[lo, hi]``, sorted by labels."""
        infos = self.engine.source.series(self.matchers(node))
        data = self.engine.source.read_many([i.id for i in infos], lo, hi) if infos else {}
        out = []
        total = 0
        for info in infos:
            ts, vals = data[info.id]
            total += len(ts)
            out.append((getattr(info, "labels", None) or make_labels(info.key.with_name()), ts, vals))
        self.account(total)
        out.sort(key=itemgetter(0))
        self.check_time()
        return out

    @staticmethod
    def _locate(rows: list[tuple[Labels, I64, Any]], targets: I64, lo_bound: int,
                side: Literal["left", "right"]) -> Any:
        """``searchsorted`` of ``targets`` in every row's timestamps at once: (series, steps) indices into
        the concatenated samples, and the offset where each row starts."""
        if len(rows) == 1:  # the same, without the keys that keep rows apart
            ts = rows[0][1]
            return np.searchsorted(ts, targets, side=side)[None, :], np.array([0, len(ts)], np.int64), ts
        lengths = np.fromiter((len(r[1]) for r in rows), np.int64, len(rows))
        starts = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        all_ts = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.int64)
        span = int(max(int(targets.max()), int(all_ts.max()) if len(all_ts) else lo_bound) - lo_bound + 2)
        owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        keys = owner * span + (all_ts - lo_bound)
        q = np.arange(len(rows), dtype=np.int64)[:, None] * span + np.clip(targets - lo_bound, -1, None)[None, :]
        return np.searchsorted(keys, q, side=side), starts, all_ts

    def vector_selector(self, node: Any, T: I64) -> InstantVector:
        R = self.ref_times(node, T)
        lookback = self.opts.lookback_ms
        lo_bound = int(R.min()) - lookback
        rows = self.fetch(node, lo_bound, int(R.max()))
        n = len(T)
        if not rows:
            return InstantVector([], np.zeros((0, n)), np.zeros((0, n), bool), np.zeros((0, n), np.int64))
        pos, starts, all_ts = self._locate(rows, R, lo_bound, "right")
        pos -= 1
        all_vals = np.concatenate([r[2] for r in rows])
        ok = pos >= starts[:-1, None]
        j = np.where(ok, pos, 0)
        if len(all_ts) == 0:
            return InstantVector([r[0] for r in rows], np.zeros((len(rows), n)), np.zeros((len(rows), n), bool),
                                 np.zeros((len(rows), n), np.int64))
        stamps = all_ts[j]
        values = all_vals[j]
        stale = values.view(np.int64) == STALE_NAN_BITS
        present = ok & (stamps >= R[None, :] - lookback) & ~stale
        return InstantVector([r[0] for r in rows], values, present, stamps)

    def matrix_selector(self, node: Any, T: I64) -> RangeVector:
        vs = node.vector_selector
        rng = td_ms(node.range)
        R = self.ref_times(vs, T)
        rows = self.fetch(vs, int(R.min()) - rng, int(R.max()))
        labels, tss, vals, los, his = [], [], [], [], []
        for lab, ts, v in rows:
            keep = v.view(np.int64) != STALE_NAN_BITS
            if not keep.all():
                ts, v = ts[keep], v[keep]
            labels.append(lab)
            tss.append(ts)
            vals.append(v)
            los.append(np.searchsorted(ts, R - rng, side="left"))
            his.append(np.searchsorted(ts, R, side="right"))
        return RangeVector(labels, tss, vals, los, his, R, rng)

    def subquery(self, node: Any, T: I64) -> RangeVector:
        rng = td_ms(node.range)
        step = td_ms(node.step) if node.step is not None else self.opts.subquery_step_ms
        if step <= 0:
            raise BadQuery("zero or negative subquery step")
        R = self.ref_times(node, T)
        first = int(R.min()) - rng
        g0 = (first // step) * step
        if g0 < first:
            g0 += step
        if (int(R.max()) - g0) // step + 1 > 10 * MAX_POINTS * max(1, len(T)):  # before allocating the grid
            raise ExecutionError("subquery has too many steps")
        grid = np.arange(g0, int(R.max()) + 1, step, dtype=np.int64)
        if len(grid) == 0:
            return RangeVector([], [], [], [], [], R, rng)
        inner = self.eval(node.expr, grid)
        if isinstance(inner, Scalar):
            inner = InstantVector([()], inner.values[None, :], np.ones((1, len(grid)), bool))
        if not isinstance(inner, InstantVector):
            raise BadQuery("subquery is only allowed on instant vector")
        labels, tss, vals, los, his = [], [], [], [], []
        for i, lab in enumerate(inner.labels):
            mask = inner.present[i]
            if not mask.any():
                continue
            ts = grid[mask]
            labels.append(lab)
            tss.append(ts)
            vals.append(inner.values[i][mask])
            los.append(np.searchsorted(ts, R - rng, side="left"))
            his.append(np.searchsorted(ts, R, side="right"))
        return RangeVector(labels, tss, vals, los, his, R, rng)

    def unary(self, node: Any, T: I64) -> Value:
        value = self.eval(node.expr, T)
        if isinstance(value, Scalar):
            return Scalar(-value.values)
        if isinstance(value, InstantVector):
            from mlwatch.promql.values import drop_name

            out = InstantVector([drop_name(lab) for lab in value.labels], -value.values, value.present)
            live = out.compact()
            if len(set(live.labels)) != len(live.labels):
                raise ExecutionError("vector cannot contain metrics with the same labelset")
            return live
        raise BadQuery("unary expression only allowed on expressions of type scalar or instant vector")

    # ------------------------------------------------------------ results
    def to_instant(self, value: Value, node: Any) -> QueryResult:
        t = int(self.steps[0])
        if isinstance(value, Scalar):
            return QueryResult("scalar", [], scalar=(t, float(value.values[0])))
        if isinstance(value, StringValue):
            return QueryResult("string", [], string=(t, value.value))
        if isinstance(value, RangeVector):
            series = []
            for lab, ts, vals, lo, hi in zip(value.labels, value.ts, value.values, value.lo, value.hi, strict=True):
                a, b = int(lo[0]), int(hi[0])
                if b > a:
                    series.append((lab, ts[a:b], vals[a:b]))
            series.sort(key=lambda r: r[0])
            return QueryResult("matrix", series)
        vec = merge_same_labels(value)
        series = [
            (lab, self.steps, vec.values[i]) for i, lab in enumerate(vec.labels) if vec.present[i, 0]
        ]
        order = functions.result_order(node)
        if order is not None:
            series = functions.sort_series(series, descending=order)
        return QueryResult("vector", series)

    def to_matrix(self, value: Value) -> QueryResult:
        if isinstance(value, Scalar):
            return QueryResult("matrix", [((), self.steps, value.values)])
        assert isinstance(value, InstantVector)
        vec = merge_same_labels(value)
        series = []
        for i, lab in enumerate(vec.labels):
            mask = vec.present[i]
            if mask.any():
                series.append((lab, self.steps[mask], vec.values[i][mask]))
        series.sort(key=lambda r: r[0])
        return QueryResult("matrix", series)
