"""Query results in the exact JSON of Prometheus' HTTP API (``/api/v1/query``, ``query_range``).

Written by hand rather than with ``json.dumps``: timestamps are seconds with up to three decimals
as Prometheus prints them (``1435781451.781``, ``12``), sample values are strings in Go's shortest
``'f'`` format (``"0.1"``, ``"1e+21"`` is ``"1000000000000000000000"``, ``"NaN"``, ``"+Inf"``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mlwatch.promql.engine import QueryResult
from mlwatch.promql.values import Labels


def format_value(v: float) -> str:
    r = repr(v)
    if "e" not in r and "n" not in r:  # repr is the shortest round-trip form, as Go's 'f' -1
        return r.removesuffix(".0")
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def format_ts(t: int) -> str:
    sign = "-" if t < 0 else ""
    t = abs(int(t))
    whole, frac = divmod(t, 1000)
    return f"{sign}{whole}.{frac:03d}" if frac else f"{sign}{whole}"


def _metric(labels: Labels) -> str:
    return json.dumps(dict(labels), ensure_ascii=False, separators=(",", ":"))


def _point(t: int, v: float) -> str:
    return f'[{format_ts(t)},"{format_value(v)}"]'


def _value_strings(vals: Any) -> list[str]:
    """Values in Go's 'f' -1 form: integral ones vectorised, the rest through a memo (values repeat)."""
    arr = np.asarray(vals, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        integral = (arr == np.trunc(arr)) & (np.abs(arr) < 2.0**53) & ~((arr == 0) & np.signbit(arr))
    if integral.all():
        return arr.astype(np.int64).astype(str).tolist()  # type: ignore[no-any-return]
    memo: dict[float, str] = {}
    out = []
    fv = format_value
    for v in arr.tolist():
        s = memo.get(v)
        if s is None:
            s = fv(v)
            if v != 0:  # 0.0 and -0.0 are equal keys but print differently
                memo[v] = s
        out.append(s)
    return out


def _points(ts: Any, vals: Any) -> str:
    whole, frac = np.divmod(np.asarray(ts, dtype=np.int64), 1000)
    if (frac == 0).all() and (whole >= 0).all():
        stamps = [str(w) for w in whole.tolist()]
    else:
        stamps = [format_ts(t) for t in np.asarray(ts).tolist()]
    return ",".join([f'[{t},"{v}"]' for t, v in zip(stamps, _value_strings(vals), strict=True)])


def result_data(res: QueryResult) -> str:
    """The ``data`` object of a successful query, as JSON text."""
    if res.kind == "scalar":
        assert res.scalar is not None
        return f'{{"resultType":"scalar","result":{_point(*res.scalar)}}}'
    if res.kind == "string":
        assert res.string is not None
        t, s = res.string
        return f'{{"resultType":"string","result":[{format_ts(t)},{json.dumps(s, ensure_ascii=False)}]}}'
    parts = []
    if res.kind == "vector":
        for labels, ts, vals in res.series:
            parts.append(f'{{"metric":{_metric(labels)},"value":{_point(int(ts[0]), float(vals[0]))}}}')
    else:
        for labels, ts, vals in res.series:
            points = _points(ts, vals)
            parts.append(f'{{"metric":{_metric(labels)},"values":[{points}]}}')
    return f'{{"resultType":"{res.kind}","result":[{",".join(parts)}]}}'


def success_body(res: QueryResult) -> str:
    return f'{{"status":"success","data":{result_data(res)}}}'


def error_body(error_type: str, message: str) -> str:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}, ensure_ascii=False,
                      separators=(",", ":"))


def as_python(res: QueryResult) -> Any:
    return json.loads(success_body(res))
