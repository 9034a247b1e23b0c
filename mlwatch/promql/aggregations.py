"""Aggregation operators (``sum avg min max count group stddev stdvar quantile topk bottomk count_values``).

Grouping follows Prometheus 2.x: ``by`` keeps only the listed labels (``__name__`` too if listed),
``without`` drops the listed labels and ``__name__``, no clause makes one group. Groups appear in
the order their first series appears; ``topk``/``bottomk`` keep each series' own labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlwatch.model import LABEL_NAME_RE
from mlwatch.promql.errors import ExecutionError, Unsupported
from mlwatch.promql.values import F64, NAME, Bools, InstantVector, Labels, Scalar, StringValue, merge_same_labels

SIMPLE = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"}


def group_labels(labels: Labels, modifier: Any) -> Labels:
    if modifier is None:
        return ()
    names = set(modifier.labels)
    if str(modifier.type).endswith("Without"):
        return tuple(p for p in labels if p[0] not in names and p[0] != NAME)
    return tuple(p for p in labels if p[0] in names)


def _groups(vec: InstantVector, modifier: Any) -> tuple[list[Labels], list[list[int]]]:
    if modifier is None:  # one group of every series
        return ([()], [list(range(len(vec.labels)))]) if vec.labels else ([], [])
    index: dict[Labels, int] = {}
    members: list[list[int]] = []
    for i, lab in enumerate(vec.labels):
        g = group_labels(lab, modifier)
        k = index.get(g)
        if k is None:
            k = index[g] = len(members)
            members.append([])
        members[k].append(i)
    return list(index), members


def aggregate(op: str, modifier: Any, param: Any, vec: InstantVector) -> InstantVector:
    steps = vec.steps
    if op in ("topk", "bottomk"):
        assert isinstance(param, Scalar)
        return _topk(vec, modifier, param.values, bottom=op == "bottomk")
    if op == "count_values":
        assert isinstance(param, StringValue)
        return _count_values(vec, modifier, param.value)
    if op not in SIMPLE and op != "quantile":
        raise Unsupported(f"aggregation {op}")
    keys, members = _groups(vec, modifier)
    if not keys:
        return InstantVector.empty(steps)
    values = np.zeros((len(keys), steps))
    present = np.zeros((len(keys), steps), bool)
    with np.errstate(all="ignore"):
        for g, rows in enumerate(members):
            whole = len(rows) == len(vec.labels)  # one group of all rows (in order): no copy
            P = vec.present if whole else vec.present[rows]
            V = vec.values if whole else vec.values[rows]
            n = P.sum(axis=0)
            present[g] = n > 0
            if op == "quantile":
                assert isinstance(param, Scalar)
                values[g] = quantile_columns(param.values, V.T, P.T)
                continue
            values[g] = _simple(op, V, P, n)
    return merge_same_labels(InstantVector(keys, values, present))


def _simple(op: str, V: F64, P: Bools, n: Any) -> F64:
    return np.asarray(_simple_any(op, V, P, n), dtype=np.float64)


def _simple_any(op: str, V: F64, P: Bools, n: Any) -> Any:
    if op == "count":
        return n.astype(np.float64)
    if op == "group":
        return np.ones(V.shape[1])
    if op == "sum":
        # a reduction over axis 0 of a C-ordered array adds row after row: input order, as Prometheus does
        return np.where(P, V, 0.0).sum(axis=0)
    if op == "avg":
        # Prometheus 2.x: a running mean from the first value, keeping an infinite mean when it can
        if P.all() and np.isfinite(V).all():  # the common case, with fewer operations per series
            # mean += v/k - mean/k row by row (bit for bit as Prometheus); every v/k divided at once
            ks = np.arange(1, V.shape[0] + 1, dtype=np.float64)
            vk = V / ks[:, None]
            mean = V[0].copy()
            tmp = np.empty_like(mean)
            for r in range(1, V.shape[0]):
                np.divide(mean, ks[r], out=tmp)
                np.subtract(vk[r], tmp, out=tmp)
                mean += tmp
            return mean
        mean = np.zeros(V.shape[1])
        count = np.zeros(V.shape[1])
        for r in range(V.shape[0]):
            p, v = P[r], V[r]
            first = p & (count == 0)
            count = np.where(p, count + 1, count)
            skip = np.isinf(mean) & ((np.isinf(v) & ((mean > 0) == (v > 0))) | (~np.isinf(v) & ~np.isnan(v)))
            c = np.maximum(count, 1)
            nxt = mean + (v / c - mean / c)
            mean = np.where(first, v, np.where(p & ~skip, nxt, mean))
        return mean
    if op == "min":
        return np.fmin.reduce(np.where(P, V, np.nan), axis=0)
    if op == "max":
        return np.fmax.reduce(np.where(P, V, np.nan), axis=0)
    # stddev / stdvar: Welford, row by row, as Prometheus does
    count = np.zeros(V.shape[1])
    mean = np.zeros(V.shape[1])
    m2 = np.zeros(V.shape[1])
    for r in range(V.shape[0]):
        p = P[r]
        first = p & (count == 0)  # Prometheus starts a group at mean=v, m2=0 (so one NaN gives 0)
        count = np.where(p, count + 1, count)
        delta = V[r] - mean
        mean = np.where(first, V[r], np.where(p, mean + delta / np.maximum(count, 1), mean))
        m2 = np.where(first, 0.0, np.where(p, m2 + delta * (V[r] - mean), m2))
    var = m2 / np.maximum(count, 1)
    return var if op == "stdvar" else np.sqrt(var)


def quantile_columns(q: F64, V: F64, P: Bools) -> F64:
    """Prometheus' ``quantile`` for each row of ``V`` (steps x items), over the items present.

    NaNs sort first, as Prometheus' ``vectorByValueHeap`` orders them.
    """
    steps, width = V.shape
    out = np.full(steps, np.nan)
    if width == 0:
        return out
    flag = np.where(P, np.where(np.isnan(V), 0, 1), 2)
    key = np.where(P & ~np.isnan(V), V, 0.0)
    order = np.lexsort((key, flag), axis=-1)
    S = np.take_along_axis(V, order, axis=1)
    n = P.sum(axis=1).astype(np.float64)
    with np.errstate(all="ignore"):
        rank = q * (n - 1)
        lower = np.maximum(0, np.floor(rank))
        upper = np.minimum(n - 1, lower + 1)
        weight = rank - np.floor(rank)
        li = np.clip(np.nan_to_num(lower), 0, width - 1).astype(np.intp)
        ui = np.clip(np.nan_to_num(upper), 0, width - 1).astype(np.intp)
        rows = np.arange(steps)
        res = S[rows, li] * (1 - weight) + S[rows, ui] * weight
    res = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, res))
    res = np.where(np.isnan(q) | (n == 0), np.nan, res)
    out[:] = res
    return out


def _topk(vec: InstantVector, modifier: Any, k_values: F64, *, bottom: bool) -> InstantVector:
    steps = vec.steps
    if np.isnan(k_values).any() or (np.abs(k_values) >= 2**63).any():
        bad = k_values[np.isnan(k_values) | (np.abs(k_values) >= 2**63)][0]
        raise ExecutionError(f"Scalar value {bad} overflows int64")
    ks = np.trunc(k_values).astype(np.int64)
    _keys, members = _groups(vec, modifier)
    present = np.zeros_like(vec.present)
    for rows in members:
        V = vec.values[rows]
        P = vec.present[rows]
        nan = np.isnan(V)
        # rank: present non-NaN by value, then present NaN, then absent
        flag = np.where(P, np.where(nan, 1, 0), 2)
        key = np.where(P & ~nan, V if bottom else -V, 0.0)
        order = np.lexsort((key, flag), axis=0)  # per step (column), best first
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(len(rows))[:, None].repeat(steps, axis=1), axis=0)
        chosen = (rank < ks[None, :]) & P
        present[rows] = chosen
    return InstantVector(list(vec.labels), vec.values, present)


def _format_value(v: float) -> str:
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def _count_values(vec: InstantVector, modifier: Any, label: str) -> InstantVector:
    if not LABEL_NAME_RE.match(label):
        raise ExecutionError(f"invalid label name {label!r}")
    steps = vec.steps
    counts: dict[Labels, F64] = {}
    order: list[Labels] = []
    for i, lab in enumerate(vec.labels):
        base = dict(group_labels(lab, modifier))
        for j in np.flatnonzero(vec.present[i]):
            d = dict(base)
            d[label] = _format_value(float(vec.values[i, j]))
            key = tuple(sorted(d.items()))
            arr = counts.get(key)
            if arr is None:
                arr = counts[key] = np.zeros(steps)
                order.append(key)
            arr[j] += 1
    if not order:
        return InstantVector.empty(steps)
    values = np.vstack([counts[k] for k in order])
    return InstantVector(order, values, values > 0)
