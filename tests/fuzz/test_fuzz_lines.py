"""Hostile log lines (JSONL and regex) through a real log source over a real file, and hostile JSON documents
and field paths: every line is read, bad ones are counted by reason, and the source never raises."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlwatch.config import parse_config
from mlwatch.config.parts import parse_path
from mlwatch.config.sources import LogSourceConfig
from mlwatch.model import LABEL_NAME_RE, METRIC_NAME_RE
from mlwatch.sources.fieldpath import MISSING, FieldPath, to_number
from mlwatch.sources.logfile import LogFileSource

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8), st.sampled_from(["NaN", "-Inf", "1e400", "0x10", " 5 ", "", "1_0"])),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=4), kids, max_size=3)),
    max_leaves=12,
)  # fmt: skip
KEYS = ["model", "lat", "x", "a", "b", "y"]
# Timestamps within int64 milliseconds (beyond: test_a_timestamp_beyond_int64_is_a_bad_line)
times = st.one_of(st.floats(-1e15, 1e15), st.integers(-(10**15), 10**15), json_values.filter(lambda v: not isinstance(
    v, int | float)), st.sampled_from(["2020-13-01T00:00:00Z", "2024-01-01T00:00:00+00:00", "2024-01-01", "now"]))
line_docs = st.builds(lambda d, ts: {**d, "ts": ts} if ts is not None else d,
                      st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6), st.none() | times)
raw_lines = st.one_of(
    line_docs.map(lambda d: json.dumps(d).encode()),  # stdlib json: integers beyond 64 bits too
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"{", b"[]", b"1", b'"s"', b"null", b"\xff\xfe", b'{"lat": NaN}', b'{"lat": 1e999}',
                     b'{"model": "' + b"m" * 5000 + b'", "lat": 1}', b'{"a": {"b": [' + b"[" * 600 + b"]" * 600 + b"]}}",
                     b"model=x lat=1.5", b"model= lat=", b"\x00\x00", b" " * 100]),
)  # fmt: skip

JSONL = """
    format: jsonl
    timestamp: {field: ts}
"""
REGEX = """
    format: regex
    pattern: '(?P<model>[^ =]*)=?(?P<lat>\\S*)(?: (?P<x>.*))?'
"""


def make_source(tmp_path: Path, fmt: str) -> tuple[LogFileSource, Path]:
    log = tmp_path / "app.log"
    text = f"""
sources:
  - name: lines
    type: log
    path: {log}
{fmt}
    metrics:
      - {{name: lines_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: lat_seconds, type: histogram, field: lat, scale: 0.001, buckets: [0.1, 1], labels: {{m: "{{model}}"}}}}
      - {{name: lat_summary, type: summary, field: lat}}
      - {{name: x_gauge, type: gauge, field: x, labels: {{combo: "{{model}}-{{a.b[0]}}"}}}}
"""
    cfg = parse_config(text, "f.yaml", {})
    src_cfg = cfg.sources[0]
    assert isinstance(src_cfg, LogSourceConfig)
    return LogFileSource(src_cfg), log


def feed(source: LogFileSource, log: Path, lines: list[bytes], now_ms: int) -> None:
    with log.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    before = source.lines_total
    collection = source.collect_sync(now_ms)
    collection.commit()
    assert source.lines_total - before == len(lines)
    assert all(isinstance(reason, str) and n > 0 for reason, n in collection.bad.items())
    for sample in collection.samples:
        assert METRIC_NAME_RE.match(sample.key.name), sample.key
        assert all(LABEL_NAME_RE.match(k) and isinstance(v, str) for k, v in sample.key.labels), sample.key
        assert isinstance(sample.value, float)
    assert all(len(r) < 400 for r in collection.rejected)  # a kept sample of a bad line is bounded


@pytest.mark.parametrize("fmt", [JSONL, REGEX], ids=["jsonl", "regex"])
def test_any_lines(tmp_path: Path, fmt: str) -> None:
    source, log = make_source(tmp_path, fmt)  # one long-lived source: its state carries across examples
    clock = [0]

    @FAST
    @given(st.lists(raw_lines, max_size=8), st.integers(0, 2**40))
    @example([b'{"ts": 1e15, "lat": 1}', b'{"ts": "2020-13-01T00:00:00Z"}', b'{"ts": -1e12, "model": 1}'], 0)
    @example([b'{"model": {"x": [1, 2]}, "lat": "12", "x": true, "a": {"b": [NaN]}}'], 1)
    def run(lines: list[bytes], now_ms: int) -> None:
        clock[0] += 1000
        feed(source, log, lines, now_ms + clock[0])
        feed(source, log, lines[::-1], now_ms + clock[0] + 500)

    try:
        run()
    finally:
        source.tailer.close()


def test_a_timestamp_beyond_int64_is_a_bad_line(tmp_path: Path) -> None:
    """A time no sample can carry (numpy's int64 overflowed on -1e20 ms, so the chunk could never be
    committed and the source stopped there for good) is a bad line; the lines after it are read."""
    source, log = make_source(tmp_path, JSONL)
    lines = [b'{"ts": 1e300, "lat": 1}', b'{"ts": -1e20, "lat": 1}', b'{"ts": 1700000000, "lat": 2}']
    with log.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    collection = source.collect_sync(1_700_000_000_000)
    collection.commit()
    assert collection.bad["bad_timestamp"] == 2, collection.bad  # (missing_field: the lines have no x)
    assert any(s.key.name == "lat_summary_count" and s.value == 1.0 for s in collection.samples)  # the good line
    feed(source, log, [b'{"ts": 1700000001, "lat": 3}'], 1_700_000_001_000)  # the next lines are read normally
    source.tailer.close()


# ---------------------------------------------------------------- field paths and JSON documents

path_text = st.one_of(
    st.lists(st.sampled_from(["a", "b", ".", "[", "]", "0", "12", "[0]", "[-1]", "..", "é", " ", "*", "9" * 30]),
             max_size=8).map("".join),
    st.text(max_size=12),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(path_text, json_values)
@example("a[" + "9" * 5000 + "]", {"a": [1]})  # an index beyond int()'s digit limit
@example("models[0].metrics.accuracy", {"models": [{"metrics": {"accuracy": 0.9}}]})
def test_field_paths_and_documents(text: str, doc: Any) -> None:
    try:
        parts = parse_path(text)
    except ValueError as exc:
        assert "path" in str(exc) or "empty" in str(exc), exc
        return
    value = FieldPath(text).get(doc)
    if value is not MISSING:
        got = to_number(value)
        assert got is None or isinstance(got, float)
    assert all(isinstance(p, int | str) for p in parts)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e400", "\u0661", "1_000", " 1 "])))
def test_to_number(value: Any) -> None:
    got = to_number(value)
    if got is None:
        return
    assert isinstance(got, float)
    if isinstance(value, str) and math.isnan(got):
        assert value.strip().lower() in ("nan", "+nan", "-nan")


def test_a_json_document_of_any_depth_is_read_without_recursion() -> None:
    doc = orjson.loads(b"[" * 1000 + b"1" + b"]" * 1000)  # orjson's own depth limit is 1024
    path = "".join(["[0]"] * 1000)
    assert FieldPath(path).get(doc) == 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"[" * 100_000 + b"]" * 100_000)
    assert json.dumps(FieldPath("a.b").get({"a": {"b": {"c": [1]}}})) == '{"c": [1]}'
