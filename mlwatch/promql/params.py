"""Time and duration parameters as the Prometheus HTTP API reads them (plus relative times for the CLI)."""

from __future__ import annotations

import datetime as dt
import math
import re

from mlwatch.model import parse_duration_ms
from mlwatch.promql.errors import BadQuery

MIN_TIME_MS = -9223372036854775 // 1000 * 1000  # Prometheus' minTime, rounded to seconds
MAX_TIME_MS = 9223372036854775 // 1000 * 1000
_RELATIVE = re.compile(r"^([+-])(\S+)$")


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """RFC 3339 or Unix seconds (with fractions) to milliseconds; with ``now_ms``, also ``now`` and ``-1h``."""
    t = text.strip()
    if now_ms is not None:
        if t == "now":
            return now_ms
        m = _RELATIVE.match(t)
        if m and not re.fullmatch(r"[+-]?[0-9.eE+-]+", t):
            try:
                d = parse_duration_ms(m.group(2))
            except ValueError:
                raise BadQuery(f"cannot parse {text!r} to a valid timestamp") from None
            return now_ms - d if m.group(1) == "-" else now_ms + d
    try:
        f = float(t)
    except ValueError:
        pass
    else:
        if math.isnan(f) or math.isinf(f):
            raise BadQuery(f"cannot parse {text!r} to a valid timestamp")
        whole = math.floor(f) if f >= 0 else math.ceil(f)
        frac = round((f - whole) * 1000)
        return _in_range(text, int(whole) * 1000 + frac)
    try:
        stamp = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadQuery(f"cannot parse {text!r} to a valid timestamp") from None
    if stamp.tzinfo is None:
        raise BadQuery(f"cannot parse {text!r} to a valid timestamp")
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return _in_range(text, delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)


def _in_range(text: str, ms: int) -> int:
    """Times beyond Prometheus' minTime/maxTime (int64 nanoseconds) cannot be evaluated: bad_data, not a 500."""
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise BadQuery(f"cannot parse {text!r} to a valid timestamp: it is out of range")
    return ms


def parse_step(text: str) -> int:
    """A duration as float seconds or Prometheus syntax, in milliseconds."""
    t = text.strip()
    try:
        f = float(t)
    except ValueError:
        try:
            return parse_duration_ms(t)
        except ValueError:
            raise BadQuery(f"cannot parse {text!r} to a valid duration") from None
    if math.isnan(f) or math.isinf(f) or f * 1000 > 2**63:
        raise BadQuery(f"cannot parse {text!r} to a valid duration. It overflows int64")
    return round(f * 1000)
