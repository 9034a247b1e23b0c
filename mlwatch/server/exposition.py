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

Families passed to :func:`render` must be *normalised* (see :func:`mlwatch.sources.push.normalise`):
each histogram/summary series given as ``[buckets or quantiles...], _sum, _count``, which is how
push groups keep them; :func:`mlwatch.sources.push.exposed_samples` gives the order.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlwatch.model import MetricFamily, format_series
from mlwatch.sources.push import exposed_samples
from mlwatch.sources.textparse import format_float

__all__ = ["render", "render_family"]


def _escape_help(h: str) -> str:
    if "\\" in h or "\n" in h:
        return h.replace("\\", "\\\\").replace("\n", "\\n")
    return h


def render_family(family: MetricFamily, out: list[str]) -> None:
    """Append the text of one normalised family to ``out``."""
    if not family.samples:
        return  # client_golang drops families without metrics
    if family.help:
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
    out.append(f"# TYPE {family.name} {family.type.value}\n")
    for s in exposed_samples(family):
        ts = "" if s.timestamp_ms is None else f" {s.timestamp_ms}"
        out.append(f"{format_series(s.name, sorted(s.labels.items()))} {format_float(s.value)}{ts}\n")


def render(families: Iterable[MetricFamily]) -> bytes:
    """Text format 0.0.4 of ``families`` (normalised), sorted by family name, as UTF-8 bytes."""
    out: list[str] = []
    for fam in sorted(families, key=lambda f: f.name):
        render_family(fam, out)
    return "".join(out).encode()
