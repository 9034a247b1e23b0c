"""Hostile protobuf-delimited and gzip push bodies: families or a ParseError naming the message, with
bounded memory (a gzip bomb stops at the limit)."""

from __future__ import annotations

import gzip
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlwatch.errors import ParseError
from mlwatch.model import LABEL_NAME_RE, METRIC_NAME_RE
from mlwatch.sources.protoparse import BodyTooLarge, encode_delimited, gunzip_bounded, messages, parse_protobuf

MF = messages["MetricFamily"]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(st.sampled_from(["m", "m_total", "a:b", "", "1x", "m\n", "é", "le", "quantile"]), st.text(max_size=8))
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def families(draw: st.DrawFn) -> Any:
    mf = MF(name=draw(names), type=draw(st.integers(0, 5)))  # 5: gauge histogram, which mlwatch refuses
    if draw(st.booleans()):
        mf.help = draw(st.text(max_size=10))
    for _ in range(draw(st.integers(0, 3))):
        m = mf.metric.add()
        for _ in range(draw(st.integers(0, 3))):
            lp = m.label.add()
            lp.name, lp.value = draw(names), draw(st.text(max_size=6))
        kind = draw(st.sampled_from(["gauge", "counter", "untyped", "summary", "histogram", "none"]))
        if kind in ("gauge", "counter", "untyped"):
            getattr(m, kind).value = draw(floats)
        elif kind == "summary":
            m.summary.sample_count = draw(st.integers(0, 2**64 - 1))
            m.summary.sample_sum = draw(floats)
            for _ in range(draw(st.integers(0, 3))):
                q = m.summary.quantile.add()
                q.quantile, q.value = draw(floats), draw(floats)
        elif kind == "histogram":
            m.histogram.sample_count = draw(st.integers(0, 2**64 - 1))
            for _ in range(draw(st.integers(0, 3))):
                b = m.histogram.bucket.add()
                b.upper_bound, b.cumulative_count = draw(floats), draw(st.integers(0, 2**64 - 1))
        if draw(st.booleans()):
            m.timestamp_ms = draw(st.integers(-(2**63), 2**63 - 1))
    return mf


def parse_or_refuse(body: bytes) -> None:
    try:
        fams = parse_protobuf(body)
    except ParseError as exc:
        assert exc.message.strip()
        return
    for fam in fams:
        for s in fam.samples:
            assert isinstance(s.value, float) and all(isinstance(v, str) for v in s.labels.values())


@FAST
@given(st.binary(max_size=400))
@example(b"\xff" * 11)  # an over-long varint
@example(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # a message claiming 2**64 bytes
def test_random_bytes(body: bytes) -> None:
    parse_or_refuse(body)


@FAST
@given(st.lists(families(), max_size=3), st.data())
def test_mutated_messages(fams: list[Any], data: st.DataObject) -> None:
    body = bytearray(encode_delimited(fams))
    parse_or_refuse(bytes(body))  # valid encodings of odd content
    for _ in range(data.draw(st.integers(1, 4))):
        if not body:
            break
        at = data.draw(st.integers(0, len(body) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            body[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del body[at:]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    parse_or_refuse(bytes(body))


def test_deeply_nested_unknown_groups_are_refused_not_recursed() -> None:
    nest = b"\x7b" * 100_000 + b"\x7c" * 100_000  # field 15 as start-group/end-group, 100k deep
    body = encode_varint(len(nest)) + nest
    with pytest.raises(ParseError, match="message 1: invalid protobuf"):
        parse_protobuf(body)


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


BOMBS = {"zeros": b"\0" * (200 << 20), "lines": b"a 1\n" * (10 << 20)}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_gzip_bomb_stops_at_the_limit(kind: str) -> None:
    # Built in the test, not at collection: each xdist worker must collect the same ids, and gzip stamps the time.
    ratio_body = gzip.compress(BOMBS[kind], mtime=0)
    limit = 10 << 20
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BodyTooLarge, match=f"larger than {limit} bytes after decompression"):
            gunzip_bounded(ratio_body, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, peak
    assert time.perf_counter() - started < 10


def test_gzip_members_and_garbage() -> None:
    assert gunzip_bounded(gzip.compress(b"a 1\n") + gzip.compress(b"b 2\n"), 100) == b"a 1\nb 2\n"  # as Go reads
    with pytest.raises(ParseError, match="trailing data"):
        gunzip_bounded(gzip.compress(b"a 1\n") + b"junk", 100)
    with pytest.raises(ParseError, match="truncated"):
        gunzip_bounded(gzip.compress(b"a 1\n")[:-3], 100)
    with pytest.raises(BodyTooLarge):  # the second member is what crosses the limit
        gunzip_bounded(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), 100)


def test_name_checks_do_not_accept_a_trailing_newline() -> None:
    """A protobuf push named "evil\\n" was accepted ('$' matches before a final newline) and broke /metrics
    for every scraper of mlwatch."""
    assert not METRIC_NAME_RE.match("evil\n") and not LABEL_NAME_RE.match("job\n")
    assert METRIC_NAME_RE.match("ok:name_1") and LABEL_NAME_RE.match("_ok1")
