"""Streaming readers of the backfill formats ``mlwatch import`` accepts: OpenMetrics text and CSV.

Both yield one item per line, so a file of any size is read in constant memory:

- OpenMetrics (what ``promtool tsdb create-blocks-from openmetrics`` reads): ``# TYPE``/``# HELP``/
  ``# UNIT`` lines, samples ``name{label="v"} value timestamp`` with the timestamp in seconds
  (fractions allowed) and required, an optional ``# EOF`` that must be last.
- CSV with a header row: ``metric`` (or ``__name__``), ``timestamp`` (Unix seconds or RFC 3339) and
  ``value`` columns; every other column is a label (an empty cell means the label is absent).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from mlwatch.model import LABEL_NAME_RE, METRIC_NAME_RE, MetricMeta, MetricType, Sample, SeriesKey

FORMATS = ("openmetrics", "csv")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(\S+))?(?:\s+#.*)?$")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_TYPES = {t.value: t for t in MetricType}
_TYPES.update({"gaugehistogram": MetricType.HISTOGRAM, "info": MetricType.GAUGE,
               "stateset": MetricType.GAUGE, "unknown": MetricType.UNTYPED})


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    message: str


class Item(NamedTuple):
    """One parsed line: a sample, a metric's metadata, or a problem."""

    line: int
    sample: Sample | None = None
    meta: tuple[str, MetricMeta] | None = None
    problem: str | None = None


def parse_float(text: str) -> float:
    """A Go ``ParseFloat``: Python's float() less underscores and hex."""
    if "_" not in text and "x" not in text and "X" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    t = text.strip()
    low = t.lower()
    if low in ("nan",):
        return math.nan
    if low in ("inf", "+inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if "_" in t or low.startswith(("0x", "-0x", "+0x")):
        raise ValueError(t)
    return float(t)


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), raw)


def _labels(blob: str) -> dict[str, str]:
    inner = blob[1:-1].strip()
    out: dict[str, str] = {}
    pos = 0
    while pos < len(inner):
        m = _PAIR.match(inner, pos)
        if m is None:
            raise ValueError(f"malformed label set {blob}")
        name, value = m.group(1), _unescape(m.group(2))
        if name in out:
            raise ValueError(f"duplicate label {name!r}")
        out[name] = value
        pos = m.end()
    return out


KEY_CACHE = 100_000  # series keys remembered while reading (bounds memory)


def read_openmetrics(lines: Iterable[str]) -> Iterator[Item]:
    meta: dict[str, MetricMeta] = {}
    keys: dict[tuple[str, str | None], SeriesKey] = {}
    eof_at = 0
    sample_re = _SAMPLE.match
    for no, line in enumerate(lines, 1):
        if eof_at:
            if line.strip():
                yield Item(no, problem=f"content after '# EOF' (line {eof_at})")
            continue
        c = line[:1]
        if c == "#":
            line = line.rstrip("\r\n")
            parts = line.split(None, 3)
            if parts[:2] == ["#", "EOF"] and len(parts) == 2:
                eof_at = no
                continue
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP", "UNIT"):
                name = parts[2]
                if not METRIC_NAME_RE.match(name):
                    yield Item(no, problem=f"invalid metric name {name!r}")
                    continue
                cur = meta.get(name, MetricMeta())
                arg = parts[3].strip() if len(parts) > 3 else ""
                if parts[1] == "TYPE":
                    typ = _TYPES.get(arg.lower())
                    if typ is None:
                        yield Item(no, problem=f"unknown metric type {arg!r}")
                        continue
                    cur = MetricMeta(typ, cur.help, cur.unit)
                elif parts[1] == "HELP":
                    cur = MetricMeta(cur.type, _unescape(arg), cur.unit)
                else:
                    cur = MetricMeta(cur.type, cur.help, arg)
                meta[name] = cur
                yield Item(no, meta=(name, cur))
            continue
        if c in ("\n", "\r", "", " ", "\t") and not line.strip():
            continue
        m = sample_re(line.rstrip("\r\n"))
        if m is None:
            yield Item(no, problem="expected 'name{labels} value timestamp'")
            continue
        name, blob, value, stamp = m.groups()
        key = keys.get((name, blob))
        if key is None:
            try:
                key = SeriesKey.of(name, _labels(blob) if blob else {})
            except ValueError as exc:
                yield Item(no, problem=str(exc))
                continue
            if len(keys) >= KEY_CACHE:
                keys.clear()
            keys[(name, blob)] = key
        try:
            v = parse_float(value)
        except ValueError:
            yield Item(no, problem=f"invalid value {value!r}")
            continue
        if stamp is None:
            yield Item(no, problem="a sample needs a timestamp to be imported")
            continue
        if stamp.isdigit():
            yield Item(no, Sample(key, int(stamp) * 1000, v))
            continue
        try:
            ts = parse_float(stamp)
            if not math.isfinite(ts):
                raise ValueError(stamp)
        except ValueError:
            yield Item(no, problem=f"invalid timestamp {stamp!r}")
            continue
        yield Item(no, Sample(key, round(ts * 1000), v))


def _csv_time(text: str) -> int:
    t = text.strip()
    try:
        return round(float(t) * 1000)
    except ValueError:
        pass
    stamp = dt.datetime.fromisoformat(t)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return round(stamp.timestamp() * 1000)


def read_csv(lines: Iterable[str]) -> Iterator[Item]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    for row in reader:
        no = reader.line_num
        if not row or not any(c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            name_col = "metric" if "metric" in header else "__name__"
            missing = [c for c in (name_col, "timestamp", "value") if c not in header]
            if missing:
                yield Item(no, problem=f"the header needs columns {', '.join(missing)} (metric, timestamp, value)")
                return
            bad = [c for c in header if c not in (name_col, "timestamp", "value") and not LABEL_NAME_RE.match(c)]
            if bad:
                yield Item(no, problem=f"invalid label name {bad[0]!r} in the header")
                return
            i_name, i_ts, i_val = header.index(name_col), header.index("timestamp"), header.index("value")
            label_cols = [(k, c) for k, c in enumerate(header) if k not in (i_name, i_ts, i_val)]
            continue
        if len(row) != len(header):
            yield Item(no, problem=f"expected {len(header)} fields, got {len(row)}")
            continue
        name = row[i_name].strip()
        if not METRIC_NAME_RE.match(name):
            yield Item(no, problem=f"invalid metric name {name!r}")
            continue
        try:
            ts = _csv_time(row[i_ts])
        except ValueError:
            yield Item(no, problem=f"invalid timestamp {row[i_ts]!r} (Unix seconds or RFC 3339)")
            continue
        try:
            v = parse_float(row[i_val])
        except ValueError:
            yield Item(no, problem=f"invalid value {row[i_val]!r}")
            continue
        labels = {c: row[k] for k, c in label_cols if row[k] != ""}
        yield Item(no, sample=Sample(SeriesKey.of(name, labels), ts, v))


def read_items(lines: Iterable[str], fmt: str) -> Iterator[Item]:
    if fmt == "csv":
        return read_csv(lines)
    if fmt == "openmetrics":
        return read_openmetrics(lines)
    raise ValueError(f"unknown import format {fmt!r} (use openmetrics or csv)")


def text_lines(data: bytes) -> Iterator[str]:
    return iter(io.StringIO(data.decode("utf-8")))


def render_openmetrics(samples: list[Sample], meta: dict[str, MetricMeta]) -> str:
    """Samples as OpenMetrics text (used to send a validated file to a daemon in pieces)."""
    from mlwatch.model import format_series
    from mlwatch.sources.textparse import go_float

    out = []
    for name, m in meta.items():
        if m.type is not MetricType.UNTYPED:
            out.append(f"# TYPE {name} {m.type.value}")
        if m.help:
            out.append(f"# HELP {name} {m.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}")
    for s in samples:
        out.append(f"{format_series(s.key.name, s.key.labels)} {go_float(s.value)} {s.ts / 1000!r}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ validation and batched writing
@dataclass
class ImportStats:
    samples: int = 0  # written
    skipped_old: int = 0  # older than the retention
    series: int = 0


def validate(items: Iterable[Item], max_problems: int = 20) -> tuple[list[Problem], int]:
    """Every problem (up to ``max_problems``) and the number of samples; nothing is written."""
    problems: list[Problem] = []
    n = 0
    types: dict[str, tuple[MetricType, int]] = {}
    for item in items:
        if item.problem is not None:
            if len(problems) < max_problems:
                problems.append(Problem(item.line, item.problem))
            else:
                problems.append(Problem(0, "more problems not shown"))
                break
        elif item.meta is not None:
            name, meta = item.meta
            seen = types.get(name)
            if seen is not None and seen[0] is not meta.type and meta.type is not MetricType.UNTYPED:
                problems.append(Problem(item.line, f"metric {name} has type {meta.type.value} here but "
                                                   f"{seen[0].value} on line {seen[1]}"))
            elif seen is None or meta.type is not MetricType.UNTYPED:
                types[name] = (meta.type, item.line)
        elif item.sample is not None:
            n += 1
    return problems, n


def batches(items: Iterable[Item], *, cutoff_ms: int, size: int, stats: ImportStats
            ) -> Iterator[tuple[list[Sample], dict[str, MetricMeta], int]]:
    """Valid items grouped into batches of ``size`` samples, with the metadata they need and the last line read."""
    meta: dict[str, MetricMeta] = {}
    sent_meta: set[str] = set()
    batch: list[Sample] = []
    names: set[str] = set()
    line = 0
    for item in items:
        line = item.line
        if item.meta is not None:
            meta[item.meta[0]] = item.meta[1]
            sent_meta.discard(item.meta[0])
            continue
        s = item.sample
        if s is None:
            continue
        if s.ts < cutoff_ms:
            stats.skipped_old += 1
            continue
        batch.append(s)
        names.add(s.key.name)
        if len(batch) >= size:
            yield batch, _family_meta(names, meta, sent_meta), line
            batch, names = [], set()
    if batch or names:
        yield batch, _family_meta(names, meta, sent_meta), line


def _family_meta(names: set[str], meta: dict[str, MetricMeta], sent: set[str]) -> dict[str, MetricMeta]:
    out: dict[str, MetricMeta] = {}
    for name in names:
        family = name
        if name not in meta:
            for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
                if name.endswith(suffix) and name[: -len(suffix)] in meta:
                    family = name[: -len(suffix)]
                    break
        m = meta.get(family)
        if m is not None and family not in sent:
            out[family] = m
            sent.add(family)
    return out
