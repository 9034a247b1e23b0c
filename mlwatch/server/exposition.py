"""Render metric families as Prometheus text format 0.0.4, byte for byte as Pushgateway 1.5 does.

Pushgateway serves ``/metrics`` through client_golang's gatherer and ``expfmt.MetricFamilyToText``;
what that means in detail (checked against a real Pushgateway 1.5.1):

* families sorted by name; ``# HELP`` only when the family has a help text, then ``# TYPE``;
* series sorted as client_golang's ``metricSorter`` does: fewer labels first, then label values
  compared pairwise in label-name order (``le``/``quantile`` are not labels there), stable;
* a histogram series prints its buckets in pushed order, then a ``+Inf`` bucket (equal to the
  count) if none was pushed, then ``_sum`` and ``_count``;
* labels sorted by name, values escaped (``\\``, ``"``, newline), HELP escaped (``\\``, newline);
* floats as Go's ``strconv.FormatFloat(f, 'g', -1, 64)``, except 0 (also -0), 1 and -1 which
  print as ``0``, ``1``, ``-1``; infinities as ``+Inf``/``-Inf``; label values of ``le`` and
  ``quantile`` are printed the same way.

Families passed to :func:`render` must be *normalised*: each histogram/summary series given as
``[buckets or quantiles...], _sum, _count`` (see :mod:`mlwatch.sources.push`), which is how
parsed pushes are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from mlwatch.model import FamilySample, MetricFamily, MetricType

__all__ = ["exposed_samples", "format_float", "go_float", "render", "series_sort_key"]


def go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 64)`` (also ``fmt.Sprint`` of a float64)."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    r = repr(value)
    mag = -value if value < 0 else value
    if "e" not in r and (1e-4 <= mag < 1e6 or value == 0):
        # Python's repr and Go's %g agree here, except for the ".0" Python adds to integers.
        return r[:-2] if r.endswith(".0") else r
    # Shortest round-trip digits are identical in Python and Go; only the layout differs.
    neg = r.startswith("-")
    body = r[1:] if neg else r
    if "e" in body:
        mant, exp_s = body.split("e")
        digits = mant.replace(".", "")
        dp = int(exp_s) + 1
    else:
        whole, _, frac = body.partition(".")
        if whole == "0":
            stripped = frac.lstrip("0")
            dp = -(len(frac) - len(stripped))
            digits = stripped
        else:
            digits = whole + frac
            dp = len(whole)
    digits = digits.rstrip("0") or "0"
    exp = dp - 1
    sign = "-" if neg else ""
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def format_float(value: float) -> str:
    """A sample value as expfmt's ``writeFloat`` prints it."""
    if value == 0:
        return "0"
    if value == 1:
        return "1"
    if value == -1:
        return "-1"
    return go_float(value)


def _escape_value(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


def _escape_help(h: str) -> str:
    if "\\" in h or "\n" in h:
        return h.replace("\\", "\\\\").replace("\n", "\\n")
    return h


_SPECIAL = {MetricType.HISTOGRAM: "le", MetricType.SUMMARY: "quantile"}


def series_sort_key(labels: dict[str, str], special: str | None) -> tuple[int, tuple[str, ...]]:
    """client_golang's metricSorter order for one series (``special`` is le/quantile, not a label)."""
    names = sorted(k for k in labels if k != special)
    return (len(names), tuple(labels[k] for k in names))


def _metrics_of(family: MetricFamily) -> list[list[FamilySample]]:
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


def exposed_samples(family: MetricFamily) -> Iterator[FamilySample]:
    """Every sample ``family`` exposes, in exposition order (the implied ``+Inf`` bucket included)."""
    special = _SPECIAL.get(family.type)
    metrics = _metrics_of(family)
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


def _render_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    parts = [f'{k}="{_escape_value(labels[k])}"' for k in sorted(labels)]
    return "{" + ",".join(parts) + "}"


def render_family(family: MetricFamily, out: list[str]) -> None:
    if not family.samples:
        return  # client_golang drops families without metrics
    if family.help:
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
    out.append(f"# TYPE {family.name} {family.type.value}\n")
    for s in exposed_samples(family):
        text = _render_labels(s.labels)
        ts = "" if s.timestamp_ms is None else f" {s.timestamp_ms}"
        out.append(f"{s.name}{text} {format_float(s.value)}{ts}\n")


def render(families: Iterable[MetricFamily]) -> bytes:
    """Text format 0.0.4 of ``families`` (normalised), sorted by family name, as UTF-8 bytes."""
    out: list[str] = []
    for fam in sorted(families, key=lambda f: f.name):
        render_family(fam, out)
    return "".join(out).encode()
