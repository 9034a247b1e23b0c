"""Formatting of times, values, labels and sparklines for the screens."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
# mlwatch's own series, ALERTS, scrape bookkeeping and histogram buckets: listed after the rest
INTERNAL = re.compile(r"^(ALERTS|ALERTS_FOR_STATE|mlwatch_.*|scrape_.*|push_(failure_)?time_seconds|.*_bucket)$")


def when(ts: float | None, tz: dt.tzinfo | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz or dt.UTC).astimezone(tz).strftime("%m-%d %H:%M:%S")


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    d = max(0.0, now - ts)
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= secs:
            return f"{int(d // secs)}{unit} ago"
    return f"{int(d)}s ago"


def num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return f"{v:.4g}"
    return f"{v:.3e}"


def labels(d: dict[str, str], skip: Iterable[str] = ("alertname",)) -> str:
    s = set(skip)
    return ",".join(f"{k}={v}" for k, v in sorted(d.items()) if k not in s)


def sparkline(values: Sequence[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    out = []
    for v in values:
        if math.isnan(v):
            out.append(" ")
        else:
            out.append(BLOCKS[0] if hi == lo else BLOCKS[int((v - lo) / (hi - lo) * (len(BLOCKS) - 1))])
    return "".join(out)


def trend(values: Sequence[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if len(vals) < 2:
        return " "
    first, last = vals[0], vals[-1]
    scale = max(abs(first), abs(last), 1e-12)
    if abs(last - first) / scale < 0.01:
        return "→"
    return "↑" if last > first else "↓"


def row_filter(pattern: str) -> tuple[bool, re.Pattern[str] | None]:
    """``(invert, regex)`` of a ``/`` filter: a regex (a literal when it does not compile); ``!`` inverts."""
    invert = pattern.startswith("!")
    body = pattern[1:] if invert else pattern
    if not body:
        return invert, None
    try:
        return invert, re.compile(body, re.IGNORECASE)
    except re.error:
        return invert, re.compile(re.escape(body), re.IGNORECASE)


def keep(text: str, flt: tuple[bool, re.Pattern[str] | None]) -> bool:
    invert, rx = flt
    if rx is None:
        return True
    return bool(rx.search(text)) != invert
