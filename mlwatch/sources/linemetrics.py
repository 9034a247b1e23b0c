"""Metrics derived per log line: counters, gauges, histograms and summaries of line fields.

:class:`LineMetrics` is the line operator for a log source's ``metrics``. Each metric gets a specialised
closure (``_feeder``) for the per-line path; a clean chunk of JSONL lines can instead be applied in bulk
with numpy (``feed_chunk``), which must give the same result (tests/sources/test_logfile.py checks).
Values are kept per label-value tuple; ``samples()`` writes them as Prometheus series (histograms as
cumulative ``_bucket{le}``, ``_sum``, ``_count``; summaries as ``{quantile}``, ``_sum``, ``_count``).

Summary quantiles cover the last ``max_age`` as prometheus_client's (Go's) summaries do: the window is
``AGE_BUCKETS`` slots of ``max_age / AGE_BUCKETS`` (by the line's time), so it spans between 4/5 of
``max_age`` and ``max_age``, and each slot keeps a uniform reservoir of at most ``RESERVOIR`` values
(Algorithm R), so memory is bounded per label set. Error: exact while a slot has seen at most
``RESERVOIR`` values; beyond, a quantile's rank is off by about sqrt(q(1-q)/n) (one standard
deviation), n being the values kept in the window (up to 1,280): 0.3% of rank for q=0.99, 1.4% for
q=0.5. The reservoir's choices are a hash of the count, not random, so the same lines always give the
same state, and the windows are committed with the offsets like every other value here.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from mlwatch.config.parts import DEFAULT_BUCKETS, LogMetricConfig, template_fields
from mlwatch.config.sources import DEFAULT_QUANTILES, DEFAULT_SUMMARY_MAX_AGE
from mlwatch.model import MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.fieldpath import MISSING, FieldPath, to_number
from mlwatch.sources.linechunk import LineChunk
from mlwatch.sources.sampling import LineEvent
from mlwatch.sources.textparse import format_float

__all__ = ["AGE_BUCKETS", "RESERVOIR", "LineMetrics", "QuantileWindow"]

AGE_BUCKETS = 5
RESERVOIR = 256
_M64 = (1 << 64) - 1


def _mix(n: int) -> int:
    """splitmix64: a well-spread hash of an integer (the reservoir's deterministic dice)."""
    z = (n + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class QuantileWindow:
    """The values of one summary series over a sliding window, bounded (see the module docstring)."""

    __slots__ = ("newest", "slots", "width")

    def __init__(self, max_age_ms: int) -> None:
        self.width = max(1, max_age_ms // AGE_BUCKETS)
        self.slots: dict[int, tuple[list[int], list[float]]] = {}  # slot -> ([values seen], reservoir)
        self.newest = -(1 << 62)

    def add(self, ts: int, x: float) -> None:
        s = ts // self.width
        slot = self.slots.get(s)
        if slot is None:
            if s <= self.newest - AGE_BUCKETS:
                return  # older than the whole window: it still counts in _sum and _count
            slot = self.slots[s] = ([0], [])
            if s > self.newest:
                self.newest = s
                for old in [k for k in self.slots if k <= s - AGE_BUCKETS]:
                    del self.slots[old]
        seen, kept = slot
        n = seen[0]
        if n < RESERVOIR:
            kept.append(x)
        else:
            j = _mix(n * 1_000_003 + s) % (n + 1)
            if j < RESERVOIR:
                kept[j] = x
        seen[0] = n + 1

    def quantiles(self, t: int, qs: Sequence[float]) -> list[float] | None:
        """The quantiles of the values in the window ending at ``t`` (None: the window is empty)."""
        now = t // self.width
        weighted: list[tuple[float, float]] = []
        for s, (seen, kept) in self.slots.items():
            if now - AGE_BUCKETS < s <= now and kept:
                w = seen[0] / len(kept)  # each kept value stands for this many seen
                weighted += [(x, w) for x in kept]
        if not weighted:
            return None
        weighted.sort()
        total = sum(w for _, w in weighted)
        out: list[float] = []
        i, acc = 0, weighted[0][1]
        for q in qs:  # increasing: one pass
            target = q * total
            while acc < target - 1e-9 * total and i + 1 < len(weighted):
                i += 1
                acc += weighted[i][1]
            out.append(weighted[i][0])
        return out

    def to_json(self) -> list[Any]:
        # fresh lists: the live ones keep changing after the snapshot is taken
        return [self.width, [[s, seen[0], list(kept)] for s, (seen, kept) in self.slots.items()]]

    def load(self, doc: Any) -> bool:
        """Take a :meth:`to_json` state; False (and nothing loaded) when it was made for another width."""
        width, slots = doc
        if width != self.width:
            return False
        self.slots = {int(s): ([int(n)], [float(x) for x in kept]) for s, n, kept in slots}
        self.newest = max(self.slots, default=-(1 << 62))
        return True


class _Template:
    """A label template: ``"{model}"`` (one field, fast), a literal, or a mix."""

    __slots__ = ("literal", "parts", "single")

    def __init__(self, text: str) -> None:
        fields = template_fields(text)
        self.literal: str | None = None
        self.single: FieldPath | None = None
        self.parts: list[tuple[str, FieldPath]] = []
        if not fields:
            self.literal = text.replace("{{", "{").replace("}}", "}")
        elif text == "{" + fields[0] + "}":
            self.single = FieldPath(fields[0])
        else:
            self.parts = [(f, FieldPath(f)) for f in fields]
            self.literal = text

    def render(self, fields: dict[str, Any]) -> str | None:
        if self.single is not None:
            v = self.single.get(fields)
            if v is MISSING or v is None:
                return None
            return v if isinstance(v, str) else _label_text(v)
        if not self.parts:
            return self.literal
        out = self.literal or ""
        out = out.replace("{{", "\0").replace("}}", "\1")
        for name, path in self.parts:
            v = path.get(fields)
            if v is MISSING or v is None:
                return None
            out = out.replace("{" + name + "}", v if isinstance(v, str) else _label_text(v))
        return out.replace("\0", "{").replace("\1", "}")


def _label_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, int | float):
        return str(v)
    return orjson.dumps(v).decode()


class _Metric:
    __slots__ = ("buckets", "cfg", "field", "kind", "label_names", "max_age", "name", "quantiles", "scale",
                 "templates", "touched", "values", "windows")  # fmt: skip

    def __init__(self, cfg: LogMetricConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.type
        self.field = FieldPath(cfg.field) if cfg.field else None
        self.scale = cfg.scale
        self.label_names = tuple(cfg.labels)
        self.templates = [_Template(t) for t in cfg.labels.values()]
        self.buckets = tuple(cfg.buckets or DEFAULT_BUCKETS) if cfg.type == "histogram" else ()
        # label values -> float (counter, gauge) or [bucket counts..., sum, count] (histogram, summary)
        self.values: dict[tuple[str, ...], Any] = {}
        self.touched: dict[tuple[str, ...], int] = {}  # label values -> newest event time since last emit
        summary = cfg.type == "summary"
        self.quantiles = getattr(cfg, "summary_quantiles", DEFAULT_QUANTILES) if summary else ()
        self.max_age: int = getattr(cfg, "summary_max_age", DEFAULT_SUMMARY_MAX_AGE)
        # label values -> the window of a summary's quantiles (None: not a summary, or no quantiles)
        self.windows: dict[tuple[str, ...], QuantileWindow] | None = {} if self.quantiles else None


class LineMetrics:
    """The config's ``metrics``: counters, gauges, histograms and summaries of line fields."""

    name = "metrics"

    def __init__(self, metrics: Sequence[LogMetricConfig], base_labels: dict[str, str]) -> None:
        self._metrics = [_Metric(m) for m in metrics]
        self._base = base_labels
        self.feeders = [_feeder(m) for m in self._metrics]

    def feed(self, event: LineEvent) -> str | None:
        fields, ts = event.fields, event.ts_ms
        reason = None
        for feeder in self.feeders:
            r = feeder(fields, ts)
            if r is not None and (reason is None or reason == "missing_field"):
                reason = r  # the most telling reason of the line is counted
        return reason

    def feed_chunk(self, docs: list[dict[str, Any]], ts: int) -> bool:
        """Apply a whole chunk of parsed lines at once (vectorised), or return False having changed nothing
        when a line needs the per-line path (a missing field, a non-number, a negative counter increment)."""
        return self.take_chunk(LineChunk(docs, ts))

    def take_chunk(self, chunk: LineChunk) -> bool:
        """:meth:`feed_chunk` on a shared :class:`LineChunk` (its columns are extracted once for all operators)."""
        if not len(chunk):
            return True
        plans = []
        for m in self._metrics:
            plan = _chunk_plan(m, chunk)
            if plan is None:
                return False
            plans.append(plan)
        for plan in plans:
            plan()
        return True

    def samples(self, now_ms: int, full: bool) -> list[Sample]:
        out: list[Sample] = []
        base = self._base
        for m in self._metrics:
            keys = m.values.keys() if full else list(m.touched)
            for key in keys:
                value = m.values.get(key)
                if value is None:
                    continue
                ts = m.touched.get(key, now_ms) if now_ms < 0 else now_ms
                labels = {**base, **dict(zip(m.label_names, key, strict=True))}
                if m.kind in ("counter", "gauge"):
                    out.append(Sample(SeriesKey.of(m.name, labels), ts, float(value)))
                    continue
                if m.kind == "histogram":
                    acc = 0
                    for le, n in zip(m.buckets, value, strict=False):
                        acc += n
                        out.append(Sample(SeriesKey.of(m.name + "_bucket", {**labels, "le": _le(le)}), ts, float(acc)))
                    out.append(Sample(SeriesKey.of(m.name + "_bucket", {**labels, "le": "+Inf"}), ts, float(value[-1])))
                elif m.windows is not None and (win := m.windows.get(key)) is not None:
                    qv = win.quantiles(ts, m.quantiles)
                    for q, v in zip(m.quantiles, qv or (), strict=False):  # an empty window writes none
                        out.append(Sample(SeriesKey.of(m.name, {**labels, "quantile": _le(q)}), ts, v))
                out.append(Sample(SeriesKey.of(m.name + "_sum", labels), ts, float(value[-2])))
                out.append(Sample(SeriesKey.of(m.name + "_count", labels), ts, float(value[-1])))
            m.touched.clear()
        return out

    def meta(self) -> dict[str, MetricMeta]:
        return {m.name: MetricMeta(MetricType(m.kind), m.cfg.help) for m in self._metrics}

    def snapshot(self) -> Any:
        return [
            # Histogram/summary values are lists mutated in place: copy them, or a rollback after a
            # refused batch would restore the already-advanced lists and count lines twice.
            [
                m.name,
                m.kind,
                list(m.label_names),
                [[list(k), list(v) if isinstance(v, list) else v] for k, v in m.values.items()],
                [[list(k), w.to_json()] for k, w in (m.windows or {}).items()],
            ]
            for m in self._metrics
        ]

    def restore(self, state: Any) -> None:
        by_name = {(e[0], e[1], tuple(e[2])): e[3] for e in state or []}
        windows = {(e[0], e[1], tuple(e[2])): e[4] for e in state or [] if len(e) > 4}
        for m in self._metrics:
            values = by_name.get((m.name, m.kind, m.label_names))
            m.values.clear()  # in place: the feeders hold these dicts
            m.touched.clear()
            if m.windows is not None:
                m.windows.clear()
                for k, doc in windows.get((m.name, m.kind, m.label_names)) or []:
                    win = QuantileWindow(m.max_age)
                    if win.load(doc):  # max_age changed: the quantiles start again
                        m.windows[tuple(k)] = win
            for k, v in values or []:
                if isinstance(v, list) and m.kind in ("histogram", "summary"):
                    if len(v) != len(m.buckets) + 2:
                        continue  # buckets changed: the histogram starts again
                    v = [*v]
                m.values[tuple(k)] = v


Feeder = Callable[[dict[str, Any], int], "str | None"]


def _key_builder(m: _Metric) -> Callable[[dict[str, Any]], tuple[str, ...] | None]:
    """The label values of a line for ``m`` (None when a templated field is missing)."""
    if not m.templates:
        return lambda fields: ()
    simple = [t.single.parts[0] if t.single is not None and len(t.single.parts) == 1 else None for t in m.templates]
    if len(simple) == 1 and isinstance(simple[0], str):
        name = simple[0]

        def one(fields: dict[str, Any]) -> tuple[str, ...] | None:
            v = fields.get(name)
            if v is None:
                return None
            return (v if type(v) is str else _label_text(v),)

        return one
    templates = m.templates

    def many(fields: dict[str, Any]) -> tuple[str, ...] | None:
        out = []
        for tpl in templates:
            v = tpl.render(fields)
            if v is None:
                return None
            out.append(v)
        return tuple(out)

    return many


def _feeder(m: _Metric) -> Feeder:
    """A closure that applies one line to one metric (specialised: this is the per-line hot path)."""
    key_of = _key_builder(m)
    values, touched, scale = m.values, m.touched, m.scale
    field_path = m.field
    simple = field_path.parts[0] if field_path is not None and len(field_path.parts) == 1 else None

    def number(fields: dict[str, Any]) -> float | str:
        raw = fields.get(simple, MISSING) if type(simple) is str else field_path.get(fields)  # type: ignore[union-attr]
        if raw is MISSING or raw is None:
            return "missing_field"
        if type(raw) is float or type(raw) is int:
            return raw * scale
        x = to_number(raw)
        if x is None or math.isnan(x):
            return "not_a_number"
        return x * scale

    def touch(key: tuple[str, ...], ts: int) -> None:
        if ts > touched.get(key, -1):
            touched[key] = ts

    single = m.templates[0].single if len(m.templates) == 1 else None
    label_field = single.parts[0] if single is not None and len(single.parts) == 1 else None
    if field_path is None and isinstance(label_field, str):  # the common case, inlined: count lines by a field

        def count_by(fields: dict[str, Any], ts: int) -> str | None:
            v = fields.get(label_field)
            if v is None:
                return "missing_field"
            key = (v,) if type(v) is str else (_label_text(v),)
            values[key] = values.get(key, 0.0) + scale
            if ts > touched.get(key, -1):
                touched[key] = ts
            return None

        return count_by
    if field_path is None:  # count lines

        def count(fields: dict[str, Any], ts: int) -> str | None:
            key = key_of(fields)
            if key is None:
                return "missing_field"
            values[key] = values.get(key, 0.0) + scale
            touch(key, ts)
            return None

        return count
    kind = m.kind
    buckets = m.buckets
    nb = len(buckets)
    windows, max_age = m.windows, m.max_age

    def observe(fields: dict[str, Any], ts: int) -> str | None:
        key = key_of(fields)
        if key is None:
            return "missing_field"
        x = fields.get(simple, MISSING) if type(simple) is str else MISSING
        if type(x) is float or type(x) is int:
            x = x * scale
        else:
            x = number(fields)
            if type(x) is str:
                return x
        if x != x:  # noqa: PLR0124 (NaN)
            return "not_a_number"
        if kind == "counter":
            if x < 0:
                return "negative"
            values[key] = values.get(key, 0.0) + x
        elif kind == "gauge":
            values[key] = float(x)
        else:
            cur = values.get(key)
            if cur is None:
                cur = values[key] = [0] * nb + [0.0, 0]
            if nb:
                i = bisect_left(buckets, x)
                if i < nb:
                    cur[i] += 1  # per-bucket counts; cumulated when written
            cur[-2] += x
            cur[-1] += 1
            if windows is not None:
                win = windows.get(key)
                if win is None:
                    win = windows[key] = QuantileWindow(max_age)
                win.add(ts, x)
        if ts > touched.get(key, -1):
            touched[key] = ts
        return None

    return observe


def _simple(path: FieldPath | None) -> str | None:
    return path.parts[0] if path is not None and len(path.parts) == 1 and isinstance(path.parts[0], str) else None


def _chunk_plan(m: _Metric, chunk: LineChunk) -> Callable[[], None] | None:
    """How ``m`` takes a chunk of lines in bulk (applied by calling the result), or None when any line of
    the chunk needs the per-line path. Nothing is changed until the plan is applied."""
    if len(m.templates) > 1 or (m.templates and m.templates[0].single is None):
        return None
    label_path = m.templates[0].single if m.templates else None
    if label_path is not None and _simple(label_path) is None:
        return None
    n = len(chunk)
    keys: list[tuple[str, ...]]
    if label_path is not None:
        codes = chunk.strings(label_path)  # a label from a non-string value: the per-line path formats it
        if codes is None:
            return None
        inverse, uniques = codes
        keys = [(u,) for u in uniques]
    else:
        inverse, keys = np.zeros(n, dtype=np.intp), [()]
    groups = len(keys)
    ts = chunk.ts
    if isinstance(ts, int):
        newest: list[int] = [ts] * groups
    else:  # event times: each series is touched at its newest line
        top = np.full(groups, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(top, inverse, ts)
        newest = top.tolist()
    values, touched, scale, kind = m.values, m.touched, m.scale, m.kind
    if m.field is None:  # count lines per key
        counts = np.bincount(inverse, minlength=groups).tolist()

        def apply_count() -> None:
            for g, key in enumerate(keys):
                values[key] = values.get(key, 0.0) + counts[g] * scale
                touched[key] = max(touched.get(key, -1), newest[g])

        return apply_count
    if _simple(m.field) is None:
        return None
    raw = chunk.numbers(m.field)
    if raw is None:
        return None
    xs = raw * scale if scale != 1.0 else raw
    if np.isnan(xs).any() or (kind == "counter" and (xs < 0).any()):
        return None
    sums = np.bincount(inverse, weights=xs, minlength=groups)
    counts_arr = np.bincount(inverse, minlength=groups)
    if kind == "gauge":
        last_index = np.zeros(groups, dtype=np.intp)
        last_index[inverse] = np.arange(len(xs))  # the last write wins: the last line of each key
        lasts = xs[last_index]
    if kind == "histogram":
        nb = len(m.buckets)
        slot = np.searchsorted(np.asarray(m.buckets), xs, side="left")  # le is inclusive, as bisect_left
        per_bucket = np.bincount(inverse * (nb + 1) + slot, minlength=groups * (nb + 1)).reshape(groups, nb + 1)

    def apply() -> None:
        for g, key in enumerate(keys):
            if kind == "counter":
                values[key] = values.get(key, 0.0) + float(sums[g])
            elif kind == "gauge":
                values[key] = float(lasts[g])
            else:
                cur = values.get(key)
                if cur is None:
                    cur = values[key] = [0] * len(m.buckets) + [0.0, 0]
                if kind == "histogram":
                    for i, c in enumerate(per_bucket[g, : len(m.buckets)].tolist()):
                        cur[i] += c
                cur[-2] += float(sums[g])
                cur[-1] += int(counts_arr[g])
                if m.windows is not None:
                    win = m.windows.get(key)
                    if win is None:
                        win = m.windows[key] = QuantileWindow(m.max_age)
                    mine = inverse == g if groups > 1 else slice(None)
                    line_ts = [ts] * int(counts_arr[g]) if isinstance(ts, int) else ts[mine].tolist()
                    for t, x in zip(line_ts, xs[mine].tolist(), strict=True):
                        win.add(t, x)
            touched[key] = max(touched.get(key, -1), newest[g])

    return apply


def _le(bound: float) -> str:
    return format_float(bound)
