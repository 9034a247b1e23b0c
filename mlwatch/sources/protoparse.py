"""Protobuf exposition bodies: varint-delimited ``io.prometheus.client.MetricFamily`` messages.

This is client_golang's default push format (Content-Type ``application/vnd.google.protobuf;
proto=io.prometheus.client.MetricFamily; encoding=delimited``). The message classes are built at
import time from a descriptor of Prometheus' ``metrics.proto`` (client_model), assembled with
``descriptor_pb2`` so that no generated code or ``protoc`` is needed; the protobuf runtime does
the decoding. Fields mlwatch does not use (exemplars, created timestamps, native-histogram
spans) are left out of the descriptor and skipped as unknown fields.

Also here: :func:`gunzip_bounded`, since a pushed body of either format may be gzipped.
"""

from __future__ import annotations

import zlib
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from mlwatch.errors import ParseError
from mlwatch.model import FamilySample, MetricFamily, MetricType
from mlwatch.sources.textparse import format_float

__all__ = [
    "PROTOBUF_CONTENT_TYPE",
    "BodyTooLarge",
    "encode_delimited",
    "gunzip_bounded",
    "is_protobuf",
    "messages",
    "parse_protobuf",
]

PROTOBUF_CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (message, [(field name, number, label, type, type name for messages/enums)])
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    ("LabelPair", [("name", 1, _OPT, _F.TYPE_STRING, ""), ("value", 2, _OPT, _F.TYPE_STRING, "")]),
    ("Gauge", [("value", 1, _OPT, _F.TYPE_DOUBLE, "")]),
    ("Counter", [("value", 1, _OPT, _F.TYPE_DOUBLE, "")]),
    ("Quantile", [("quantile", 1, _OPT, _F.TYPE_DOUBLE, ""), ("value", 2, _OPT, _F.TYPE_DOUBLE, "")]),
    ("Summary", [
        ("sample_count", 1, _OPT, _F.TYPE_UINT64, ""),
        ("sample_sum", 2, _OPT, _F.TYPE_DOUBLE, ""),
        ("quantile", 3, _REP, _F.TYPE_MESSAGE, ".io.prometheus.client.Quantile"),
    ]),
    ("Untyped", [("value", 1, _OPT, _F.TYPE_DOUBLE, "")]),
    ("Bucket", [
        ("cumulative_count", 1, _OPT, _F.TYPE_UINT64, ""),
        ("upper_bound", 2, _OPT, _F.TYPE_DOUBLE, ""),
        ("cumulative_count_float", 4, _OPT, _F.TYPE_DOUBLE, ""),
    ]),
    ("Histogram", [
        ("sample_count", 1, _OPT, _F.TYPE_UINT64, ""),
        ("sample_sum", 2, _OPT, _F.TYPE_DOUBLE, ""),
        ("bucket", 3, _REP, _F.TYPE_MESSAGE, ".io.prometheus.client.Bucket"),
        ("sample_count_float", 4, _OPT, _F.TYPE_DOUBLE, ""),
    ]),
    ("Metric", [
        ("label", 1, _REP, _F.TYPE_MESSAGE, ".io.prometheus.client.LabelPair"),
        ("gauge", 2, _OPT, _F.TYPE_MESSAGE, ".io.prometheus.client.Gauge"),
        ("counter", 3, _OPT, _F.TYPE_MESSAGE, ".io.prometheus.client.Counter"),
        ("summary", 4, _OPT, _F.TYPE_MESSAGE, ".io.prometheus.client.Summary"),
        ("untyped", 5, _OPT, _F.TYPE_MESSAGE, ".io.prometheus.client.Untyped"),
        ("timestamp_ms", 6, _OPT, _F.TYPE_INT64, ""),
        ("histogram", 7, _OPT, _F.TYPE_MESSAGE, ".io.prometheus.client.Histogram"),
    ]),
    ("MetricFamily", [
        ("name", 1, _OPT, _F.TYPE_STRING, ""),
        ("help", 2, _OPT, _F.TYPE_STRING, ""),
        ("type", 3, _OPT, _F.TYPE_ENUM, ".io.prometheus.client.MetricType"),
        ("metric", 4, _REP, _F.TYPE_MESSAGE, ".io.prometheus.client.Metric"),
        ("unit", 5, _OPT, _F.TYPE_STRING, ""),
    ]),
]
_ENUM = [("COUNTER", 0), ("GAUGE", 1), ("SUMMARY", 2), ("UNTYPED", 3), ("HISTOGRAM", 4), ("GAUGE_HISTOGRAM", 5)]


def _build() -> dict[str, Any]:
    fd = descriptor_pb2.FileDescriptorProto(
        name="mlwatch/io_prometheus_client_metrics.proto", package="io.prometheus.client", syntax="proto2"
    )
    enum = fd.enum_type.add(name="MetricType")
    for name, number in _ENUM:
        enum.value.add(name=name, number=number)
    for msg_name, fields in _MESSAGES:
        msg = fd.message_type.add(name=msg_name)
        for fname, number, label, ftype, type_name in fields:
            field = msg.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = type_name
    # A private pool: the default one may already hold a generated metrics.proto.
    pool = descriptor_pool.DescriptorPool()
    fdesc = pool.Add(fd)
    del fdesc
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"io.prometheus.client.{name}"))
        for name, _ in _MESSAGES
    }


messages: dict[str, Any] = _build()
"""The message classes by name (``messages["MetricFamily"]`` ...), for decoding and for tests."""

_MetricFamilyPB = messages["MetricFamily"]
_TYPE_OF = {0: MetricType.COUNTER, 1: MetricType.GAUGE, 2: MetricType.SUMMARY, 3: MetricType.UNTYPED,
            4: MetricType.HISTOGRAM}
_FIELD_OF = {MetricType.COUNTER: "counter", MetricType.GAUGE: "gauge", MetricType.UNTYPED: "untyped",
             MetricType.SUMMARY: "summary", MetricType.HISTOGRAM: "histogram"}


class BodyTooLarge(ParseError):
    """A body (after decompression) larger than the configured limit."""


def is_protobuf(content_type: str | None) -> bool:
    """True for the delimited protobuf Content-Type (parameters in any order and case)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/vnd.google.protobuf":
        return False
    opts = {}
    for part in params.split(";"):
        k, _, v = part.partition("=")
        opts[k.strip().lower()] = v.strip().strip('"')
    return opts.get("proto") == "io.prometheus.client.MetricFamily" and opts.get("encoding") == "delimited"


def gunzip_bounded(data: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body, refusing (BodyTooLarge) to produce more than ``max_bytes``.

    Concatenated gzip members are read one after the other, as Go's gzip.Reader does; anything else
    after a member is an error. Memory stays within about twice ``max_bytes`` whatever the ratio."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, max_bytes + 1 - len(out))
            if len(out) > max_bytes or d.unconsumed_tail:
                raise BodyTooLarge(f"body larger than {max_bytes} bytes after decompression")
            out += d.flush()
        except zlib.error as exc:
            raise ParseError(f"invalid gzip body: {exc}") from None
        if len(out) > max_bytes:
            raise BodyTooLarge(f"body larger than {max_bytes} bytes after decompression")
        if not d.eof:
            raise ParseError("invalid gzip body: truncated")
        rest = d.unused_data
        if not rest:
            return bytes(out)
        if rest[:2] != b"\x1f\x8b":
            raise ParseError(f"invalid gzip body: {len(rest)} bytes of trailing data after the gzip stream")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The length prefix of a delimited message (at most 10 bytes)."""
    result = shift = 0
    end = min(len(data), pos + 10)
    while pos < end:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ParseError("truncated or invalid length prefix in protobuf body")


def encode_delimited(families: list[Any]) -> bytes:
    """Varint-delimited encoding of ``MetricFamily`` messages (what client_golang pushes)."""
    out = bytearray()
    for mf in families:
        payload = mf.SerializeToString()
        n = len(payload)
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                break
        out += payload
    return bytes(out)


def _text(value: str | bytes, what: str, index: int) -> str:
    # proto2 strings are not UTF-8-checked on decode: the runtime hands out bytes instead.
    if isinstance(value, bytes):
        raise ParseError(f"message {index}: {what} is not valid UTF-8")
    return value


def _labels(metric: Any, index: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    for lp in metric.label:
        name = _text(lp.name, "a label name", index)
        if name in labels:
            raise ParseError(f"message {index}: duplicate label name {name!r}")
        labels[name] = _text(lp.value, f"the value of label {name!r}", index)
    return labels


def _convert(pb: Any, index: int) -> MetricFamily:
    name = _text(pb.name, "the metric family name", index)
    if pb.type not in _TYPE_OF:
        raise ParseError(f"message {index}: metric family {name!r} has unsupported type {pb.type}")
    typ = _TYPE_OF[pb.type]
    help_ = _text(pb.help, "the help text", index) if pb.HasField("help") else None
    fam = MetricFamily(name, typ, help_, _text(pb.unit, "the unit", index))
    field = _FIELD_OF[typ]
    out = fam.samples
    for m in pb.metric:
        if not m.HasField(field):
            raise ParseError(f"message {index}: a metric of family {name!r} has no {field} value (is not a {typ.name})")
        labels = _labels(m, index)
        special = "le" if typ is MetricType.HISTOGRAM else "quantile" if typ is MetricType.SUMMARY else ""
        if special in labels:
            raise ParseError(f"message {index}: a metric of {typ.value} {name!r} must not have an explicit {special!r} label")
        ts = m.timestamp_ms if m.HasField("timestamp_ms") else None
        if typ is MetricType.HISTOGRAM:
            h = m.histogram
            for b in h.bucket:
                bl = dict(labels)
                bl["le"] = format_float(b.upper_bound)
                cnt = b.cumulative_count_float if b.HasField("cumulative_count_float") else b.cumulative_count
                out.append(FamilySample(name + "_bucket", bl, float(cnt), ts))
            out.append(FamilySample(name + "_sum", labels, h.sample_sum, ts))
            cnt = h.sample_count_float if h.HasField("sample_count_float") else h.sample_count
            out.append(FamilySample(name + "_count", dict(labels), float(cnt), ts))
        elif typ is MetricType.SUMMARY:
            s = m.summary
            for q in s.quantile:
                ql = dict(labels)
                ql["quantile"] = format_float(q.quantile)
                out.append(FamilySample(name, ql, q.value, ts))
            out.append(FamilySample(name + "_sum", labels, s.sample_sum, ts))
            out.append(FamilySample(name + "_count", dict(labels), float(s.sample_count), ts))
        else:
            out.append(FamilySample(name, labels, getattr(m, field).value, ts))
    return fam


def parse_protobuf(data: bytes) -> list[MetricFamily]:
    """Decode a delimited protobuf body into families (summaries and histograms as flat samples).

    Raises :class:`ParseError` naming the message (1-based) for anything that does not decode.
    """
    families: list[MetricFamily] = []
    pos = 0
    index = 0
    n = len(data)
    while pos < n:
        index += 1
        size, pos = _read_varint(data, pos)
        if pos + size > n:
            raise ParseError(f"message {index}: truncated (needs {size} bytes, {n - pos} left)")
        pb = _MetricFamilyPB()
        try:
            pb.ParseFromString(data[pos : pos + size])
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ParseError(f"message {index}: invalid protobuf: {exc}") from None
        pos += size
        families.append(_convert(pb, index))
    return families
