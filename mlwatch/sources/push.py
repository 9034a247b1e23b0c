"""Push groups with Pushgateway 1.5 semantics, kept durable through the writer.

A push group is a job plus a grouping key (``/metrics/job/<job>{/<label>/<value>}``). What a
push does, as the real Pushgateway 1.5.1 does it (compared with the binary):

* PUT replaces the whole group, POST only the families pushed (by name); DELETE removes the
  group. Families without samples in a push are ignored (a POST of a bare ``# TYPE x gauge``
  changes nothing). Families named ``push_time_seconds`` / ``push_failure_time_seconds`` in a
  body are dropped, after a type check: anything but a gauge conflicts with the other groups'.
* Grouping labels override body labels of the same name (``job`` included), silently; every
  series without an ``instance`` label gets ``instance=""`` (what ``/metrics`` shows).
* Histograms and summaries are stored as client_golang holds them: one series per label set
  (``le``/``quantile`` set aside on *every* sample of the family), buckets and quantiles in
  pushed order, ``_sum`` and ``_count`` defaulting to 0, counts converted to uint64 as Go does.
* Consistency, checked on the group's new content together with every other group's (and the
  types the config gives metric names, ``declared_type``): one type per metric name, no ``x_count``/``x_sum``/``x_bucket`` next to a histogram or summary ``x``, no
  duplicate series, valid names, no ``__`` label names. A refused push stores nothing but the
  group's failure time (a group that did not exist is created empty, with push_time 0, as
  Pushgateway does) and answers 400.
* Explicit timestamps are refused ("pushed metrics must not have timestamps") unless
  ``accept_timestamps`` (mlwatch extension: the samples are backfill, stored at their times and
  not part of the group's current values).

Where mlwatch deliberately differs (CONTRACT §4, §6, §7): an empty grouping label value means the
label is absent, so ``/job/a/x@base64/=`` is the same group as ``/job/a`` (Pushgateway keeps a
separate group with ``x=""``); a malformed body also sets the group's failure time (Pushgateway
only does that for consistency errors); a group may expire (``?ttl=`` or the default TTL); when
several groups give one family different HELP texts the first non-empty one of the groups in
key order wins (Pushgateway picks one group's at random, empty or not); protobuf families with an invalid or empty name, or an
explicit ``le``/``quantile`` label, are refused with 400 (Pushgateway 1.5 stores them and then
serves a /metrics that Prometheus cannot parse).

Storage (CONTRACT §7): each change is one :class:`WriteBatch` holding the samples at receive time
(every series of the group, ``push_time_seconds``, ``push_failure_time_seconds``), staleness
markers for series that disappeared, metadata, and the group's new persisted state; the caller
is answered only after it committed. :meth:`PushSource.resample` writes every group's current
values again and retires expired groups. Changes are pipelined (see :class:`PushSource`), so
concurrent pushes, to one group or many, share group commits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from mlwatch.errors import ParseError, PushError
from mlwatch.model import (
    LABEL_NAME_RE,
    METRIC_NAME_RE,
    STALE_NAN,
    Clock,
    FamilySample,
    MetricFamily,
    MetricMeta,
    MetricType,
    Sample,
    SeriesKey,
    format_series,
)
from mlwatch.sources.textparse import format_float, parse_go_float
from mlwatch.storage.writer import PushGroupRecord, WriteBatch, Writer, WriteResult

log = logging.getLogger(__name__)

__all__ = [
    "PUSH_FAILURE_TIME",
    "PUSH_TIME",
    "GroupNotFound",
    "PushGroup",
    "PushSource",
    "exposed_samples",
    "group_key",
    "normalise",
    "parse_grouping_path",
]


PUSH_TIME = "push_time_seconds"
PUSH_FAILURE_TIME = "push_failure_time_seconds"
PUSH_TIME_HELP = "Last Unix time when changing this group in the Pushgateway succeeded."
PUSH_FAILURE_TIME_HELP = "Last Unix time when changing this group in the Pushgateway failed."
_RESERVED = (PUSH_TIME, PUSH_FAILURE_TIME)
_OUTCOMES = {"StorageUnavailable": "unavailable", "SeriesLimitExceeded": "series_limit"}
_INVALID = "pushed metrics are invalid or inconsistent with existing metrics: "


class GroupNotFound(PushError):
    """A push path without a job (Pushgateway answers 404)."""


# ---------------------------------------------------------------- grouping keys


_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*")


def _decode_base64(value: str, label: str) -> str:
    """RFC 4648 URL-safe base64, ``=`` padding optional (as Pushgateway's decodeBase64)."""
    raw = value.rstrip("=")
    try:
        if not _URLSAFE_B64.fullmatch(raw):
            raise ValueError("illegal base64 data (only A-Z a-z 0-9 - _ and trailing = are allowed)")
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PushError(f"invalid base64 encoding for label {label}={value!r}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PushError(f"invalid base64 encoding for label {label}={value!r}: not UTF-8") from None


def parse_grouping_path(path: str) -> dict[str, str]:
    """The grouping labels of ``job/<job>{/<label>/<value>}`` (or ``job@base64/...``).

    ``<label>@base64`` values are URL-safe base64 with optional ``=`` padding. A label given
    twice keeps its last value; the path's job wins over a ``job`` label in the rest. Empty
    values mean "absent" and are dropped. Raises PushError (400) or GroupNotFound (404).
    """
    head, sep, rest = path.partition("/")
    if head not in ("job", "job@base64") or not sep:
        raise GroupNotFound("no job in the push path")
    job, slash, rest = rest.partition("/")
    if not job and head == "job":
        raise GroupNotFound("no job in the push path")
    if head == "job@base64":
        job = _decode_base64(job, "job")
    if not job:
        raise PushError("job name is required")
    labels: dict[str, str] = {}
    if slash and rest:
        parts = rest.split("/")
        if len(parts) % 2:
            raise PushError(f"odd number of components in label string {'/' + rest!r}")
        for name, value in zip(parts[::2], parts[1::2], strict=True):
            label = name.removesuffix("@base64")
            if not LABEL_NAME_RE.match(label) or label.startswith("__"):
                raise PushError(f"improper label name {label!r}")
            labels[label] = _decode_base64(value, label) if label != name else value
    labels["job"] = job
    return {k: v for k, v in sorted(labels.items()) if v != ""}


def group_key(labels: dict[str, str]) -> str:
    """The persisted identity of a group: its labels in canonical text form."""
    return SeriesKey.of("", labels).canonical()


# ---------------------------------------------------------------- normalisation


def _go_uint64(v: float) -> float:
    """``float64(uint64(v))`` as Go on amd64 computes it (negative wraps, NaN/overflow -> 2^63)."""
    if math.isnan(v) or v >= 18446744073709551616.0 or v <= -9223372036854775808.0:
        return 9223372036854775808.0
    n = int(v)
    return float(n % 18446744073709551616 if n < 0 else n)


def _canonical_nan(v: float) -> float:
    return math.nan if math.isnan(v) else v


@dataclass(slots=True)
class _Series:
    """One client_golang ``dto.Metric`` of a histogram or summary while it is assembled."""

    labels: dict[str, str]
    parts: list[tuple[str, float]] = field(default_factory=list)  # (le or quantile, value)
    sum: float = 0.0
    count: float = 0.0


def _complex(fam: MetricFamily, grouping: dict[str, str]) -> MetricFamily:
    hist = fam.type is MetricType.HISTOGRAM
    special = "le" if hist else "quantile"
    name = fam.name
    series: dict[frozenset[tuple[str, str]], _Series] = {}
    for s in fam.samples:
        labels = {k: v for k, v in s.labels.items() if k != special}
        labels.update(grouping)
        labels.setdefault("instance", "")
        sig = frozenset(labels.items())
        cur = series.get(sig)
        if cur is None:
            cur = series[sig] = _Series(labels)
        if s.name == name + "_sum":
            cur.sum = _canonical_nan(s.value)
        elif s.name == name + "_count":
            cur.count = _go_uint64(s.value)
        elif special in s.labels and s.name == (name + "_bucket" if hist else name):
            bound = format_float(parse_go_float(s.labels[special]))
            cur.parts.append((bound, _go_uint64(s.value) if hist else _canonical_nan(s.value)))
    out: list[FamilySample] = []
    part_name = name + "_bucket" if hist else name
    for cur in series.values():
        for bound, value in cur.parts:
            pl = dict(cur.labels)
            pl[special] = bound
            out.append(FamilySample(part_name, pl, value))
        out.append(FamilySample(name + "_sum", cur.labels, cur.sum))
        out.append(FamilySample(name + "_count", dict(cur.labels), cur.count))
    return MetricFamily(name, fam.type, fam.help, fam.unit, out)


def _validate(fam: MetricFamily) -> None:
    if not METRIC_NAME_RE.match(fam.name):
        raise PushError(f"{_INVALID}metric name {fam.name!r} is invalid")
    for s in fam.samples:
        for k in s.labels:
            if not LABEL_NAME_RE.match(k) or k.startswith("__"):
                raise PushError(f"{_INVALID}metric {fam.name!r} has a label with an invalid name: {k}")


@dataclass(slots=True, eq=False)
class _Shape:
    """The stored series of one family of a group, and what they were derived from.

    Pushers send the same series again and again with new values: a family whose parsed samples
    have the same type, names and labels as the previous push's takes over its shape, so the
    labels, series keys and checks of the previous push serve again (only values change).
    """

    keys: list[SeriesKey]  # the stored series, in the family's exposed (unordered) order
    values: list[float] | None = None  # their values, when they are not the samples' (histograms, summaries)
    labels: list[dict[str, str]] | None = None  # normalised labels of the samples (read-only, shared)
    raw: tuple[MetricType, list[str], list[dict[str, str]]] | None = None  # the parsed samples' type, names, labels
    # The family's JSON without its values (see PushGroup.record), for its (type, help, unit).
    json_head: tuple[tuple[MetricType, str | None, str], bytes] | None = None
    meta: MetricMeta | None = None  # the family's last metadata, one object while it stays the same


def _reuse(fam: MetricFamily, prev: _Shape | None) -> MetricFamily | None:
    """``fam`` normalised with the shape of the previous push, if it has the same one (no timestamps)."""
    if prev is None or prev.raw is None or prev.labels is None:
        return None
    typ, names, raw = prev.raw
    samples = fam.samples
    if typ is not fam.type or len(samples) != len(names):
        return None
    if len(names) == 1:  # the usual family: one series
        s = samples[0]
        lb = raw[0]
        if s.timestamp_ms is not None or s.name != names[0] or (s.labels is not lb and s.labels != lb):
            return None
        v = s.value
        return MetricFamily(fam.name, typ, fam.help, fam.unit,
                            [FamilySample(fam.name, prev.labels[0], v if not math.isnan(v) else math.nan)])
    values = []
    for s, name, labels in zip(samples, names, raw, strict=True):
        if s.timestamp_ms is not None or s.name != name or (s.labels is not labels and s.labels != labels):
            return None
        values.append(_canonical_nan(s.value))
    name = fam.name
    return MetricFamily(name, typ, fam.help, fam.unit, [FamilySample(name, lb, v) for lb, v in zip(prev.labels, values, strict=True)])


def normalise(
    families: Iterable[MetricFamily], grouping: dict[str, str], *, accept_timestamps: bool
) -> tuple[dict[str, MetricFamily], list[tuple[MetricFamily, FamilySample]]]:
    """A parsed body as the group will hold it, and its explicitly timestamped (backfill) samples.

    Raises PushError for what Pushgateway's consistency check refuses inside one push.
    """
    current, backfill, _ = _normalise(families, grouping, accept_timestamps, {})
    return current, backfill


def _normalise(
    families: Iterable[MetricFamily], grouping: dict[str, str], accept_timestamps: bool,
    previous: dict[str, tuple[MetricFamily, _Shape]],
) -> tuple[dict[str, MetricFamily], list[tuple[MetricFamily, FamilySample]], dict[str, _Shape]]:
    """:func:`normalise`, reusing the ``previous`` shapes of the group's families where they fit;
    also the shapes of the families it normalised anew (simple types) or reused."""
    current: dict[str, MetricFamily] = {}
    backfill: list[tuple[MetricFamily, FamilySample]] = []
    shapes: dict[str, _Shape] = {}
    for fam in families:
        if fam.name in _RESERVED:
            continue
        hit = previous.get(fam.name)
        prev = hit[1] if hit is not None else None
        again = _reuse(fam, prev)
        if again is not None and prev is not None:
            current.pop(fam.name, None)
            current[fam.name] = again
            shapes[fam.name] = prev
            continue
        shapes.pop(fam.name, None)
        _validate(fam)
        live = []
        for s in fam.samples:
            if s.timestamp_ms is None:
                live.append(s)
                continue
            if not accept_timestamps:
                raise PushError(_INVALID + "pushed metrics must not have timestamps")
            labels = dict(s.labels)
            labels.update(grouping)
            backfill.append((fam, FamilySample(s.name, labels, _canonical_nan(s.value), s.timestamp_ms)))
        if not live:
            continue
        whole = len(live) == len(fam.samples)
        fam = MetricFamily(fam.name, fam.type, fam.help, fam.unit, live)
        if fam.type is MetricType.HISTOGRAM or fam.type is MetricType.SUMMARY:
            fam = _complex(fam, grouping)
        else:
            samples = []
            seen: set[frozenset[tuple[str, str]]] = set()
            for s in fam.samples:
                labels = dict(s.labels)
                labels.update(grouping)
                labels.setdefault("instance", "")
                sig = frozenset(labels.items())
                if sig in seen:
                    raise PushError(
                        f"{_INVALID}collected metric {fam.name!r} {_fmt_labels(labels)} was collected before "
                        "with the same name and label values"
                    )
                seen.add(sig)
                samples.append(FamilySample(fam.name, labels, _canonical_nan(s.value)))
            if whole:
                shapes[fam.name] = _Shape(
                    [SeriesKey.of(s.name, s.labels) for s in samples], None, [s.labels for s in samples],
                    (fam.type, [s.name for s in live], [s.labels for s in live]),
                )
            fam = MetricFamily(fam.name, fam.type, fam.help, fam.unit, samples)
        current.pop(fam.name, None)  # protobuf only: of two messages with one name, the last wins
        current[fam.name] = fam
    return current, backfill, shapes


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"


def _suffix_collisions(
    name: str, typ: MetricType, type_of: Callable[[str], MetricType | None]
) -> str | None:
    """client_golang's checkSuffixCollisions of family ``name`` against the other known families."""
    for suffix in ("_count", "_sum", "_bucket"):
        if name.endswith(suffix):
            base = type_of(name[: -len(suffix)])
            if base is MetricType.HISTOGRAM or (base is MetricType.SUMMARY and suffix != "_bucket"):
                return (
                    f"collected metric named {name!r} collides with previously collected "
                    f"{base.value} named {name[: -len(suffix)]!r}"
                )
    if typ is MetricType.HISTOGRAM or typ is MetricType.SUMMARY:
        for suffix in ("_count", "_sum") + (("_bucket",) if typ is MetricType.HISTOGRAM else ()):
            if type_of(name + suffix) is not None:
                return (
                    f"collected histogram or summary named {name!r} collides with previously "
                    f"collected metric named {name + suffix!r}"
                )
    return None


# ---------------------------------------------------------------- exposition order

_SPECIAL = {MetricType.HISTOGRAM: "le", MetricType.SUMMARY: "quantile"}


def series_sort_key(labels: dict[str, str], special: str | None) -> tuple[int, tuple[str, ...]]:
    """client_golang's metricSorter order for one series (``special`` is le/quantile, not a label)."""
    names = sorted(k for k in labels if k != special)
    return (len(names), tuple(labels[k] for k in names))


def _series_of(family: MetricFamily) -> list[list[FamilySample]]:
    """Split a normalised family into its series (client_golang's ``dto.Metric``)."""
    samples = family.samples
    if family.type is MetricType.HISTOGRAM or family.type is MetricType.SUMMARY:
        count_name = family.name + "_count"
        out: list[list[FamilySample]] = []
        cur: list[FamilySample] = []
        for s in samples:
            cur.append(s)
            if s.name == count_name:
                out.append(cur)
                cur = []
        if cur:
            out.append(cur)
        return out
    return [[s] for s in samples]


def exposed_samples(family: MetricFamily, *, ordered: bool = True) -> Iterator[FamilySample]:
    """Every sample a normalised ``family`` exposes (the implied ``+Inf`` bucket included).

    ``ordered``: in Pushgateway's series order; otherwise in stored order (cheaper).
    """
    special = _SPECIAL.get(family.type)
    metrics = _series_of(family)
    if ordered:
        metrics.sort(key=lambda m: series_sort_key(m[0].labels, special))
    if family.type is not MetricType.HISTOGRAM:
        for m in metrics:
            yield from m
        return
    bucket = family.name + "_bucket"
    sum_name = family.name + "_sum"
    for m in metrics:
        inf_seen = False
        for s in m:
            if s.name == bucket:
                if s.labels.get("le") == "+Inf":
                    inf_seen = True
            elif not inf_seen and s.name == sum_name:
                count = m[-1].value if m[-1].name == family.name + "_count" else 0.0
                labels = dict(s.labels)
                labels["le"] = "+Inf"
                yield FamilySample(bucket, labels, count)
                inf_seen = True
            yield s


# ---------------------------------------------------------------- groups


@dataclass(slots=True)
class PushGroup:
    """One push group's current content (families in exposition form, grouping labels applied)."""

    key: str
    labels: dict[str, str]
    families: dict[str, MetricFamily] = field(default_factory=dict)
    family_times: dict[str, float] = field(default_factory=dict)  # last change of each family
    push_time: float = 0.0
    failure_time: float = 0.0
    expires_at: float | None = None
    # The shape (stored series) of each family, computed once per family object (families never
    # change; a POST shares the untouched ones with the group's previous state, and a family
    # pushed again with new values only shares the previous one's shape).
    shapes: dict[str, tuple[MetricFamily, _Shape]] = field(default_factory=dict, compare=False, repr=False)
    # The state this one was derived from by a push, and the families whose series it kept.
    base: PushGroup | None = field(default=None, compare=False, repr=False)
    kept: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def exposed_labels(self) -> dict[str, str]:
        """Labels of push_time_seconds and friends: grouping labels plus ``instance=""``."""
        labels = dict(self.labels)
        labels.setdefault("instance", "")
        return labels

    def shape(self, name: str) -> _Shape:
        """The stored series of family ``name`` (computed once per family object)."""
        fam = self.families[name]
        hit = self.shapes.get(name)
        if hit is not None and hit[0] is fam:
            return hit[1]
        exposed = list(exposed_samples(fam, ordered=False))
        shape = _Shape([SeriesKey.of(s.name, s.labels) for s in exposed])
        if len(exposed) != len(fam.samples) or fam.type is MetricType.HISTOGRAM or fam.type is MetricType.SUMMARY:
            shape.values = [s.value for s in exposed]
        self.shapes[name] = (fam, shape)
        return shape

    def meta(self, name: str) -> MetricMeta:
        """TYPE, HELP and UNIT of family ``name`` (one object while they stay the same)."""
        fam = self.families[name]
        shape = self.shape(name)
        meta = shape.meta
        if meta is None or meta.type is not fam.type or meta.help != (fam.help or "") or meta.unit != fam.unit:
            meta = shape.meta = MetricMeta(fam.type, fam.help or "", fam.unit)
        return meta

    def same_series(self, other: PushGroup, name: str) -> bool:
        """Whether family ``name`` has the same series (one shape) here and in ``other``, as far as
        known without computing shapes (False means: compare the series)."""
        if other is self.base:
            return name in self.kept
        mine = self.shapes.get(name)
        theirs = other.shapes.get(name)
        return (
            mine is not None and theirs is not None and mine[1] is theirs[1]
            and mine[0] is self.families.get(name) and theirs[0] is other.families.get(name)
        )

    def family_keys(self, name: str) -> list[SeriesKey]:
        """The stored series of family ``name``; the same list object while its series stay the same."""
        return self.shape(name).keys

    def family_series(self, name: str) -> list[tuple[SeriesKey, float]]:
        """The stored series of family ``name`` with their current values."""
        shape = self.shape(name)
        values = shape.values if shape.values is not None else [s.value for s in self.families[name].samples]
        return list(zip(shape.keys, values, strict=True))

    def derived_shapes(self, families: dict[str, MetricFamily]) -> dict[str, tuple[MetricFamily, _Shape]]:
        """The shapes still valid for a new state holding ``families``."""
        return {n: e for n, e in self.shapes.items() if families.get(n) is e[0]}

    def series(self) -> Iterator[tuple[SeriesKey, float]]:
        """Every stored series of the group with its current value, push_time_seconds included."""
        keys, values = self.columns()
        return zip(keys, values, strict=True)

    def time_keys(self) -> list[SeriesKey]:
        """The series of push_time_seconds and push_failure_time_seconds."""
        return [SeriesKey.of(PUSH_TIME, self.labels), SeriesKey.of(PUSH_FAILURE_TIME, self.labels)]

    def columns(self) -> tuple[list[SeriesKey], list[float]]:
        """Every stored series of the group and its current value, push_time_seconds included."""
        keys: list[SeriesKey] = []
        values: list[float] = []
        for name, fam in self.families.items():
            shape = self.shape(name)
            keys += shape.keys
            values += shape.values if shape.values is not None else [s.value for s in fam.samples]
        keys += self.time_keys()
        values += (self.push_time, self.failure_time)
        return keys, values

    def record(self) -> PushGroupRecord:
        """The persisted form: JSON, ``{"v": 2, "families": [...], "values": [...], "times": {...}}``.

        Each family is ``{"name", "type", "help", "unit", "names", "labels"}`` (its samples as
        columns), encoded once per shape as pushes repeat it; ``values`` holds each family's values.
        """
        families = self.families
        heads = b",".join([self._family_json(name, fam) for name, fam in families.items()])
        values = [[s.value for s in fam.samples] for fam in families.values()]
        encoded = orjson.dumps(values)
        if b"null" in encoded:  # orjson writes NaN and infinities as null: spell them out ("NaN", "+Inf")
            encoded = orjson.dumps([[v if math.isfinite(v) else format_float(v) for v in vs] for vs in values])
        data = (b'{"v":2,"families":[' + heads + b'],"values":' + encoded
                + b',"times":' + orjson.dumps(self.family_times) + b"}")
        return PushGroupRecord(self.key, self.labels, data, self.push_time, self.failure_time, self.expires_at)

    def _family_json(self, name: str, fam: MetricFamily) -> bytes:
        shape = self.shape(name)
        ident = (fam.type, fam.help, fam.unit)
        head = shape.json_head
        if head is None or head[0] != ident:
            head = shape.json_head = (ident, orjson.dumps({
                "name": fam.name, "type": fam.type.value, "help": fam.help, "unit": fam.unit,
                "names": [s.name for s in fam.samples], "labels": [s.labels for s in fam.samples],
            }))
        return head[1]

    @classmethod
    def from_record(cls, rec: PushGroupRecord) -> PushGroup:
        data = rec.families
        payload = json.loads(data if data[:1] == b"{" else zlib.decompress(data))  # the writer compresses them
        families = {}
        values = payload.get("values", [])
        for i, f in enumerate(payload["families"]):
            if "samples" in f:  # v1: [[name, labels, value], ...]
                samples = [FamilySample(n, lbl, float(v)) for n, lbl, v in f["samples"]]
            else:
                vals = f["values"] if "values" in f else values[i]  # per family: written by 554e531 only
                samples = list(map(FamilySample, f["names"], f["labels"], map(float, vals)))
            families[f["name"]] = MetricFamily(f["name"], MetricType(f["type"]), f["help"], f["unit"], samples)
        return cls(
            rec.group_key, dict(rec.labels), families, dict(payload.get("times", {})),
            rec.push_time, rec.failure_time, rec.expires_at,
        )


def _gone(old: PushGroup, new: PushGroup | None) -> list[SeriesKey]:
    """The series of group state ``old`` that its next state ``new`` no longer holds."""
    maybe: list[SeriesKey] = []
    for name in old.families:
        if new is None or not new.same_series(old, name):
            maybe += old.family_keys(name)
    if new is None:
        return maybe + old.time_keys()
    if not maybe:
        return []
    current = set(new.columns()[0])
    return [k for k in maybe if k not in current]


_PUSH_TIME_META = MetricMeta(MetricType.GAUGE, PUSH_TIME_HELP)
_PUSH_FAILURE_TIME_META = MetricMeta(MetricType.GAUGE, PUSH_FAILURE_TIME_HELP)


@dataclass
class PushStats:
    """Counters for self-metrics: pushes by method and outcome."""

    pushes: dict[tuple[str, str], int] = field(default_factory=dict)
    expired_groups: int = 0
    resamples: int = 0
    unreadable_groups: int = 0  # stored states that could not be read at start-up (logged, dropped)

    def count(self, method: str, outcome: str) -> None:
        self.pushes[(method, outcome)] = self.pushes.get((method, outcome), 0) + 1

    @property
    def errors(self) -> int:
        return sum(n for (_, outcome), n in self.pushes.items() if outcome != "ok")


class PushSource:
    """The push groups of one daemon, persisted through ``writer``.

    ``push``/``delete``/``wipe`` return after the change committed; they raise ParseError or
    PushError (400), StorageError (StorageUnavailable: retry; SeriesLimitExceeded: refused
    whole). A refused push records only the failure time.

    Changes are pipelined: each is computed from the group's *head* (its newest state, committed
    or in flight), submitted to the writer at once, and awaited; the writer commits in submission
    order, so many pushes, even to one group, share a commit. The head only moves inside the
    synchronous part of a change, so changes never interleave; conflicts are checked against
    every head. When a write fails, a head that nothing was built on since goes back to the
    committed state. What ``/metrics`` and the API show is the committed state.
    """

    def __init__(
        self, writer: Writer, *, accept_timestamps: bool = True, default_ttl_ms: int | None = None,
        clock: Clock = time.time, declared_type: Callable[[str], MetricType | None] = lambda _name: None,
    ) -> None:
        self._writer = writer
        self.accept_timestamps = accept_timestamps
        self.default_ttl_ms = default_ttl_ms
        self._clock = clock
        self.declared_type = declared_type
        """The type other parts of mlwatch (the config's sources) give a metric name, if any."""
        self._groups: dict[str, PushGroup] = {}  # committed
        self._heads: dict[str, PushGroup] = {}  # newest submitted (committed or in flight)
        self._seq = 0
        self._head_seq: dict[str, int] = {}
        self._committed_seq: dict[str, int] = {}
        # Every head's families: name -> group key -> type; series -> group key.
        self._types: dict[str, dict[str, MetricType]] = {}
        self._series_owner: dict[SeriesKey, str] = {}
        self._indexed: dict[str, PushGroup] = {}
        self.stats = PushStats()

    # ---------------------------------------------------------------- state
    def restore(self, records: Iterable[PushGroupRecord]) -> None:
        """Load the groups persisted by a previous run (``Reader.push_groups()``)."""
        for rec in records:
            try:
                group = PushGroup.from_record(rec)
            except (ValueError, KeyError, TypeError, IndexError, zlib.error) as exc:
                # One unreadable record must not keep the daemon from starting: the group is left out (its
                # samples stay stored; it is no longer re-sampled) and said so.
                log.error("push group %s: its stored state cannot be read (%s: %s); the group is dropped, push it "
                          "again", rec.group_key, type(exc).__name__, exc)
                self.stats.unreadable_groups += 1
                continue
            self._groups[group.key] = group
            self._set_head(group.key, group, 0)

    @property
    def groups(self) -> dict[str, PushGroup]:
        """The committed groups by key."""
        return self._groups

    def _set_head(self, key: str, group: PushGroup | None, seq: int) -> None:
        if group is None:
            self._heads.pop(key, None)
        else:
            self._heads[key] = group
        self._head_seq[key] = seq
        self._reindex(key, group)

    def _reindex(self, key: str, group: PushGroup | None) -> None:
        old = self._indexed.pop(key, None)
        new = group.families if group is not None else {}
        types = self._types
        owner = self._series_owner
        same: set[str] = set()  # families whose series stay the same (their owner too)
        if old is not None:
            for name in old.families:
                if name not in new:
                    owners = types.get(name)
                    if owners is not None:
                        owners.pop(key, None)
                        if not owners:
                            del types[name]
                elif group is not None and group.same_series(old, name):
                    same.add(name)
                    continue
                for sk in old.family_keys(name):
                    if owner.get(sk) == key:
                        del owner[sk]
        if group is None or not new:
            return
        for name, fam in new.items():
            owners = types.get(name)
            if owners is None:
                types[name] = {key: fam.type}
            else:
                owners[key] = fam.type
            if name not in same:
                for sk in group.family_keys(name):
                    owner[sk] = key
        self._indexed[key] = group

    def _type_elsewhere(self, name: str, key: str) -> MetricType | None:
        for owner, typ in self._types.get(name, {}).items():
            if owner != key:
                return typ
        return None

    def _check_reserved(self, key: str, families: list[MetricFamily]) -> None:
        """push_time_seconds & co. in a body are dropped, but their type is checked first (as Pushgateway
        does: against the gauges of every other group)."""
        if not any(k != key for k in self._groups):
            return
        for fam in families:
            if fam.name in _RESERVED and fam.samples and fam.type is not MetricType.GAUGE:
                raise PushError(f"{_INVALID}collected metric {fam.name!r} of other groups is a gauge, not {fam.type.value}")

    def _check_future(self, backfill: list[tuple[MetricFamily, FamilySample]], now: float) -> None:
        """A sample stamped further ahead of the clock than the writer accepts is refused with the push (it
        would make every later sample of its series out of order)."""
        tolerance = getattr(self._writer, "future_tolerance_ms", 0)
        limit = now * 1000 + tolerance
        for _, s in backfill if tolerance else ():
            if (s.timestamp_ms or 0) > limit:
                raise PushError(
                    f"sample {format_series(s.name, sorted(s.labels.items()))} has timestamp {s.timestamp_ms} ms, "
                    f"{((s.timestamp_ms or 0) - now * 1000) / 1000:.0f}s ahead of the server's clock "
                    f"(at most {tolerance / 1000:.0f}s is accepted)"
                )

    def _check(self, key: str, group: PushGroup) -> None:
        """Pushgateway's consistency check of a group's new content against all other groups."""
        families = group.families

        def type_of(name: str) -> MetricType | None:
            fam = families.get(name)
            if fam is not None:
                return fam.type
            return self._type_elsewhere(name, key) or self.declared_type(name)

        owner_of = self._series_owner.get
        head = self._indexed.get(key)
        for name, fam in families.items():
            known = self._type_elsewhere(name, key)
            if known is not None and known is not fam.type:
                raise PushError(
                    f"{_INVALID}metric {name!r} is already pushed as {known.value} by another group, "
                    f"not {fam.type.value}"
                )
            declared = self.declared_type(name)
            if declared is not None and declared is not fam.type:
                raise PushError(
                    f"{_INVALID}metric {name!r} is a {declared.value} in mlwatch's configuration, "
                    f"not {fam.type.value}"
                )
            problem = _suffix_collisions(name, fam.type, type_of)
            if problem:
                raise PushError(_INVALID + problem)
            if head is not None and group.same_series(head, name):
                continue  # the series this group's head holds already: its own
            for sk in group.family_keys(name):
                owner = owner_of(sk)
                if owner is not None and owner != key:
                    raise PushError(
                        f"{_INVALID}collected metric {sk.canonical()} was collected before with the same name "
                        "and label values"
                    )

    def _expiry(self, now: float, ttl_ms: int | None) -> float | None:
        ttl = self.default_ttl_ms if ttl_ms is None else ttl_ms
        return now + ttl / 1000 if ttl else None

    async def push(
        self,
        grouping: dict[str, str],
        families: list[MetricFamily] | Exception,
        *,
        replace: bool,
        ttl_ms: int | None = None,
    ) -> PushGroup:
        """Apply a PUT (``replace``) or POST of parsed ``families`` to the group ``grouping``.

        ``families`` may be the ParseError of a body that did not parse: the group then records
        the failure (CONTRACT §6) and the error is raised.
        """
        key = group_key(grouping)
        method = "PUT" if replace else "POST"
        now = self._clock()
        old = self._heads.get(key)
        try:
            if isinstance(families, Exception):
                raise families
            self._check_reserved(key, families)
            previous = old.shapes if old is not None else {}
            current, backfill, shapes = _normalise(families, grouping, self.accept_timestamps, previous)
            self._check_future(backfill, now)
            new_families = dict(current) if replace or old is None else {**old.families, **current}
            times = {} if replace or old is None else dict(old.family_times)
            for name in current:
                times[name] = now
            times[PUSH_TIME] = now
            times.setdefault(PUSH_FAILURE_TIME, now)
            group = PushGroup(
                key, dict(grouping), new_families, times, now, old.failure_time if old else 0.0,
                self._expiry(now, ttl_ms), old.derived_shapes(new_families) if old else {},
            )
            for name, shape in shapes.items():
                group.shapes[name] = (current[name], shape)
            if old is not None:
                old.base = None  # only the newest step is compared: no chain of past states
                group.base = old
                group.kept = {n for n, sh in shapes.items() if (hit := old.shapes.get(n)) is not None and hit[1] is sh
                              and hit[0] is old.families.get(n)}
                if not replace:
                    group.kept.update(n for n in old.families if n not in current)
            self._check(key, group)
        except (ParseError, PushError) as exc:
            self.stats.count(method, "invalid")
            await self._record_failure(key, grouping, old, now, ttl_ms)
            raise exc from None
        batch = WriteBatch(backfill=bool(backfill))
        self._add_change(batch, old, group, now)
        for name, fam in current.items():
            batch.meta[name] = group.meta(name)
        for fam, _ in backfill:
            batch.meta[fam.name] = MetricMeta(fam.type, fam.help or "", fam.unit)
        for fam, s in backfill:
            batch.samples.append(Sample(SeriesKey.of(s.name, s.labels), s.timestamp_ms or 0, s.value))
        batch.push_upserts.append(group.record())
        await self._write(batch, [(key, group)], method)
        return group

    async def delete(self, grouping: dict[str, str]) -> bool:
        """Remove a group (staleness markers for its series); False if there was none."""
        key = group_key(grouping)
        old = self._heads.get(key)
        if old is None:
            self.stats.count("DELETE", "ok")
            return False
        batch = WriteBatch()
        self._add_change(batch, old, None, self._clock())
        batch.push_deletes.append(key)
        await self._write(batch, [(key, None)], "DELETE")
        return True

    async def wipe(self) -> int:
        """Delete every group in one batch; the number deleted."""
        now = self._clock()
        batch = WriteBatch()
        gone = [self._heads[k] for k in sorted(self._heads)]
        for g in gone:
            self._add_change(batch, g, None, now)
            batch.push_deletes.append(g.key)
        await self._write(batch, [(g.key, None) for g in gone], None)
        return len(gone)

    async def resample(self) -> None:
        """Write every group's current values at now; retire groups whose TTL has passed."""
        now = self._clock()
        ts = int(now * 1000)
        batch = WriteBatch()
        expired = []
        for g in self._heads.values():
            if g.expires_at is not None and g.expires_at <= now:
                expired.append(g)
                self._add_change(batch, g, None, now)
                batch.push_deletes.append(g.key)
            else:
                batch.add_at(ts, *g.columns())
        if not batch.at_keys:
            return
        await self._write(batch, [(g.key, None) for g in expired], None)
        self.stats.expired_groups += len(expired)
        self.stats.resamples += 1

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _add_change(batch: WriteBatch, old: PushGroup | None, new: PushGroup | None, now: float) -> None:
        """Samples at ``now`` for ``new``'s series and staleness markers for ``old``'s that went away."""
        ts = int(now * 1000)
        if new is not None:
            batch.add_at(ts, *new.columns())
            batch.meta[PUSH_TIME] = _PUSH_TIME_META
            batch.meta[PUSH_FAILURE_TIME] = _PUSH_FAILURE_TIME_META
        if old is not None:
            gone = _gone(old, new)
            batch.add_at(ts, gone, [STALE_NAN] * len(gone))

    async def _write(
        self, batch: WriteBatch, changes: list[tuple[str, PushGroup | None]], method: str | None
    ) -> None:
        """Submit ``batch``, move the heads of ``changes`` now, and settle them once it committed or failed.

        The settling runs as a callback, so it happens even if the awaiting request is cancelled.
        """
        self._seq += 1
        seq = self._seq
        done = self._writer.submit_async(batch)
        for key, group in changes:
            self._set_head(key, group, seq)

        def settle(fut: asyncio.Future[WriteResult]) -> None:
            failed = fut.cancelled() or fut.exception() is not None
            for key, group in changes:
                if failed:
                    if self._head_seq.get(key) == seq:  # nothing was built on this change: undo it
                        self._set_head(key, self._groups.get(key), self._committed_seq.get(key, 0))
                elif seq > self._committed_seq.get(key, 0):
                    self._committed_seq[key] = seq
                    if group is None:
                        self._groups.pop(key, None)
                    else:
                        self._groups[key] = group
                if key not in self._heads and key not in self._groups:
                    # Gone and nothing in flight (changes settle in commit order): forget the key.
                    self._head_seq.pop(key, None)
                    self._committed_seq.pop(key, None)
            if method is None:
                return
            if failed:
                exc = None if fut.cancelled() else fut.exception()
                self.stats.count(method, _OUTCOMES.get(type(exc).__name__, "error"))
            else:
                self.stats.count(method, "ok")

        done.add_done_callback(settle)
        await asyncio.shield(done)

    async def _record_failure(
        self, key: str, grouping: dict[str, str], old: PushGroup | None, now: float, ttl_ms: int | None
    ) -> None:
        """Set the group's failure time (creating the group empty if new), durably if possible."""
        if old is None:
            group = PushGroup(key, dict(grouping), {}, {PUSH_TIME: now, PUSH_FAILURE_TIME: now}, 0.0, now,
                              self._expiry(now, ttl_ms))
        else:
            times = dict(old.family_times)
            times[PUSH_FAILURE_TIME] = now
            group = PushGroup(key, old.labels, old.families, times, old.push_time, now, old.expires_at,
                              dict(old.shapes))
        batch = WriteBatch()
        self._add_change(batch, old, group, now)
        batch.push_upserts.append(group.record())
        try:
            await self._write(batch, [(key, group)], None)
        except Exception as exc:  # noqa: BLE001 - the push's own error is what the client gets
            log.warning("could not record the failed push to %s: %s", key, exc)

    # ---------------------------------------------------------------- views
    def families(self) -> list[MetricFamily]:
        """Every group's families merged by name, plus push_time_seconds and push_failure_time_seconds."""
        merged: dict[str, MetricFamily] = {}
        push_time = MetricFamily(PUSH_TIME, MetricType.GAUGE, PUSH_TIME_HELP)
        failure_time = MetricFamily(PUSH_FAILURE_TIME, MetricType.GAUGE, PUSH_FAILURE_TIME_HELP)
        for key in sorted(self._groups):
            g = self._groups[key]
            for name, fam in g.families.items():
                m = merged.get(name)
                if m is None:
                    merged[name] = MetricFamily(name, fam.type, fam.help, fam.unit, list(fam.samples))
                else:
                    m.samples.extend(fam.samples)
                    if not m.help:
                        m.help = fam.help
            labels = g.exposed_labels
            push_time.samples.append(FamilySample(PUSH_TIME, labels, g.push_time))
            failure_time.samples.append(FamilySample(PUSH_FAILURE_TIME, labels, g.failure_time))
        if self._groups:
            merged[PUSH_TIME] = push_time
            merged[PUSH_FAILURE_TIME] = failure_time
        return list(merged.values())
