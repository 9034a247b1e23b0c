"""The log source: derived metrics, formats, timestamps, bad lines, state committed with the samples."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch.config import LogSourceConfig, parse_config
from mlwatch.sources.logfile import LogFileSource, parse_timestamp
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.sources.conftest import FakeClock, Stored


def log_source(tmp_path: Path, extra: str = "", metrics: str = "") -> LogSourceConfig:
    text = f"""
sources:
  - name: preds
    type: log
    path: {tmp_path}/pred*.jsonl
{extra}
    metrics:
      - {{name: preds_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: tokens_total, type: counter, field: usage.tokens}}
      - {{name: queue, type: gauge, field: queue}}
      - {{name: lat_seconds, type: histogram, field: latency_ms, scale: 0.001, buckets: [0.01, 0.1]}}
      - {{name: score, type: summary, field: score}}
{metrics}
"""
    cfg = parse_config(text).sources[0]
    assert isinstance(cfg, LogSourceConfig)
    return cfg


def write_lines(path: Path, docs: list[object]) -> None:
    with open(path, "ab") as f:
        f.writelines(d if isinstance(d, bytes) else orjson.dumps(d) + b"\n" for d in docs)


def test_metrics_from_lines(tmp_path: Path) -> None:
    src = LogFileSource(log_source(tmp_path))
    src.restore(None)
    write_lines(tmp_path / "pred.jsonl", [
        {"model": "a", "usage": {"tokens": 10}, "queue": 3, "latency_ms": 5, "score": 0.5},
        {"model": "b", "usage": {"tokens": 5}, "queue": 7, "latency_ms": 50, "score": 0.25},
        {"model": "a", "usage": {"tokens": 1}, "queue": 1, "latency_ms": 500, "score": 1},
    ])  # fmt: skip
    col = src.collect_sync(1_000_000)
    col.commit()
    got = {(s.key.name, dict(s.key.labels).get("model"), dict(s.key.labels).get("le")): s.value for s in col.samples}
    assert got[("preds_total", "a", None)] == 2 and got[("preds_total", "b", None)] == 1
    assert got[("tokens_total", None, None)] == 16
    assert got[("queue", None, None)] == 1
    assert got[("lat_seconds_bucket", None, "0.01")] == 1
    assert got[("lat_seconds_bucket", None, "0.1")] == 2
    assert got[("lat_seconds_bucket", None, "+Inf")] == 3
    assert math.isclose(got[("lat_seconds_sum", None, None)], 0.555)
    assert got[("score_count", None, None)] == 3 and got[("score_sum", None, None)] == 1.75
    assert got[("mlwatch_log_lines_total", None, None)] == 3
    assert all(s.key.label_dict()["instance"] == f"{tmp_path}/pred*.jsonl" for s in col.samples)
    assert not col.bad


def test_regex_format_and_timestamps(tmp_path: Path) -> None:
    cfg = parse_config(f"""
sources:
  - name: access
    type: log
    path: {tmp_path}/access.log
    format: regex
    pattern: '^(?P<ts>\\S+) (?P<model>\\w+) (?P<ms>\\d+)ms$'
    timestamp: {{field: ts}}
    metrics:
      - {{name: req_total, type: counter, labels: {{model: "m-{{model}}"}}}}
      - {{name: last_ms, type: gauge, field: ms}}
""").sources[0]
    assert isinstance(cfg, LogSourceConfig)
    src = LogFileSource(cfg)
    src.restore(None)
    (tmp_path / "access.log").write_text(
        "2026-01-01T00:00:00Z x 5ms\n2026-01-01T00:00:02+00:00 y 7ms\ngarbage\n1767225605 x 9ms\n2026-01-01T00:00:09 x 1ms\n"
    )
    col = src.collect_sync(5)
    got = {(s.key.name, s.key.label_dict().get("model")): (s.ts, s.value) for s in col.samples}
    t0 = 1767225600000
    assert got[("req_total", "m-x")] == (t0 + 5000, 2)  # stamped with the newest event of the series
    assert got[("req_total", "m-y")] == (t0 + 2000, 1)
    assert got[("last_ms", None)] == (t0 + 5000, 9)
    assert col.bad == {"no_match": 1, "bad_timestamp": 1}  # a naive time has no offset


@pytest.mark.parametrize(
    ("value", "fmt", "ms"),
    [(1700000000, "auto", 1700000000000), (1700000000123, "auto", 1700000000123), ("1700000000.5", "auto", 1700000000500),
     (1700000000, "unix_ms", 1700000000), ("2026-01-01T00:00:00.250Z", "rfc3339", 1767225600250),
     ("2026-01-01T00:00:00Z", "unix", None), ("soon", "auto", None), (True, "auto", None), (float("nan"), "auto", None)],
)  # fmt: skip
def test_parse_timestamp(value: object, fmt: str, ms: int | None) -> None:
    assert parse_timestamp(value, fmt) == ms


def test_bad_lines_are_counted_and_the_next_line_is_read(tmp_path: Path) -> None:
    cfg = log_source(tmp_path, extra="    max_line_bytes: 1KiB")
    src = LogFileSource(cfg)
    src.restore(None)
    write_lines(tmp_path / "pred.jsonl", [
        b"{not json\n", b"[1, 2]\n", b"\xff\xfe{}\n", b'{"model": "a", "queue": "high"}\n', b"x" * 5000 + b"\n",
        b"\x00\x01\x02 binary\n", b'{"model": "a", "usage": {"tokens": -3}}\n', {"model": "ok", "queue": 1},
    ])  # fmt: skip
    col = src.collect_sync(1000)
    assert col.bad["invalid_json"] == 2
    assert col.bad["not_an_object"] == 1
    assert col.bad["invalid_utf8"] == 1
    assert col.bad["line_too_long"] == 1
    assert col.bad["not_a_number"] >= 1 and col.bad["negative"] == 1
    assert any(s.key.name == "preds_total" and s.key.label_dict()["model"] == "ok" for s in col.samples)
    assert col.rejected and len(col.rejected) <= 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=300) | st.text(max_size=200).map(str.encode), max_size=30))
def test_hostile_lines_never_raise(tmp_path: Path, lines: list[bytes]) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    src = LogFileSource(log_source(d))
    src.restore(None)
    good = {"model": "z", "usage": {"tokens": 1}, "queue": 1, "latency_ms": 1, "score": 1}
    body = b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines) + orjson.dumps(good) + b"\n"
    (d / "pred.jsonl").write_bytes(body)
    col = src.collect_sync(1000)
    col.commit()
    assert any(s.key.name == "preds_total" and s.key.label_dict().get("model") == "z" for s in col.samples)
    assert src.lines_total == len(lines) + 1


async def test_counters_continue_across_restarts_through_storage(
    tmp_path: Path, writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    cfg = log_source(tmp_path)
    write_lines(tmp_path / "pred.jsonl", [{"model": "a"}] * 3)
    m1 = SourceManager([cfg], writer, reader, clock=clock)
    await m1.start(None)
    await m1.run_once()
    await m1.stop()
    write_lines(tmp_path / "pred.jsonl", [{"model": "a"}] * 2)
    clock.advance(20)
    m2 = SourceManager([cfg], writer, reader, clock=clock)
    await m2.start(None)
    await m2.run_once()
    await m2.stop()
    values = [v for _, v in stored("preds_total", job="preds", instance=cfg.path, model="a")]
    assert values == [3.0, 5.0]


async def test_storage_failure_rolls_back_and_rereads(tmp_path: Path, reader: Reader, clock: FakeClock) -> None:
    from mlwatch.errors import StorageUnavailable
    from mlwatch.storage.writer import WriteBatch, WriteResult

    class FlakyWriter:
        def __init__(self) -> None:
            self.fail = True
            self.batches: list[WriteBatch] = []

        async def write(self, batch: WriteBatch) -> WriteResult:
            if self.fail:
                raise StorageUnavailable("database is locked")
            self.batches.append(batch)
            return WriteResult(len(batch.samples), 0)

    cfg = log_source(tmp_path)
    write_lines(tmp_path / "pred.jsonl", [{"model": "a"}] * 4)
    w = FlakyWriter()
    m = SourceManager([cfg], w, reader, clock=clock)
    await m.start(None)
    await m.run_once()
    assert m.healths()[0].errors_total["storage"] == 1
    w.fail = False
    clock.advance(1)
    await m.run_once()
    totals = [s.value for b in w.batches for s in b.samples if s.key.name == "preds_total"]
    assert totals == [4.0]  # counted once, after the database came back
    await m.stop()


def test_reservoir_state_survives_a_restart(tmp_path: Path) -> None:
    cfg = log_source(tmp_path, extra="    timestamp: {field: t}\n    sampling: {strategy: reservoir, size: 3, window: 10s}")
    src = LogFileSource(cfg)
    src.restore(None)
    write_lines(tmp_path / "pred.jsonl", [{"model": "a", "t": 1_000 + i} for i in range(8)])
    col = src.collect_sync(0)
    col.commit()
    saved = col.state[src.state_key]
    src2 = LogFileSource(cfg)
    src2.restore(saved)
    write_lines(tmp_path / "pred.jsonl", [{"model": "b", "t": 1_011}])  # the next window: the sample is released
    col2 = src2.collect_sync(0)
    got = {s.key.label_dict().get("model"): s.value for s in col2.samples if s.key.name == "preds_total"}
    assert got == {"a": 3.0}
    assert src2.lines_total == 9
    assert json.loads(saved)["sampler"]["seen"] == 8


def test_event_loop_is_not_blocked(tmp_path: Path) -> None:
    # collect() runs the parsing in a thread: a big chunk does not hold the loop.
    cfg = log_source(tmp_path)
    write_lines(tmp_path / "pred.jsonl", [{"model": "a", "queue": i} for i in range(50_000)])
    src = LogFileSource(cfg)
    src.restore(None)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await src.collect(0)
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 0


_field_values = st.one_of(
    st.integers(-5, 2000), st.floats(-1, 2000, allow_nan=False), st.none(), st.just("12"), st.booleans()
)


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["a", "b", "c"]) | st.integers(0, 2),
    "latency_ms": _field_values, "queue": _field_values, "usage": st.fixed_dictionaries({"tokens": _field_values}),
    "score": _field_values,
}), max_size=40))  # fmt: skip
def test_bulk_chunk_path_equals_the_per_line_path(docs: list[dict[str, object]]) -> None:
    from mlwatch.sources.logfile import LineMetrics
    from mlwatch.sources.sampling import LineEvent

    metrics = [m for m in log_source(Path("/nonexistent")).metrics if m.name != "tokens_total"]  # bulk-capable
    per_line = LineMetrics(metrics, {})
    bulk = LineMetrics(metrics, {})
    for d in docs:
        per_line.feed(LineEvent(dict(d), 5, "p"))
    if not bulk.feed_chunk([dict(d) for d in docs], 5):
        for d in docs:
            bulk.feed(LineEvent(dict(d), 5, "p"))

    def view(m: LineMetrics) -> dict[tuple[str, tuple[str, ...]], object]:
        return {(x.name, k): v for x in m._metrics for k, v in x.values.items()}

    a, b = view(per_line), view(bulk)
    assert a.keys() == b.keys()
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, list):
            assert isinstance(vb, list) and va[:-2] == vb[:-2] and va[-1] == vb[-1] and math.isclose(va[-2], vb[-2], abs_tol=1e-6)
        else:
            assert math.isclose(float(va), float(vb), abs_tol=1e-6), k  # type: ignore[arg-type]
    assert {(x.name, k) for x in per_line._metrics for k in x.touched} == {(x.name, k) for x in bulk._metrics for k in x.touched}
    # summary quantile windows: the same values, in the same order per series, give the same reservoirs
    windows = [[(k, w.to_json()) for k, w in (x.windows or {}).items()] for m in (per_line, bulk) for x in m._metrics]
    assert windows[: len(windows) // 2] == windows[len(windows) // 2 :]


def test_bulk_path_is_taken_for_clean_chunks() -> None:
    import random

    rng = random.Random(5)
    docs = [{"model": rng.choice("ab"), "latency_ms": rng.uniform(0, 300), "queue": rng.randint(0, 9),
             "usage": {"tokens": 3}, "score": rng.random()} for _ in range(500)]  # fmt: skip
    test_bulk_chunk_path_equals_the_per_line_path.hypothesis.inner_test(docs)  # type: ignore[attr-defined]
    from mlwatch.sources.logfile import LineMetrics

    cfg = log_source(Path("/nonexistent"))
    # usage.tokens is a nested path: that metric needs the per-line path, so a chunk is refused whole
    assert not LineMetrics(cfg.metrics, {}).feed_chunk(docs, 0)
    simple = [m for m in cfg.metrics if m.name != "tokens_total"]
    assert LineMetrics(simple, {}).feed_chunk(docs, 0)


def test_snapshot_restore_rolls_histograms_back() -> None:
    """A refused batch restores the state of its snapshot: histogram lists must not be shared."""
    from mlwatch.sources.logfile import LineMetrics
    from mlwatch.sources.sampling import LineEvent

    metrics = log_source(Path("/nonexistent")).metrics
    lm = LineMetrics(metrics, {})
    lm.feed(LineEvent({"model": "a", "latency_ms": 10.0}, 5, "p"))
    committed = lm.snapshot()
    lm.feed(LineEvent({"model": "a", "latency_ms": 20.0}, 6, "p"))
    lm.restore(committed)  # the second line's batch was refused
    lm.feed(LineEvent({"model": "a", "latency_ms": 20.0}, 6, "p"))  # ... and is read again
    counts = [v[-1] for x in lm._metrics if x.kind == "histogram" for v in x.values.values()]
    assert counts and all(c == 2 for c in counts)
