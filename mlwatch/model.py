"""Small shared types: series keys, samples, metric metadata, matchers, time helpers.

Times inside mlwatch are integer milliseconds since the Unix epoch, as in Prometheus.
"""

from __future__ import annotations

import math
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mlwatch.regex import compile_regex

Clock = Callable[[], float]
"""Returns the current time in seconds (``time.time`` in production, a fake in tests)."""

LabelPairs = tuple[tuple[str, str], ...]

# Prometheus marks a series as stale with this exact NaN bit pattern (value.StaleNaN).
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")  # \Z: "$" would accept a trailing newline
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")


def is_stale_nan(value: float) -> bool:
    """True for Prometheus' staleness marker (and only that NaN)."""
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


class MetricType(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    UNTYPED = "untyped"


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """Identity of a series: metric name plus labels sorted by name (``__name__`` excluded)."""

    name: str
    labels: LabelPairs = ()

    @classmethod
    def of(cls, name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> SeriesKey:
        items = labels.items() if isinstance(labels, Mapping) else labels
        return cls(name, tuple(sorted((k, v) for k, v in items if v != "" and k != "__name__")))

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def with_name(self) -> dict[str, str]:
        """All labels including ``__name__``, as PromQL matchers see them."""
        d = {"__name__": self.name}
        d.update(self.labels)
        return d

    def canonical(self) -> str:
        """A stable text form, used as the unique key in the series table."""
        return format_series(self.name, self.labels)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_series(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """``name{a="1",b="2"}`` with the text exposition format's escaping."""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}" if inner else name


@dataclass(frozen=True, slots=True)
class MetricMeta:
    """TYPE, HELP and UNIT of a metric family."""

    type: MetricType = MetricType.UNTYPED
    help: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    key: SeriesKey
    ts: int  # milliseconds
    value: float


class MatchOp(str, Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    """A label matcher; regexes are anchored as in Prometheus."""

    name: str
    op: MatchOp
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)  # an RE2 pattern (mlwatch.regex)

    @classmethod
    def make(cls, name: str, op: str | MatchOp, value: str) -> Matcher:
        op = MatchOp(op)
        # Prometheus 2.x anchors the regex and, like Go, lets "." stop at a newline (no DOTALL).
        rx = compile_regex(value) if op in (MatchOp.RE, MatchOp.NRE) else None
        return cls(name, op, value, rx)

    def matches(self, value: str) -> bool:
        if self.op is MatchOp.EQ:
            return value == self.value
        if self.op is MatchOp.NE:
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if self.op is MatchOp.RE else not hit


def matches_all(matchers: Iterable[Matcher], key: SeriesKey) -> bool:
    labels = key.with_name()
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


# ---------------------------------------------------------------- time helpers

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def parse_duration_ms(text: str) -> int:
    """Parse a Prometheus duration (``30s``, ``5m``, ``1h30m``, ``7d``, ``250ms``) into milliseconds."""
    m = _DURATION_RE.match(text.strip()) if text else None
    if not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r} (use Prometheus syntax such as 30s, 5m, 1h30m, 7d)")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if g)


def format_duration_ms(ms: int) -> str:
    """The inverse of :func:`parse_duration_ms`, in Prometheus' canonical form."""
    if ms == 0:
        return "0s"
    out = []
    for suffix, unit in zip(("y", "w", "d", "h", "m", "s", "ms"), _DURATION_UNITS_MS, strict=True):
        n, ms = divmod(ms, unit)
        if n:
            out.append(f"{n}{suffix}")
    return "".join(out)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(text: str | int) -> int:
    """Parse a byte size such as ``10MiB``, ``2GB`` or ``4096``."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r} (use e.g. 512KiB, 10MiB, 2GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").lower()])


def now_ms(clock: Clock = time.time) -> int:
    return int(clock() * 1000)


# ---------------------------------------------------------------- exposition model


@dataclass(slots=True)
class FamilySample:
    """One sample line of a metric family: ``name`` is the full sample name (``x_bucket``, ``x_sum`` ...)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(slots=True)
class MetricFamily:
    """A parsed metric family, as the text and protobuf exposition formats describe one."""

    name: str
    type: MetricType = MetricType.UNTYPED
    help: str | None = None
    unit: str = ""
    samples: list[FamilySample] = field(default_factory=list)
