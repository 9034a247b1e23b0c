"""Binary operators: arithmetic, comparisons (with ``bool``), set operators and vector matching.

Follows Prometheus 2.x ``VectorBinop``/``VectorscalarBinop``: arithmetic drops the metric name,
comparisons filter (or give 0/1 with ``bool``, dropping the name), one-to-one matching keeps only
the ``on`` labels (or drops the ``ignoring`` ones), ``group_left/right`` copy the listed labels from
the "one" side, and duplicates on the "one" side are the many-to-many error. All of it per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlwatch.promql.errors import BadQuery, ExecutionError
from mlwatch.promql.values import (
    F64,
    NAME,
    Bools,
    InstantVector,
    Labels,
    Scalar,
    StringValue,
    drop_name,
    format_labels,
    merge_same_labels,
)

ARITH = {"+", "-", "*", "/", "%", "^", "atan2"}
DROPS_NAME = ARITH - {"atan2"}  # Prometheus 2.x shouldDropMetricName
COMPARE = {"==", "!=", ">", "<", ">=", "<="}
SETOPS = {"and", "or", "unless"}


def arith(op: str, a: F64, b: F64) -> F64:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.true_divide(a, b)
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return np.power(a, b)
        if op == "atan2":
            return np.arctan2(a, b)
    raise BadQuery(f"unknown binary operator {op!r}")


def compare(op: str, a: F64, b: F64) -> Bools:
    return np.asarray(_compare(op, a, b), dtype=bool)


def _compare(op: str, a: F64, b: F64) -> Any:
    with np.errstate(invalid="ignore"):
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == ">":
            return a > b
        if op == "<":
            return a < b
        if op == ">=":
            return a >= b
        return a <= b


def evaluate(node: Any, lhs: Any, rhs: Any) -> Scalar | InstantVector:
    op = str(node.op)
    mod = node.modifier
    return_bool = bool(mod is not None and mod.return_bool)
    if isinstance(lhs, StringValue) or isinstance(rhs, StringValue):
        raise BadQuery("binary expression must contain only scalar and instant vector types")
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in COMPARE:
            return Scalar(compare(op, lhs.values, rhs.values).astype(np.float64))
        return Scalar(arith(op, lhs.values, rhs.values))
    if op in SETOPS:
        if not isinstance(lhs, InstantVector) or not isinstance(rhs, InstantVector):
            raise BadQuery(f"set operator \"{op}\" not allowed in binary scalar expression")
        return set_op(op, mod, lhs, rhs)
    if isinstance(lhs, InstantVector) and isinstance(rhs, InstantVector):
        return vector_binop(op, mod, return_bool, lhs, rhs)
    if isinstance(lhs, InstantVector) and isinstance(rhs, Scalar):
        return vector_scalar(op, return_bool, lhs, rhs.values, swap=False)
    if isinstance(lhs, Scalar) and isinstance(rhs, InstantVector):
        return vector_scalar(op, return_bool, rhs, lhs.values, swap=True)
    raise BadQuery("binary expression must contain only scalar and instant vector types")


def vector_scalar(op: str, return_bool: bool, vec: InstantVector, s: F64, *, swap: bool) -> InstantVector:
    a, b = (s[None, :], vec.values) if swap else (vec.values, s[None, :])
    present = vec.present
    if op in COMPARE:
        keep = compare(op, a, b)
        if return_bool:
            values = keep.astype(np.float64)
        else:
            values = vec.values
            present = present & keep
        labels = [drop_name(lab) for lab in vec.labels] if return_bool else vec.labels
    else:
        values = arith(op, a, b)
        labels = [drop_name(lab) for lab in vec.labels] if op in DROPS_NAME else vec.labels
    return merge_same_labels(InstantVector(labels, np.broadcast_to(values, vec.values.shape).copy(), present))


def _signature(labels: Labels, on: bool, names: frozenset[str]) -> Labels:
    if on:
        return tuple(p for p in labels if p[0] in names)
    return tuple(p for p in labels if p[0] not in names and p[0] != NAME)


def _matching(mod: Any) -> tuple[bool, frozenset[str]]:
    if mod is None or mod.matching is None:
        return False, frozenset()
    on = str(mod.matching.type).endswith("Include")
    return on, frozenset(mod.matching.labels)


def set_op(op: str, mod: Any, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    on, names = _matching(mod)
    steps = lhs.steps
    if op == "or":
        lsig: dict[Labels, Bools] = {}
        for i, lab in enumerate(lhs.labels):
            sig = _signature(lab, on, names)
            lsig[sig] = lsig.get(sig, np.zeros(steps, bool)) | lhs.present[i]
        rpres = rhs.present.copy()
        for i, lab in enumerate(rhs.labels):
            hit = lsig.get(_signature(lab, on, names))
            if hit is not None:
                rpres[i] &= ~hit
        out = InstantVector(lhs.labels + rhs.labels, np.concatenate([lhs.values, rhs.values]),
                            np.concatenate([lhs.present, rpres]))
        return merge_same_labels(out)
    rsig: dict[Labels, Bools] = {}
    for i, lab in enumerate(rhs.labels):
        sig = _signature(lab, on, names)
        rsig[sig] = rsig.get(sig, np.zeros(steps, bool)) | rhs.present[i]
    present = lhs.present.copy()
    none = np.zeros(steps, bool)
    for i, lab in enumerate(lhs.labels):
        hit = rsig.get(_signature(lab, on, names), none)
        present[i] &= hit if op == "and" else ~hit
    return merge_same_labels(InstantVector(lhs.labels, lhs.values, present))


def _result_labels(lhs: Labels, rhs: Labels, op: str, card: str, on: bool, names: frozenset[str],
                   include: list[str]) -> Labels:
    d = dict(lhs)
    if op in DROPS_NAME:
        d.pop(NAME, None)
    if card == "OneToOne":
        if on:
            d = {k: v for k, v in d.items() if k in names}
        else:
            for k in names:
                d.pop(k, None)
    if include:
        r = dict(rhs)
        for k in include:
            if r.get(k, ""):
                d[k] = r[k]
            else:
                d.pop(k, None)
    return tuple(sorted(d.items()))


def vector_binop(op: str, mod: Any, return_bool: bool, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    card = "OneToOne" if mod is None else str(mod.card).rsplit(".", 1)[-1]
    if card == "ManyToMany":
        raise ExecutionError("many-to-many only allowed for set operators")
    on, names = _matching(mod)
    include = list(mod.group_labels or []) if mod is not None else []
    swapped = card == "OneToMany"
    many, one = (rhs, lhs) if swapped else (lhs, rhs)
    steps = lhs.steps
    # The "one" side per signature, per step; two of its series at one step: many-to-many.
    one_sig: dict[Labels, list[int]] = {}
    for i, lab in enumerate(one.labels):
        one_sig.setdefault(_signature(lab, on, names), []).append(i)
    one_val: dict[Labels, tuple[F64, Bools, list[int]]] = {}
    for sig, rows in one_sig.items():
        if len(rows) == 1:
            one_val[sig] = (one.values[rows[0]], one.present[rows[0]], rows)
            continue
        count = one.present[rows].sum(axis=0)
        if (count > 1).any():
            side = "left" if swapped else "right"
            k = int(np.flatnonzero(count > 1)[0])
            dup = [format_labels(one.labels[r]) for r in rows if one.present[r, k]][:2]
            raise ExecutionError(
                f"found duplicate series for the match group {format_labels(sig)} on the {side} hand-side of the "
                f"operation: [{', '.join(dup)}];many-to-many matching not allowed: matching labels must be "
                "unique on one side"
            )
        vals = np.zeros(steps)
        pres = np.zeros(steps, bool)
        for r in rows:
            m = one.present[r]
            vals[m] = one.values[r][m]
            pres |= m
        one_val[sig] = (vals, pres, rows)
    out_labels: list[Labels] = []
    out_values: list[F64] = []
    out_present: list[Bools] = []
    seen: dict[Labels, dict[Labels, Bools]] = {}  # signature -> result labels -> steps already produced
    for i, lab in enumerate(many.labels):
        sig = _signature(lab, on, names)
        match = one_val.get(sig)
        if match is None:
            continue
        ovals, opres, orows = match
        pres = many.present[i] & opres
        if not pres.any():
            continue
        vl, vr = (ovals, many.values[i]) if swapped else (many.values[i], ovals)
        if op in COMPARE:
            keep = compare(op, vl, vr)
            if return_bool:
                value = keep.astype(np.float64)
            else:
                value = vl
                pres = pres & keep
        else:
            value = arith(op, vl, vr)
        if not pres.any():
            continue
        # group_left labels may come from different "one" series over time: split per one-side row.
        parts = [(pres, one.labels[orows[0]])] if len(orows) == 1 else [
            (pres & one.present[r], one.labels[r]) for r in orows
        ]
        for ppres, olab in parts:
            if not ppres.any():
                continue
            res = _result_labels(lab, olab, op, card, on, names, include)
            if return_bool:
                res = drop_name(res)
            per_sig = seen.setdefault(sig, {})
            if card == "OneToOne":
                produced = per_sig.get((), np.zeros(steps, bool))
                if (produced & ppres).any():
                    raise ExecutionError(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    )
                per_sig[()] = produced | ppres
            else:
                produced = per_sig.get(res, np.zeros(steps, bool))
                if (produced & ppres).any():
                    raise ExecutionError(
                        f"multiple matches for labels: grouping labels must ensure unique matches "
                        f"({format_labels(res)})"
                    )
                per_sig[res] = produced | ppres
            out_labels.append(res)
            out_values.append(np.asarray(value, dtype=np.float64))
            out_present.append(ppres)
    if not out_labels:
        return InstantVector.empty(steps)
    return merge_same_labels(InstantVector(out_labels, np.vstack(out_values), np.vstack(out_present)))
