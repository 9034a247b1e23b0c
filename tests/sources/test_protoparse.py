"""Protobuf-delimited bodies (client_golang's push format) and gzip with a decompression bound."""

from __future__ import annotations

import gzip
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatch.errors import ParseError
from mlwatch.model import MetricType
from mlwatch.server.exposition import render
from mlwatch.sources.protoparse import (
    PROTOBUF_CONTENT_TYPE,
    BodyTooLarge,
    encode_delimited,
    gunzip_bounded,
    is_protobuf,
    messages,
    parse_protobuf,
)
from mlwatch.sources.push import normalise
from mlwatch.sources.textparse import parse_text

MF = messages["MetricFamily"]


def family(name: str, typ: int, help: str | None = None) -> Any:
    mf = MF(name=name, type=typ)
    if help is not None:
        mf.help = help
    return mf


def example_families() -> list[Any]:
    c = family("requests_total", 0, "Requests.")
    m = c.metric.add()
    m.label.add(name="code", value="200")
    m.counter.value = 7
    g = family("temp", 1)
    m = g.metric.add()
    m.gauge.value = -1.5
    m = g.metric.add()
    m.label.add(name="room", value='a"b\\c\nd')
    m.gauge.value = math.inf
    s = family("lat", 2, "Latency.")
    m = s.metric.add()
    m.summary.sample_count = 4
    m.summary.sample_sum = 10
    for q, v in ((0.5, 2.0), (0.99, 2.5)):
        qq = m.summary.quantile.add()
        qq.quantile, qq.value = q, v
    u = family("u", 3)
    u.metric.add().untyped.value = 3
    h = family("h", 4)
    m = h.metric.add()
    m.label.add(name="a", value="b")
    m.histogram.sample_count = 3
    m.histogram.sample_sum = 4.5
    for ub, n in ((0.5, 1), (1.0, 2)):
        b = m.histogram.bucket.add()
        b.upper_bound, b.cumulative_count = ub, n
    return [c, g, s, u, h]


def test_round_trip_all_types() -> None:
    fams = parse_protobuf(encode_delimited(example_families()))
    got = [(f.name, f.type, f.help, [(s.name, s.labels, s.value) for s in f.samples]) for f in fams]
    assert got == [
        ("requests_total", MetricType.COUNTER, "Requests.", [("requests_total", {"code": "200"}, 7.0)]),
        ("temp", MetricType.GAUGE, None, [("temp", {}, -1.5), ("temp", {"room": 'a"b\\c\nd'}, math.inf)]),
        ("lat", MetricType.SUMMARY, "Latency.", [
            ("lat", {"quantile": "0.5"}, 2.0), ("lat", {"quantile": "0.99"}, 2.5),
            ("lat_sum", {}, 10.0), ("lat_count", {}, 4.0),
        ]),
        ("u", MetricType.UNTYPED, None, [("u", {}, 3.0)]),
        ("h", MetricType.HISTOGRAM, None, [
            ("h_bucket", {"a": "b", "le": "0.5"}, 1.0), ("h_bucket", {"a": "b", "le": "1"}, 2.0),
            ("h_sum", {"a": "b"}, 4.5), ("h_count", {"a": "b"}, 3.0),
        ]),
    ]


def test_same_exposition_as_the_text_equivalent() -> None:
    text = (
        "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total{code=\"200\"} 7\n"
        '# TYPE temp gauge\ntemp -1.5\ntemp{room="a\\"b\\\\c\\nd"} +Inf\n'
        '# HELP lat Latency.\n# TYPE lat summary\nlat{quantile="0.5"} 2\nlat{quantile="0.99"} 2.5\n'
        "lat_sum 10\nlat_count 4\n# TYPE u untyped\nu 3\n"
        '# TYPE h histogram\nh_bucket{a="b",le="0.5"} 1\nh_bucket{a="b",le="1.0"} 2\nh_sum{a="b"} 4.5\n'
        'h_count{a="b"} 3\n'
    )
    grouping = {"job": "j"}
    from_text, _ = normalise(parse_text(text), grouping, accept_timestamps=False)
    from_pb, _ = normalise(parse_protobuf(encode_delimited(example_families())), grouping, accept_timestamps=False)
    assert render(from_pb.values()) == render(from_text.values())


def test_timestamps_and_float_counts() -> None:
    h = family("h", 4)
    m = h.metric.add()
    m.timestamp_ms = 1_600_000_000_123
    m.histogram.sample_count_float = 2.5
    b = m.histogram.bucket.add()
    b.upper_bound, b.cumulative_count_float = math.inf, 2.5
    (fam,) = parse_protobuf(encode_delimited([h]))
    assert [(s.name, s.labels, s.value, s.timestamp_ms) for s in fam.samples] == [
        ("h_bucket", {"le": "+Inf"}, 2.5, 1_600_000_000_123),
        ("h_sum", {}, 0.0, 1_600_000_000_123),
        ("h_count", {}, 2.5, 1_600_000_000_123),
    ]


def test_empty_body_and_empty_family() -> None:
    assert parse_protobuf(b"") == []
    (fam,) = parse_protobuf(encode_delimited([family("x", 1)]))
    assert fam.samples == []


def test_metric_without_the_value_of_its_type() -> None:
    c = family("c", 0)
    c.metric.add().gauge.value = 1
    with pytest.raises(ParseError, match="no counter value"):
        parse_protobuf(encode_delimited([c]))


def test_gauge_histogram_is_refused() -> None:
    with pytest.raises(ParseError, match="unsupported type 5"):
        parse_protobuf(encode_delimited([family("gh", 5)]))


def test_duplicate_label_names() -> None:
    g = family("g", 1)
    m = g.metric.add()
    m.label.add(name="a", value="1")
    m.label.add(name="a", value="2")
    m.gauge.value = 1
    with pytest.raises(ParseError, match="duplicate label name"):
        parse_protobuf(encode_delimited([g]))


def test_truncated_bodies_name_the_message() -> None:
    data = encode_delimited(example_families())
    with pytest.raises(ParseError, match="message 1: truncated"):
        parse_protobuf(data[:10])
    with pytest.raises(ParseError, match="length prefix"):
        parse_protobuf(b"\xff\xff\xff")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_only_raises_parse_error(data: bytes) -> None:
    try:
        parse_protobuf(data)
    except ParseError:
        pass


@settings(max_examples=200)
@given(st.data())
def test_corrupted_valid_bodies_only_raise_parse_error(data: st.DataObject) -> None:
    body = bytearray(encode_delimited(example_families()))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_protobuf(bytes(body))
    except ParseError:
        pass


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (PROTOBUF_CONTENT_TYPE, True),
        ("application/vnd.google.protobuf;encoding=delimited;proto=io.prometheus.client.MetricFamily", True),
        ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily", False),
        ("text/plain; version=0.0.4", False),
        (None, False),
        ("", False),
    ],
)
def test_content_type(content_type: str | None, expected: bool) -> None:
    assert is_protobuf(content_type) is expected


def test_gunzip_bounded() -> None:
    body = b"x 1\n" * 1000
    assert gunzip_bounded(gzip.compress(body), len(body)) == body
    with pytest.raises(BodyTooLarge):
        gunzip_bounded(gzip.compress(body), len(body) - 1)


def test_decompression_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge):
        gunzip_bounded(bomb, 1 << 20)


@pytest.mark.parametrize("data", [b"not gzip", gzip.compress(b"x 1\n", mtime=0)[:-6], b""],
                         ids=["not-gzip", "truncated", "empty"])
def test_bad_gzip(data: bytes) -> None:
    with pytest.raises(ParseError):
        gunzip_bounded(data, 1000)


def test_invalid_utf8_strings() -> None:
    g = family("g", 1)
    m = g.metric.add()
    m.label.add(name="k", value="v")
    m.gauge.value = 1
    body = encode_delimited([g]).replace(b"\x01v", b"\x01\xff")
    with pytest.raises(ParseError, match="the value of label 'k' is not valid UTF-8"):
        parse_protobuf(body)
