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
import numpy.typing as npt
import orjson

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


# ---------------------------------------------------------------- vectorised points
# A range result's points are rendered as bytes by numpy, all at once: every timestamp and every value that
# is a short decimal (m / 10**s with |m| < 2**50, the shortest such s: exactly the digits of the shortest
# round-trip form, as Go's 'f' -1 prints them) becomes a row of characters in a grid, and the grid's
# valid characters are the text. Other values (NaN, infinities, -0, 17-digit values, huge ones) go
# through format_value one by one.

_DEC_LIMIT = 2.0**50  # below this, rint(v * 10**s) recovers m exactly (error < 1/4)
_MAX_SCALE = 22  # 10**s is an exact double up to here
_SHORTCUT = 4  # from this scale on, values that are no short decimal at all are set apart in one test
_POW10_F = 10.0 ** np.arange(_MAX_SCALE + 1)
_POW10_I = 10 ** np.minimum(np.arange(_MAX_SCALE + 2), 18).astype(np.int64)
_ZERO = np.uint8(ord("0"))

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bools = npt.NDArray[np.bool_]


def _decimals(v: npt.NDArray[np.float64]) -> tuple[I64, I64, Bools]:
    """``(m, s, ok)``: ``v == m / 10**s`` with the smallest such ``s`` where ``ok``."""
    m = np.zeros(len(v), np.int64)
    s = np.zeros(len(v), np.int64)
    ok = np.zeros(len(v), bool)
    with np.errstate(invalid="ignore", over="ignore"):
        todo = np.flatnonzero(np.isfinite(v) & ~((v == 0) & np.signbit(v)))  # "-0" is left to format_value
        for scale in range(_MAX_SCALE + 1):
            if not len(todo):
                break
            if scale == _SHORTCUT:
                todo = todo[_decimal_at_most_scale(v[todo])]
            x = v[todo] * _POW10_F[scale]
            small = np.abs(x) < _DEC_LIMIT
            cand = np.rint(x)
            good = small & (cand / _POW10_F[scale] == v[todo])
            hit = todo[good]
            m[hit] = cand[good].astype(np.int64)
            s[hit] = scale
            ok[hit] = True
            todo = todo[small & ~good]  # once |v| * 10**s reaches the limit, no larger s fits either
    return m, s, ok


def _decimal_at_most_scale(v: npt.NDArray[np.float64]) -> Bools:
    """Which of ``v`` (non-zero, finite) are ``m / 10**s`` for some ``s >= _SHORTCUT`` with ``|m| < 2**50``.

    A decimal that round-trips at scale s also does at every larger one while ``|m|`` stays under the
    limit, so one test at each value's largest admissible scale decides; values with more digits
    (most computed ones: rates, averages) leave the scale-by-scale search at once."""
    av = np.abs(v)
    top = np.clip(np.floor(np.log10(_DEC_LIMIT / av)), 0, _MAX_SCALE).astype(np.int64)
    top -= av * _POW10_F[top] >= _DEC_LIMIT  # the estimate is at most one off either way
    up = np.minimum(top + 1, _MAX_SCALE)
    top += (top < _MAX_SCALE) & (av * _POW10_F[up] < _DEC_LIMIT)
    top = np.maximum(top, 0)
    x = v * _POW10_F[top]
    fits: Bools = (top >= _SHORTCUT) & (np.abs(x) < _DEC_LIMIT) & (np.rint(x) / _POW10_F[top] == v)
    return fits


Piece = tuple[U8, Bools | None]  # characters (rows x columns) and which are part of the text (None: all)


def _digits(a: I64, width: int) -> U8:
    """Decimal digits of non-negative ``a`` (< 10**18) as characters, right-aligned, zero-padded to ``width``."""
    out = np.empty((width, len(a)), np.uint8)  # filled a column at a time, contiguously
    if width > 9:  # 32-bit division is faster: the low nine digits and the rest apart
        hi, lo = np.divmod(a, 10**9)
        _fill(out[width - 9 :], lo.astype(np.uint32))
        _fill(out[: width - 9], hi.astype(np.uint32))
    else:
        _fill(out, a.astype(np.uint32))
    return out.T


def _fill(out: U8, q: npt.NDArray[np.uint32]) -> None:
    ten = np.uint32(10)
    for row in range(len(out) - 1, -1, -1):
        q, r = np.divmod(q, ten)
        out[row] = r
    out += _ZERO


def _const(text: bytes, n: int, rows: Bools | None = None) -> Piece:
    row = np.frombuffer(text, np.uint8)
    return np.broadcast_to(row, (n, len(row))), None if rows is None else np.repeat(rows[:, None], len(row), 1)


def _and(mask: Bools, rows: Bools | None) -> Bools:
    return mask if rows is None else mask & rows[:, None]


def _render(m: I64, s: I64, rows: Bools | None = None) -> list[Piece]:
    """``m / 10**s`` in plain decimal (``-12.05``, ``0.001``, ``7``) for the ``rows`` that are set (all: None)."""
    neg = m < 0
    a = np.abs(m)
    smax = int(s.max())
    ip = a // _POW10_I[s] if smax else a
    nd = np.searchsorted(_POW10_I[1:19], ip, side="right") + 1  # digits of the integer part
    wi = int(nd.max())
    n = len(m)
    pieces = [_const(b"-", n, neg if rows is None else neg & rows)] if neg.any() else []
    if int(nd.min()) == wi:  # every integer part as wide (as timestamps mostly are)
        pieces.append((_digits(ip, wi), None if rows is None else np.repeat(rows[:, None], wi, 1)))
    else:
        pieces.append((_digits(ip, wi), _and(np.arange(wi)[None, :] >= (wi - nd)[:, None], rows)))
    if smax:
        fp = a - ip * _POW10_I[s]
        pieces.append(_const(b".", n, s > 0 if rows is None else (s > 0) & rows))
        pieces.append((_digits(fp, smax), _and(np.arange(smax)[None, :] >= (smax - s)[:, None], rows)))
    return pieces


def _gather(buf: U8, starts: I64, ends: I64) -> tuple[U8, Bools]:
    """Rows of characters ``buf[starts[i]:ends[i]]``, left-aligned."""
    lengths = ends - starts
    width = int(lengths.max()) if len(lengths) else 0
    cols = np.arange(width)[None, :]
    idx = np.minimum(starts[:, None] + cols, max(len(buf) - 1, 0))
    return buf[idx], cols < lengths[:, None]


def _fallback_piece(vals: npt.NDArray[np.float64], bad: npt.NDArray[np.intp]) -> Piece:
    """The values that are not short decimals: plain-range ones (1e-4 <= |v| < 1e16, not whole) written by
    orjson, whose digits there are repr's and Go's; the rest (NaN, infinities, -0, huge and tiny values)
    one by one through format_value."""
    fb = vals[bad]
    with np.errstate(invalid="ignore"):
        mag = np.abs(fb)
        plain = (mag >= 1e-4) & (mag < 1e16) & (fb != np.trunc(fb))
    pieces: list[tuple[npt.NDArray[np.intp], Piece]] = []
    if plain.any():
        raw = orjson.dumps(np.ascontiguousarray(fb[plain]), option=orjson.OPT_SERIALIZE_NUMPY)
        text = np.frombuffer(raw, np.uint8)[1:-1]
        commas = np.flatnonzero(text == ord(","))
        starts = np.concatenate([[0], commas + 1])
        ends = np.concatenate([commas, [len(text)]])
        pieces.append((bad[plain], _gather(text, starts, ends)))
    if not plain.all():
        memo: dict[int, bytes] = {}
        texts = []
        rest = fb[~plain]
        for b, v in zip(rest.view(np.int64).tolist(), rest.tolist(), strict=True):
            t = memo.get(b)
            if t is None:
                t = memo[b] = format_value(v).encode()
            texts.append(t)
        lengths = np.array([len(t) for t in texts], np.int64)
        ends = np.cumsum(lengths)
        pieces.append((bad[~plain], _gather(np.frombuffer(b"".join(texts), np.uint8), ends - lengths, ends)))
    width = max(g.shape[1] for _, (g, _) in pieces)
    grid = np.zeros((len(vals), width), np.uint8)
    mask = np.zeros((len(vals), width), bool)
    for rows, (g, k) in pieces:
        grid[rows, : g.shape[1]] = g
        mask[rows, : g.shape[1]] = k
    return grid, mask


def _value_pieces(vals: npt.NDArray[np.float64]) -> list[Piece]:
    m, s, ok = _decimals(vals)
    if ok.all():
        return _render(m, s)
    return [*_render(m, s, ok), _fallback_piece(vals, np.flatnonzero(~ok))]


def _ts_pieces(ts: I64) -> list[Piece]:
    """Seconds, with three decimals when not whole (as format_ts)."""
    frac = ts % 1000 != 0
    if not frac.any():
        return _render(ts // 1000, np.zeros(len(ts), np.int64))
    return _render(np.where(frac, ts, ts // 1000), np.where(frac, 3, 0))


SMALL = 256  # below this many points, formatting point by point costs less than the vectorised set-up


def _points_small(ts: Any, vals: Any) -> str:
    arr = np.asarray(vals, np.float64)
    memo: dict[int, str] = {}
    out = []
    for t, b, v in zip(np.asarray(ts).tolist(), arr.view(np.int64).tolist(), arr.tolist(), strict=True):
        text = memo.get(b)
        if text is None:
            text = memo[b] = format_value(v)
        out.append(f'[{format_ts(t)},"{text}"]')
    return ",".join(out)


def _points_many(series: list[tuple[Any, Any]]) -> list[str]:
    """``[t,"v"],[t,"v"],...`` of each series, all rendered together as one grid of characters."""
    ts = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in series])
    vals = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series])
    n = len(ts)
    if n < SMALL or np.abs(ts).max() >= 10**18:
        return [_points_small(t, v) for t, v in series]
    parts = [_const(b"[", n), *_ts_pieces(ts), _const(b',"', n), *_value_pieces(vals), _const(b'"],', n)]
    width = sum(g.shape[1] for g, _ in parts)
    grid = np.empty((n, width), np.uint8)  # row-major, as the text runs (concatenate could pick column-major)
    mask = np.ones((n, width), bool)
    col = 0
    for g, k in parts:
        grid[:, col : col + g.shape[1]] = g
        if k is not None:
            mask[:, col : col + g.shape[1]] = k
        col += g.shape[1]
    text = grid.ravel()[mask.ravel()].tobytes().decode("ascii")
    if len(series) == 1:
        return [text[:-1]]
    row_ends = np.cumsum(mask.sum(axis=1))
    ends = row_ends[np.cumsum([len(t) for t, _ in series]) - 1].tolist()
    out = []
    start = 0
    for end in ends:
        out.append(text[start : end - 1])  # without the trailing comma
        start = end
    return out


def _points(ts: Any, vals: Any) -> str:
    """``[t,"v"],[t,"v"],...`` for one series' points."""
    return _points_many([(ts, vals)])[0]


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
        texts = _points_many([(ts, vals) for _, ts, vals in res.series]) if res.series else []
        for (labels, _, _), points in zip(res.series, texts, strict=True):
            parts.append(f'{{"metric":{_metric(labels)},"values":[{points}]}}')
    return f'{{"resultType":"{res.kind}","result":[{",".join(parts)}]}}'


def success_body(res: QueryResult) -> str:
    return f'{{"status":"success","data":{result_data(res)}}}'


def error_body(error_type: str, message: str) -> str:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}, ensure_ascii=False,
                      separators=(",", ":"))


def as_python(res: QueryResult) -> Any:
    return json.loads(success_body(res))
