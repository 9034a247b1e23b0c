"""``type: log``: tail files, parse lines (JSONL or regex), sample, and derive metrics per line.

One collection reads up to a byte budget of new complete lines (:class:`~mlwatch.sources.tail.Tailer`),
parses each into fields, takes its time, passes it through the sampler, and gives the sampled lines to
the source's *line operators*: as one :class:`~mlwatch.sources.linechunk.LineChunk` to each operator that
takes a chunk whole (``take_chunk``, vectorised, the chunk's columns extracted once for all of them), else
as one :class:`~mlwatch.sources.sampling.LineEvent` per line (``feed``). An operator that refuses a chunk
(a line it must look at on its own) takes it line by line; the others keep the fast path. The samples of this
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
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import orjson

from mlwatch.config import LogSourceConfig
from mlwatch.model import MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.base import Collection
from mlwatch.sources.fieldpath import FieldPath, to_number
from mlwatch.sources.http import target_labels
from mlwatch.sources.linechunk import LineChunk
from mlwatch.sources.linemetrics import LineMetrics
from mlwatch.sources.sampling import LineEvent, Sampler, make_sampler
from mlwatch.sources.tail import Tailer, TailState

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

    # optional: ``take_chunk(chunk: LineChunk) -> bool`` takes a whole chunk as ``feed`` would line by line,
    # or returns False having changed nothing (the chunk then goes through ``feed``)

    def meta(self) -> dict[str, MetricMeta]: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


_MAX_ABS_MS = 9_223_372_036_854  # seconds of Prometheus' maxTime, here in ms: beyond any storable time


def parse_timestamp(value: Any, fmt: str) -> int | None:
    """Milliseconds since the epoch from a field value, or None when it is not a time in ``fmt`` (or is
    beyond what a sample can carry: such a line is a bad line, not a chunk that can never be stored)."""
    ms = _parse_timestamp(value, fmt)
    return ms if ms is None or -_MAX_ABS_MS * 1000 <= ms <= _MAX_ABS_MS * 1000 else None


def _parse_timestamp(value: Any, fmt: str) -> int | None:
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


# ------------------------------------------------------------------ the source


class LogFileSource:
    """A ``type: log`` source as a target: ``instance`` is the configured path (glob) as written."""

    def __init__(
        self, cfg: LogSourceConfig, operators: Sequence[LineOperator] = (), *, future_tolerance_ms: int = 0
    ) -> None:
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
            positions=cfg.sampling is not None,  # line positions feed sampling hashes (and nothing else)
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
        self.future_tolerance_ms = future_tolerance_ms  # 0: event times are not bounded
        self._future_limit_ms = 2**62  # event times beyond this are refused; set from the clock at each read
        self.lost_bytes_total = 0  # copytruncate's own loss, committed with the offsets (tail.py)
        self.lost_lines_total = 0

    # ---------------------------------------------------------------- state
    def _snapshot(self) -> dict[str, Any]:
        return {
            "tail": self.tailer.state.to_json(),
            "ops": {op.name: op.snapshot() for op in self.operators},
            "sampler": self.sampler.snapshot() if self.sampler else None,
            "lines": self.lines_total,
            "sampled": self.sampled_total,
            "newest_ts": self._newest_ts,
            "lost_bytes": self.lost_bytes_total,
            "lost_lines": self.lost_lines_total,
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
        self.lost_bytes_total = int(doc.get("lost_bytes", 0))
        self.lost_lines_total = int(doc.get("lost_lines", 0))

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

    def _parse_lines(
        self, lines: list[tuple[bytes, str]], bad: Any, rejected: list[str]
    ) -> tuple[list[dict[str, Any]], list[int], list[int] | None]:
        """The chunk's lines parsed: the good lines' fields, their indices in ``lines``, and their event
        times (None: no ``timestamp``, every line is at ``now_ms``). Bad lines are counted in ``bad``."""
        ts_field, ts_format = self._ts_field, self._ts_format
        if self._pattern is None and lines:
            loads = orjson.loads
            try:  # the common case: every line a JSON object, parsed in one comprehension
                docs = [loads(raw) for raw, _ in lines]
            except orjson.JSONDecodeError:
                docs = None
            if docs is not None and set(map(type, docs)) == {dict}:  # every line an object (C speed)
                index = list(range(len(docs)))
                if ts_field is None:
                    return docs, index, None
                return self._event_times(lines, docs, index, ts_field, ts_format, bad, rejected)
        parse = self._parse
        docs, index = [], []
        for i, (raw, _pos) in enumerate(lines):
            fields, reason = parse(raw)
            if fields is None:
                _reject(bad, rejected, reason or "invalid", raw)
                continue
            docs.append(fields)
            index.append(i)
        if ts_field is None:
            return docs, index, None
        return self._event_times(lines, docs, index, ts_field, ts_format, bad, rejected)

    def _event_times(
        self, lines: list[tuple[bytes, str]], docs: list[dict[str, Any]], index: list[int], ts_field: FieldPath,
        ts_format: str, bad: Any, rejected: list[str],
    ) -> tuple[list[dict[str, Any]], list[int], list[int]]:  # fmt: skip
        out_docs, out_index, times = [], [], []
        for fields, i in zip(docs, index, strict=True):
            parsed = parse_timestamp(ts_field.get(fields), ts_format)
            if parsed is None:
                _reject(bad, rejected, "bad_timestamp", lines[i][0])
                continue
            if parsed > self._future_limit_ms:  # would poison its series (CONTRACT §7): skipped and counted
                _reject(bad, rejected, "future_timestamp", lines[i][0])
                continue
            out_docs.append(fields)
            out_index.append(i)
            times.append(parsed)
        if times:
            self._newest_ts = max(self._newest_ts, max(times))
        return out_docs, out_index, times

    def collect_sync(self, now_ms: int) -> Collection:
        before = self._snapshot()
        result = self.tailer.read()
        bad = result.bad
        rejected = list(result.rejected)
        sampler = self.sampler
        operators = self.operators
        lines = result.lines
        if self.future_tolerance_ms:
            self._future_limit_ms = now_ms + self.future_tolerance_ms
        docs, index, times = self._parse_lines(lines, bad, rejected)
        # operators may also watch every line before sampling (``observe``), e.g. to weight a stratified sample
        observers = [obs for op in operators if (obs := getattr(op, "observe", None)) is not None]
        raws: Sequence[bytes] = _Raws(lines, index)  # a line's text, for the first few rejections only
        if sampler is not None or observers:
            kept_docs, kept_times, kept_raws = [], [], []
            for k, (fields, i) in enumerate(zip(docs, index, strict=True)):
                event = LineEvent(fields, times[k] if times is not None else now_ms, lines[i][1])
                for observe in observers:
                    observe(event)
                for ev in sampler.offer(event) if sampler is not None else (event,):
                    kept_docs.append(ev.fields)
                    kept_times.append(ev.ts_ms)
                    kept_raws.append(lines[i][0])
            docs, raws = kept_docs, kept_raws
            chunk = LineChunk(docs, np.asarray(kept_times, dtype=np.int64) if times is not None else now_ms)
        else:
            chunk = LineChunk(docs, np.asarray(times, dtype=np.int64) if times is not None else now_ms)
        sampled = len(docs)
        # Each operator takes the chunk whole (vectorised, columns shared through the chunk) when it can,
        # else line by line; operators are independent, so one falling back does not slow the others.
        only_metrics = sampler is None and len(operators) == 1 and isinstance(operators[0], LineMetrics)
        for op in operators:
            take = getattr(op, "take_chunk", None)
            if not docs or (take is not None and take(chunk)):
                continue
            if only_metrics:  # no sampling, only the config's metrics: every feeder's complaint counts
                assert isinstance(op, LineMetrics)
                feeders = op.feeders
                for k, fields in enumerate(docs):
                    ts = times[k] if times is not None else now_ms
                    for feeder in feeders:
                        r = feeder(fields, ts)
                        if r is not None:
                            _reject(bad, rejected, r, raws[k])
                continue
            feed = op.feed
            ts_of = chunk.ts
            for k, fields in enumerate(docs):
                r = feed(LineEvent(fields, ts_of if isinstance(ts_of, int) else int(ts_of[k]), ""))
                if r is not None:
                    _reject(bad, rejected, r, raws[k])
        self.lines_total += len(result.lines)
        self.lost_bytes_total += result.lost_bytes
        self.lost_lines_total += result.lost_lines
        self.sampled_total += sampled
        if sampler is not None:
            for ev in sampler.flush(self._newest_ts if self._ts_field is not None else now_ms):
                self.sampled_total += 1
                for op in operators:
                    r = op.feed(ev)
                    if r is not None:
                        bad[r] += 1
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
            lost=(self.lost_bytes_total, self.lost_lines_total),
            # a file that cannot be read makes the source down (what could be read is still stored)
            error="; ".join(m for _, m in result.problems[:3]) or None,
            reason=result.problems[0][0] if result.problems else None,
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


class _Raws(Sequence[bytes]):
    """The text of the k-th parsed line, looked up only when a line is rejected."""

    __slots__ = ("_index", "_lines")

    def __init__(self, lines: list[tuple[bytes, str]], index: list[int]) -> None:
        self._lines, self._index = lines, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: Any) -> Any:
        return self._lines[self._index[k]][0]


def _reject(bad: Any, rejected: list[str], reason: str, raw: bytes) -> None:
    """Count a line that was bad (for one reason), and keep the first few for the source's health."""
    bad[reason] += 1
    if len(rejected) < MAX_REJECTED_PER_CHUNK:
        rejected.append(f"{reason}: {raw[:300].decode('utf-8', 'replace')}")
