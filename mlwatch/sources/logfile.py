"""``type: log``: tail files, parse lines (JSONL or regex), sample, and derive metrics per line.

One collection reads up to a byte budget of new complete lines (:class:`~mlwatch.sources.tail.Tailer`),
parses each into fields, takes its time, passes it through the sampler, and feeds every sampled
:class:`~mlwatch.sources.sampling.LineEvent` to the source's *line operators*. The samples of this
chunk, the new offsets and every operator's state go into ONE write batch; in-memory state becomes
current only when that batch commits (``Collection.commit``), otherwise it is rolled back and the
same lines are read again. So after ``kill -9`` and a restart every line counts exactly once.

Line operators (:class:`LineOperator`) are the hook for per-line consumers: :class:`LineMetrics`
(counters, gauges, histograms, summaries from the config's ``metrics``) is one; the ML-metrics
issue adds classification/regression windows that read ``(prediction, label, key)`` from the same
events, passed to :class:`LogFileSource` as ``operators``.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import orjson

from mlwatch.config import LogSourceConfig
from mlwatch.config.parts import DEFAULT_BUCKETS, LogMetricConfig, template_fields
from mlwatch.model import MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.base import Collection
from mlwatch.sources.fieldpath import MISSING, FieldPath, to_number
from mlwatch.sources.http import target_labels
from mlwatch.sources.sampling import LineEvent, Sampler, make_sampler
from mlwatch.sources.tail import Tailer, TailState
from mlwatch.sources.textparse import format_float

__all__ = ["LineMetrics", "LineOperator", "LogFileSource", "parse_timestamp"]

LINES_TOTAL = "mlwatch_log_lines_total"
SAMPLED_TOTAL = "mlwatch_log_sampled_lines_total"
FULL_REFRESH_MS = 15_000  # every series is written at least this often, so none goes stale between lines
MAX_REJECTED_PER_CHUNK = 5
READ_BYTES = 8 << 20  # per chunk: each chunk's samples and offsets commit together (one fsync per chunk)


class LineOperator(Protocol):
    """A consumer of sampled line events whose state is committed with the offsets."""

    name: str  # unique within the source; the key of its state

    def feed(self, event: LineEvent) -> str | None:
        """Consume one event; return a reason word when the line is bad for this operator (counted)."""
        ...

    def samples(self, now_ms: int, full: bool) -> list[Sample]:
        """Samples to store now: every series when ``full``, else those changed since the last call."""
        ...

    def meta(self) -> dict[str, MetricMeta]: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


def parse_timestamp(value: Any, fmt: str) -> int | None:
    """Milliseconds since the epoch from a field value, or None when it is not a time in ``fmt``."""
    if isinstance(value, bool):
        return None
    if fmt in ("auto", "unix", "unix_ms"):
        number = to_number(value) if not isinstance(value, str) or fmt != "auto" else _maybe_number(value)
        if number is not None:
            if not math.isfinite(number):
                return None
            if fmt == "unix_ms" or (fmt == "auto" and abs(number) >= 1e11):
                return int(number)
            return round(number * 1000)
        if fmt != "auto":
            return None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None  # RFC 3339 needs an offset; a naive time is ambiguous
        return round(dt.timestamp() * 1000)
    return None


def _maybe_number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# ------------------------------------------------------------------ derived metrics


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
    __slots__ = ("buckets", "cfg", "field", "kind", "label_names", "name", "scale", "templates", "touched", "values")

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
        if not docs:
            return True
        plans = []
        for m in self._metrics:
            plan = _chunk_plan(m, docs, ts)
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
                out.append(Sample(SeriesKey.of(m.name + "_sum", labels), ts, float(value[-2])))
                out.append(Sample(SeriesKey.of(m.name + "_count", labels), ts, float(value[-1])))
            m.touched.clear()
        return out

    def meta(self) -> dict[str, MetricMeta]:
        return {m.name: MetricMeta(MetricType(m.kind), m.cfg.help) for m in self._metrics}

    def snapshot(self) -> Any:
        return [[m.name, m.kind, list(m.label_names), [[list(k), v] for k, v in m.values.items()]] for m in self._metrics]

    def restore(self, state: Any) -> None:
        by_name = {(name, kind, tuple(labels)): values for name, kind, labels, values in state or []}
        for m in self._metrics:
            values = by_name.get((m.name, m.kind, m.label_names))
            m.values.clear()  # in place: the feeders hold these dicts
            m.touched.clear()
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
        if ts > touched.get(key, -1):
            touched[key] = ts
        return None

    return observe


def _simple(path: FieldPath | None) -> str | None:
    return path.parts[0] if path is not None and len(path.parts) == 1 and isinstance(path.parts[0], str) else None


def _chunk_plan(m: _Metric, docs: list[dict[str, Any]], ts: int) -> Callable[[], None] | None:
    """How ``m`` takes a chunk of lines in bulk (applied by calling the result), or None when any line of
    the chunk needs the per-line path. Nothing is changed until the plan is applied."""
    if len(m.templates) > 1 or (m.templates and m.templates[0].single is None):
        return None
    label_field = _simple(m.templates[0].single) if m.templates else None
    if m.templates and label_field is None:
        return None
    if label_field is not None:
        labs = [d.get(label_field) for d in docs]
        if not all(type(v) is str for v in labs):
            return None
    else:
        labs = []
    values, touched, scale, kind = m.values, m.touched, m.scale, m.kind
    if m.field is None:  # count lines per key
        counts = collections.Counter(labs) if label_field is not None else {"": len(docs)}

        def apply_count() -> None:
            for lab, n in counts.items():
                key: tuple[str, ...] = (str(lab),) if label_field is not None else ()
                values[key] = values.get(key, 0.0) + n * scale
                touched[key] = max(touched.get(key, -1), ts)

        return apply_count
    value_field = _simple(m.field)
    if value_field is None:
        return None
    raw = [d.get(value_field) for d in docs]
    if not all(type(v) is float or type(v) is int for v in raw):
        return None
    xs = np.asarray(raw, dtype=np.float64)
    if scale != 1.0:
        xs = xs * scale
    if np.isnan(xs).any() or (kind == "counter" and (xs < 0).any()):
        return None
    keys: list[tuple[str, ...]]
    if label_field is not None:
        uniq, inverse = np.unique(np.asarray(labs, dtype=object), return_inverse=True)
        keys = [(str(u),) for u in uniq.tolist()]
    else:
        inverse = np.zeros(len(xs), dtype=np.intp)
        keys = [()]
    groups = len(keys)
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
                    for i in range(len(m.buckets)):
                        cur[i] += int(per_bucket[g, i])
                cur[-2] += float(sums[g])
                cur[-1] += int(counts_arr[g])
            touched[key] = max(touched.get(key, -1), ts)

    return apply


def _le(bound: float) -> str:
    return format_float(bound)


# ------------------------------------------------------------------ the source


class LogFileSource:
    """A ``type: log`` source as a target: ``instance`` is the configured path (glob) as written."""

    def __init__(self, cfg: LogSourceConfig, operators: Sequence[LineOperator] = ()) -> None:
        self.cfg = cfg
        self.job = cfg.name
        self.instance = cfg.path
        self.scrape_url = "file://" + cfg.path
        self.labels = target_labels(cfg.name, cfg.path, cfg.labels)
        self.interval_ms = cfg.interval
        self.timeout_ms = cfg.timeout
        self.state_key = f"log/{cfg.name}"
        self.tailer = Tailer(
            cfg.path, start_at_end=cfg.start_at == "end", max_line_bytes=cfg.max_line_bytes, read_bytes=READ_BYTES,
            positions=cfg.sampling is not None or bool(operators),  # line positions feed sampling hashes
        )  # fmt: skip
        self.operators: list[LineOperator] = [LineMetrics(cfg.metrics, self.labels), *operators]
        self.sampler: Sampler | None = make_sampler(cfg.sampling) if cfg.sampling else None
        self._pattern = re.compile(cfg.pattern) if cfg.format == "regex" and cfg.pattern else None
        self._ts_field = FieldPath(cfg.timestamp.field) if cfg.timestamp else None
        self._ts_format = cfg.timestamp.format if cfg.timestamp else "auto"
        self.lines_total = 0
        self.sampled_total = 0
        self._last_full_ms = 0
        self._newest_ts = 0

    # ---------------------------------------------------------------- state
    def _snapshot(self) -> dict[str, Any]:
        return {
            "tail": self.tailer.state.to_json(),
            "ops": {op.name: op.snapshot() for op in self.operators},
            "sampler": self.sampler.snapshot() if self.sampler else None,
            "lines": self.lines_total,
            "sampled": self.sampled_total,
            "newest_ts": self._newest_ts,
        }

    def restore(self, raw: bytes | None) -> None:
        """Continue from the state committed last time (None: a first start)."""
        doc = orjson.loads(raw) if raw else {}
        self._apply(doc)

    def _apply(self, doc: dict[str, Any]) -> None:
        self.tailer.restore(TailState.from_json(doc.get("tail")))
        ops = doc.get("ops") or {}
        for op in self.operators:
            op.restore(ops.get(op.name))
        if self.sampler is not None:
            self.sampler.restore(doc.get("sampler"))
        self.lines_total = int(doc.get("lines", 0))
        self.sampled_total = int(doc.get("sampled", 0))
        self._newest_ts = int(doc.get("newest_ts", 0))

    def removed(self, now_ms: int) -> list[Sample]:
        return []  # log-derived series do not go stale

    async def close(self) -> None:
        self.tailer.close()

    # ---------------------------------------------------------------- one chunk
    def _parse(self, raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
        if self._pattern is None:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return None, "invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"
            if not isinstance(doc, dict):
                return None, "not_an_object"
            return doc, None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid_utf8"
        m = self._pattern.search(text)
        if m is None:
            return None, "no_match"
        return m.groupdict(), None

    async def collect(self, now_ms: int) -> Collection:
        # Parsing a chunk of lines takes a while: off the event loop, so scrapes keep their schedule.
        return await asyncio.to_thread(self.collect_sync, now_ms)

    def collect_sync(self, now_ms: int) -> Collection:
        before = self._snapshot()
        result = self.tailer.read()
        bad = result.bad
        rejected = list(result.rejected)
        sampler = self.sampler
        operators = self.operators
        ts_field, ts_format = self._ts_field, self._ts_format
        parse = self._parse
        newest = self._newest_ts
        feeds = [op.feed for op in operators]
        # operators may also watch every line before sampling (``observe``), e.g. to weight a stratified sample
        observers = [obs for op in operators if (obs := getattr(op, "observe", None)) is not None]
        only_metrics = sampler is None and len(operators) == 1 and isinstance(operators[0], LineMetrics)
        direct = operators[0].feeders if only_metrics else None  # type: ignore[attr-defined]
        jsonl = self._pattern is None
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        sampled = 0
        reason: str | None
        lines = result.lines
        if direct is not None and jsonl and ts_field is None and lines:
            # Bulk path: parse every line, then apply the chunk to the metrics vectorised. Any line that
            # needs attention (bad JSON, a missing field...) sends the whole chunk down the per-line path.
            try:
                docs = [loads(raw) for raw, _ in lines]
            except decode_error:
                docs = None
            metrics = operators[0]
            assert isinstance(metrics, LineMetrics)
            if docs is not None and all(type(d) is dict for d in docs) and metrics.feed_chunk(docs, now_ms):
                sampled, lines = len(lines), []
        for raw, pos in lines:
            if jsonl:  # inlined: this loop is the hot path of a log source
                try:
                    fields = loads(raw)
                except decode_error as exc:
                    fields, reason = None, "invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"
                else:
                    if type(fields) is not dict:
                        fields, reason = None, "not_an_object"
            else:
                fields, reason = parse(raw)
            if fields is None:
                bad[reason or "invalid"] += 1
                if len(rejected) < MAX_REJECTED_PER_CHUNK:
                    rejected.append(f"{reason}: {raw[:300].decode('utf-8', 'replace')}")
                continue
            ts = now_ms
            if ts_field is not None:
                parsed = parse_timestamp(ts_field.get(fields), ts_format)
                if parsed is None:
                    bad["bad_timestamp"] += 1
                    if len(rejected) < MAX_REJECTED_PER_CHUNK:
                        rejected.append(f"bad_timestamp: {raw[:300].decode('utf-8', 'replace')}")
                    continue
                ts = parsed
                newest = max(newest, ts)
            if direct is not None:  # no sampling, only the config's metrics: skip the event object
                sampled += 1
                for feeder in direct:
                    r = feeder(fields, ts)
                    if r is not None:
                        bad[r] += 1
                        if len(rejected) < MAX_REJECTED_PER_CHUNK:
                            rejected.append(f"{r}: {raw[:300].decode('utf-8', 'replace')}")
                continue
            event = LineEvent(fields, ts, pos)
            for observe in observers:
                observe(event)
            events = sampler.offer(event) if sampler is not None else (event,)
            for ev in events:
                sampled += 1
                for feed in feeds:
                    r = feed(ev)
                    if r is not None:
                        bad[r] += 1
                        if len(rejected) < MAX_REJECTED_PER_CHUNK:
                            rejected.append(f"{r}: {raw[:300].decode('utf-8', 'replace')}")
        self.lines_total += len(result.lines)
        self.sampled_total += sampled
        if sampler is not None:
            for ev in sampler.flush(newest if ts_field is not None else now_ms):
                self.sampled_total += 1
                for op in operators:
                    r = op.feed(ev)
                    if r is not None:
                        bad[r] += 1
        self._newest_ts = newest
        samples = self._samples(now_ms, bool(result.lines))
        meta: dict[str, MetricMeta] = {LINES_TOTAL: MetricMeta(MetricType.COUNTER, "Lines read from the log source."),
                                       SAMPLED_TOTAL: MetricMeta(MetricType.COUNTER, "Lines that passed sampling.")}  # fmt: skip
        for op in operators:
            meta.update(op.meta())
        new_tail = result.state
        state = self._snapshot()
        state["tail"] = new_tail.to_json()
        collection = Collection(
            samples=samples,
            meta=meta,
            state={self.state_key: orjson.dumps(state)},
            scraped=len(result.lines),
            kept=len(samples),
            bad=bad,
            rejected=rejected,
            more=result.more,
            buffer_on_failure=False,
        )
        collection.commit = lambda: self.tailer.commit(new_tail)
        collection.abort = lambda: self._apply(before)
        return collection

    def _samples(self, now_ms: int, read_any: bool) -> list[Sample]:
        full = now_ms - self._last_full_ms >= FULL_REFRESH_MS
        if full:
            self._last_full_ms = now_ms
        with_event_time = self._ts_field is not None
        ts = -1 if with_event_time else now_ms
        out: list[Sample] = []
        for op in self.operators:
            out += op.samples(ts, full and not with_event_time)
        if read_any or full:
            stamp = (self._newest_ts or now_ms) if with_event_time else now_ms
            out.append(Sample(SeriesKey.of(LINES_TOTAL, self.labels), stamp, float(self.lines_total)))
            out.append(Sample(SeriesKey.of(SAMPLED_TOTAL, self.labels), stamp, float(self.sampled_total)))
        return out
