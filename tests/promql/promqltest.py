"""A small runner for Prometheus' promqltest files (``load 5m`` ... ``eval instant at 50m expr``).

Supported commands: ``load <interval>`` with series lines in expanding notation (``0+10x10``,
``1x4``, ``_``, ``_x3``, ``stale``, ``NaN``, ``Inf``), ``clear``, ``eval instant at <time> <expr>``
followed by the expected samples (``{a="b"} 1`` or a bare scalar), ``eval_ordered`` (order checked)
and ``eval_fail`` (an error expected). Each block of data goes through the real storage writer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser as pp

from mlwatch.model import STALE_NAN, MetricMeta, Sample, SeriesKey, parse_duration_ms
from mlwatch.promql.engine import Engine, EngineOptions
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer

_LOAD = re.compile(r"^load\s+(\S+)$")
_EVAL = re.compile(r"^eval(_fail|_ordered)?\s+instant\s+at\s+(\S+)\s+(.+)$")
_NUM = r"(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN)"
_ITEM = re.compile(rf"^(_|stale|[-+]?{_NUM})(?:([-+])({_NUM}))?x(\d+)$")


def parse_value(text: str) -> float:
    t = text.strip()
    if t in ("Inf", "+Inf"):
        return math.inf
    if t == "-Inf":
        return -math.inf
    if t == "NaN":
        return math.nan
    return float(t)


def expand(values: str) -> Iterator[float | None]:
    """Prometheus' expanding notation; None means no sample at that step."""
    for item in values.split():
        m = _ITEM.match(item)
        if m is None:
            if item == "_":
                yield None
            elif item == "stale":
                yield STALE_NAN
            else:
                yield parse_value(item)
            continue
        start, sign, delta, times = m.groups()
        n = int(times)
        if start == "_":
            for _ in range(n):
                yield None
            continue
        if start == "stale":
            for _ in range(n):
                yield STALE_NAN
            continue
        a = parse_value(start)
        d = parse_value(delta) if delta else 0.0
        if sign == "-":
            d = -d
        for i in range(n + 1):
            yield a + d * i


def parse_series(line: str) -> tuple[SeriesKey, str]:
    brace = line.find("}")
    if brace >= 0:
        sel, rest = line[: brace + 1], line[brace + 1 :]
    else:
        sel, rest = line.split(None, 1)
    if sel.strip() == "{}":
        return SeriesKey(""), rest.strip()
    node = pp.parse(sel)
    labels = {m.name: m.value for m in node.matchers.matchers}
    name = node.name or labels.pop("__name__", "")
    return SeriesKey.of(name, labels), rest.strip()


@dataclass
class EvalCase:
    line: int
    at_ms: int
    expr: str
    fail: bool
    ordered: bool
    expected: list[tuple[dict[str, str] | None, float]] = field(default_factory=list)


class PromqlTest:
    """Runs one file against a fresh database in ``workdir``; :meth:`run` returns the failures."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.db_no = 0
        self.reader: Reader | None = None

    def _new_db(self) -> tuple[Writer, Reader]:
        self.db_no += 1
        url = f"sqlite:///{self.workdir / f'pt{self.db_no}.db'}"
        engine = make_engine(url)
        upgrade(engine)
        writer = Writer(engine, out_of_order_window_ms=0)
        writer.start()
        return writer, Reader(engine)

    def run(self) -> list[str]:
        lines = self.path.read_text().splitlines()
        failures: list[str] = []
        writer, reader = self._new_db()
        i = 0
        try:
            while i < len(lines):
                raw = lines[i].strip()
                i += 1
                if not raw or raw.startswith("#"):
                    continue
                if raw == "clear":
                    writer.stop()
                    writer, reader = self._new_db()
                    continue
                m = _LOAD.match(raw)
                if m:
                    step = parse_duration_ms(m.group(1))
                    samples: list[Sample] = []
                    while i < len(lines) and lines[i].strip() and lines[i][:1].isspace():
                        key, vals = parse_series(lines[i].strip())
                        for k, v in enumerate(expand(vals)):
                            if v is not None:
                                samples.append(Sample(key, k * step, v))
                        i += 1
                    names = {s.key.name: MetricMeta() for s in samples}
                    writer.write_sync(WriteBatch(samples=samples, meta=names, backfill=True))
                    continue
                m = _EVAL.match(raw)
                if not m:
                    failures.append(f"{self.path.name}:{i}: cannot parse {raw!r}")
                    continue
                case = EvalCase(i, parse_duration_ms(m.group(2)), m.group(3), m.group(1) == "_fail",
                                m.group(1) == "_ordered")
                while i < len(lines) and lines[i].strip() and lines[i][:1].isspace():
                    exp = lines[i].strip()
                    i += 1
                    if exp[0].isdigit() or exp[0] in "-+" or exp.startswith(("NaN", "Inf")):
                        case.expected.append((None, parse_value(exp)))
                    else:
                        key, val = parse_series(exp)
                        case.expected.append((key.with_name() if key.name else key.label_dict(), parse_value(val)))
                problem = self.check(Engine(reader, EngineOptions()), case)
                if problem:
                    failures.append(f"{self.path.name}:{case.line}: {case.expr}: {problem}")
        finally:
            writer.stop()
        return failures

    @staticmethod
    def check(engine: Engine, case: EvalCase) -> str | None:
        try:
            res = engine.instant(case.expr, case.at_ms)
        except Exception as exc:  # noqa: BLE001 - reported as the case's outcome
            return None if case.fail else f"unexpected error {type(exc).__name__}: {exc}"
        if case.fail:
            return "expected an error, got a result"
        if res.kind == "scalar":
            got = [(None, res.scalar[1])] if res.scalar else []
        elif res.kind == "vector":
            got = [(dict(lab), float(v[0])) for lab, _, v in res.series]
        else:
            return f"unexpected result type {res.kind}"
        exp = case.expected
        if not case.ordered:
            got = sorted(got, key=lambda x: sorted((x[0] or {}).items()))
            exp = sorted(exp, key=lambda x: sorted((x[0] or {}).items()))
        if len(got) != len(exp):
            return f"expected {exp}, got {got}"
        for (gl, gv), (el, ev) in zip(got, exp, strict=True):
            if gl != el or not close(gv, ev):
                return f"expected {exp}, got {got}"
        return None


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
