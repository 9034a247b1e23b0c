"""OpenMetrics 1.0 text, read by rewriting it into text format 0.0.4 for ``textparse``.

What differs from 0.0.4 and how it is mapped (as Prometheus 2.x ingests OpenMetrics):

- the body must end with ``# EOF``; nothing may follow it;
- timestamps are seconds (may be fractional): converted to integer milliseconds;
- exemplars (``... # {trace_id="x"} 1.0``) are dropped;
- ``# UNIT`` is kept as the family's unit;
- a counter family ``x`` has samples ``x_total`` (and ``x_created``): the family becomes ``x_total``;
  an ``info`` family ``x`` has samples ``x_info``: stored as a gauge ``x_info``; ``stateset`` is a gauge;
  ``gaugehistogram`` and ``unknown`` families are stored untyped, series by series.
"""

from __future__ import annotations

import re

from mlwatch.errors import ParseError
from mlwatch.model import MetricFamily
from mlwatch.sources.textparse import parse_text

__all__ = ["OPENMETRICS_CONTENT_TYPE", "is_openmetrics", "parse_openmetrics"]

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text"

_META_RE = re.compile(r"^# (TYPE|HELP|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$")
# The part after the name and label set: value, optional timestamp, optional exemplar.
_TAIL_RE = re.compile(r"^ (\S+)(?: ([+-]?[0-9.eE+-]+))?(?: # \{.*)?$")
# A label set: anything but quotes and braces, or quoted strings with escapes; possessive, so a hostile
# line costs linear time and no backtracking memory.
_LABEL_SET_RE = re.compile(r'\{(?:[^"}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)  # up to its '}'


def is_openmetrics(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == OPENMETRICS_CONTENT_TYPE  # type: ignore[union-attr]


def _split_after_labels(line: str, lineno: int) -> int:
    """Index just past the metric name and label set of a sample line (one pass: linear in the line)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace == -1 or (space != -1 and space < brace):
        if space == -1:
            raise ParseError("expected a value after the metric name", lineno)
        return space
    end = _LABEL_SET_RE.match(line, brace).end()  # type: ignore[union-attr]  # always matches the brace
    if end == len(line):
        raise ParseError("unterminated label set", lineno)
    if line[end] == '"':
        raise ParseError("unterminated label value", lineno)
    return end + 1  # past the closing brace


def parse_openmetrics(data: bytes | str) -> list[MetricFamily]:
    """Parse an OpenMetrics text body; ParseError (with the line) when it is malformed."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("invalid UTF-8", data.count(b"\n", 0, exc.start) + 1) from None
    else:
        text = data
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[-1] != "# EOF":
        raise ParseError("an OpenMetrics body must end with '# EOF'", len(lines))
    types: dict[str, str] = {}
    units: dict[str, str] = {}
    for line in lines:
        m = _META_RE.match(line)
        if m and m.group(1) == "TYPE":
            types[m.group(2)] = (m.group(3) or "").strip()
    rename = {"counter": "_total", "info": "_info"}
    out: list[str] = []
    for lineno, line in enumerate(lines[:-1], 1):
        if line == "# EOF":
            raise ParseError("content after '# EOF'", lineno + 1)
        if line.startswith("#"):
            m = _META_RE.match(line)
            if m is None:
                continue  # other comments are allowed in 0.0.4 too; OpenMetrics has none
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            family_type = types.get(name, "unknown")
            new_name = name + rename.get(family_type, "")
            if kind == "UNIT":
                units[new_name] = rest
                continue
            if kind == "TYPE":
                mapped = {"info": "gauge", "stateset": "gauge"}.get(rest, rest)
                if mapped in ("gaugehistogram", "unknown"):
                    continue
                out.append(f"# TYPE {new_name} {mapped}")
            else:
                out.append(f"# HELP {new_name} {rest}")
            continue
        if not line:
            raise ParseError("empty lines are not allowed in OpenMetrics", lineno)
        cut = _split_after_labels(line, lineno)
        tail = _TAIL_RE.match(line[cut:])
        if tail is None:
            raise ParseError(f"invalid value, timestamp or exemplar: {line[cut:]!r}", lineno)
        value, ts = tail.group(1), tail.group(2)
        if ts is not None:
            try:
                ts_ms = round(float(ts) * 1000)
            except (ValueError, OverflowError):  # not a number, or too large for a time (1e400 is +Inf)
                raise ParseError(f"invalid timestamp {ts[:40]!r}", lineno) from None
            out.append(f"{line[:cut]} {value} {ts_ms}")
        else:
            out.append(f"{line[:cut]} {value}")
    families = parse_text("\n".join(out) + "\n" if out else "")
    for fam in families:
        fam.unit = units.get(fam.name, fam.unit)
    return families
