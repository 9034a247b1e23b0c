"""Repeated push bodies: only their values are parsed.

Pushers send the same body again and again with new values: the same lines in the same order. After
a body parsed normally, :class:`BodyTemplates` keeps its lines without their values, provided every
sample line is ``<series> <value>`` where ``<series>`` is exactly what the parsed sample formats to
(``name{l="v",...}``, as client libraries write it) and carries no timestamp. The next body to the same
push path whose lines are the same but for the values gets the same families with the new values:
what the parser gives, for a fraction of its cost. Any other body (another line, a value the quick
check does not take, a timestamp) is parsed normally, and its parse errors are the parser's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlwatch.model import FamilySample, MetricFamily, format_series

__all__ = ["BodyTemplates"]

_FLOAT_CHARS = "0123456789.eE+-"  # with these alone, Python's float() accepts what Go's ParseFloat does
_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}
_INF = (math.inf, -math.inf)


def _value(token: str) -> float | None:
    """A sample value as the text format's parser reads it, or None if the quick check cannot tell."""
    if not token:
        return None
    if token.strip(_FLOAT_CHARS):
        return _SPECIAL.get(token)
    try:
        value = float(token)
    except ValueError:
        return None
    return None if value in _INF else value  # out of range: the parser decides (Go refuses it)


@dataclass(slots=True)
class _Template:
    lines: list[str]  # comment and blank lines as they are; sample lines up to their value
    samples: list[bool]  # which lines are sample lines
    families: list[tuple[MetricFamily, list[FamilySample]]]  # their samples in sample-line order


class BodyTemplates:
    """The last template-able body of each push path (bounded: starts over past ``limit`` paths)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._by_path: dict[str, _Template] = {}

    def parse(self, path: str, text: str) -> list[MetricFamily] | None:
        """The families of ``text`` if it repeats the template of ``path`` with other values, else None."""
        tpl = self._by_path.get(path)
        if tpl is None:
            return None
        lines = text.split("\n")
        if len(lines) != len(tpl.lines):
            return None
        values: list[float] = []
        for line, head, sample in zip(lines, tpl.lines, tpl.samples, strict=True):
            if not sample:
                if line != head:
                    return None
                continue
            if not line.startswith(head):
                return None
            value = _value(line[len(head) :])
            if value is None:
                return None
            values.append(value)
        out = []
        it = iter(values)
        for fam, samples in tpl.families:
            out.append(MetricFamily(fam.name, fam.type, fam.help, fam.unit,
                                    [FamilySample(s.name, s.labels, next(it)) for s in samples]))
        return out

    def learn(self, path: str, text: str, families: list[MetricFamily]) -> None:
        """Keep ``text`` (which parsed as ``families``) as the template of ``path``, if it can be one."""
        tpl = self._template(text, families)
        if tpl is None:
            self._by_path.pop(path, None)
            return
        if len(self._by_path) >= self.limit and path not in self._by_path:
            self._by_path.clear()
        self._by_path[path] = tpl

    @staticmethod
    def _template(text: str, families: list[MetricFamily]) -> _Template | None:
        flat = [s for fam in families for s in fam.samples]
        lines = text.split("\n")
        heads: list[str] = []
        flags: list[bool] = []
        k = 0
        for line in lines:
            if k < len(flat):
                s = flat[k]
                head = format_series(s.name, s.labels.items()) + " "
                if line.startswith(head):
                    value = _value(line[len(head) :])
                    if s.timestamp_ms is not None or value is None or not _same(value, s.value):
                        return None
                    heads.append(head)
                    flags.append(True)
                    k += 1
                    continue
            if line.lstrip(" \t")[:1] not in ("#", ""):
                return None  # a sample line in another form
            heads.append(line)
            flags.append(False)
        if k != len(flat):
            return None
        return _Template(heads, flags, [(fam, list(fam.samples)) for fam in families])


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
