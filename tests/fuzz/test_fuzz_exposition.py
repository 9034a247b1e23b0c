"""Hostile exposition text (0.0.4 and OpenMetrics): families or a ParseError naming the line, in bounded
time and memory. Pushed bodies and scraped targets both reach these parsers."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlwatch.errors import ParseError
from mlwatch.model import MetricFamily
from mlwatch.sources.openmetrics import parse_openmetrics
from mlwatch.sources.textparse import TextParser, parse_text

PIECES = [
    "{", "}", "=", '"', ",", "\\", " ", "\t", "\n", "\r", "#", "# TYPE ", "# HELP ", "# UNIT ", "# EOF", "m",
    "m_total", "m_bucket", "m_created", "le", "quantile", "counter", "gauge", "histogram", "summary", "untyped",
    "info", "stateset", "gaugehistogram", "unknown", "1", "-1", "1e3", "1e400", "NaN", "+Inf", "-Inf", "0x1",
    "1_000", "9" * 30, "\u00e9", "\x00", "\ufeff", 'a="b"', '{a="1"}', '{le="+Inf"}', " 123", " 1.5", " # {t=\"1\"} 1",
    "__name__", "\\n", '\\"', "\\\\",
]  # fmt: skip
exposition = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
bodies = st.one_of(exposition, st.text(max_size=200), st.binary(max_size=200), exposition.map(str.encode))

PARSERS: dict[str, Callable[[bytes | str], list[MetricFamily]]] = {
    "text": parse_text,
    "text-cached": TextParser(cache_limit=1000).parse,  # the scrape/push parser keeps a cache across bodies
    "openmetrics": parse_openmetrics,
}


def parse_or_refuse(parse: Callable[[bytes | str], list[MetricFamily]], body: bytes | str) -> list[MetricFamily] | None:
    try:
        families = parse(body)
    except ParseError as exc:
        assert exc.message.strip()
        assert exc.line >= 0
        return None
    for fam in families:
        assert isinstance(fam, MetricFamily)
        for s in fam.samples:
            assert isinstance(s.value, float) and isinstance(s.labels, dict)
            assert s.timestamp_ms is None or -(2**63) <= s.timestamp_ms < 2**63
    return families


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(bodies)
@example(b"a 1\n\x80")  # parse_openmetrics raised UnicodeDecodeError instead of a ParseError
@example("m 1 1e400\n# EOF\n")  # parse_openmetrics raised OverflowError for a timestamp beyond float range
def test_any_body_parses_or_is_refused(body: bytes | str) -> None:
    for parse in PARSERS.values():
        parse_or_refuse(parse, body)


@FAST
@given(exposition)
def test_openmetrics_bodies_with_eof(body: str) -> None:
    parse_or_refuse(parse_openmetrics, body + "\n# EOF\n")


@FAST
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=30).map("".join), st.integers(0, 50))
def test_the_cache_does_not_change_answers(body: str, cut: int) -> None:
    """A parser that has seen a prefix of a body before answers as a fresh one does."""
    cached = TextParser(cache_limit=100)
    parse_or_refuse(cached.parse, body[:cut])
    fresh = parse_or_refuse(parse_text, body)
    again = parse_or_refuse(cached.parse, body)
    assert (fresh is None) == (again is None)
    if fresh is not None and again is not None:
        assert [(f.name, f.type, f.samples) for f in fresh] == [(f.name, f.type, f.samples) for f in again]


N = 200_000
PATHOLOGICAL = {
    "unclosed braces": "m{" * N,
    "many labels": "m{" + ",".join(f'l{i}="v"' for i in range(N // 4)) + "} 1\n",
    "a 5 MB label value": 'm{a="' + "x" * 5_000_000 + '"} 1\n',
    "a 5 MB metric name": "m" * 5_000_000 + " 1\n",
    "runs of quotes": 'm{a="' + '"' * N + "} 1\n",
    "an unterminated value": 'm{a="' + '\\"' * N + "\n",
    "blank runs": "m" + " " * N + "\n",
    "comment lines": "#\n" * N,
    "a long value": "m " + "1" * 1_000_000 + "\n",
    "a long exponent": "m 1e" + "1" * 1_000_000 + "\n",
    "commas": "m{" + "," * N + "} 1\n",
    "brace pairs": "m{}" * N + " 1\n",
    "a huge HELP": "# HELP m " + "x" * 5_000_000 + "\n",
}


CASES = [(parser, name) for parser in PARSERS for name in PATHOLOGICAL]


@pytest.mark.parametrize(("parser", "name"), CASES)
def test_pathological_bodies_cost_linear_time_and_memory(parser: str, name: str) -> None:
    body = PATHOLOGICAL[name] + ("# EOF\n" if parser == "openmetrics" else "")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parse_or_refuse(PARSERS[parser], body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Linear: well under a second on an idle machine (tracemalloc slows Python ~3x); generous for CI load.
    assert elapsed < 15, f"{elapsed:.1f}s"
    # The openmetrics label scanner once kept ~150 bytes of regex backtracking state per input byte.
    assert peak < 40 * len(body) + (4 << 20), f"peak {peak / len(body):.0f}x the body"


def test_text_huge_timestamp_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="timestamp"):
        parse_text("m 1 " + "1" * 5000 + "\n")


def test_text_escape_runs_cost_linear_memory() -> None:
    body = 'm{a="' + "\\\\" * N + '"} 1\n'
    tracemalloc.start()
    try:
        parse_text(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * len(body) + (4 << 20), f"peak {peak / len(body):.0f}x the body"


def test_openmetrics_errors_name_the_line() -> None:
    cases = {
        b'a 1\nb{x="\xff"} 2\n# EOF\n': (2, "invalid UTF-8"),
        "a 1\nb 1 1e400\n# EOF\n": (2, "invalid timestamp"),
        'a 1\nb{x="y\\"} 1\n# EOF\n': (2, "unterminated label value"),
        'a 1\nb{x="y"\n# EOF\n': (2, "unterminated label set"),
        "a 1\n": (1, "must end with '# EOF'"),
    }
    for body, (line, problem) in cases.items():
        with pytest.raises(ParseError, match=problem) as info:
            parse_openmetrics(body)
        assert info.value.line == line, body
