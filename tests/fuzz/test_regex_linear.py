"""User regexes run on RE2: a pattern that makes a backtracking engine take minutes answers at once, in every
place a user's regex meets a label value (PromQL matchers and label_replace, relabelling, routes, silences)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlwatch.config.parts import RelabelConfig
from mlwatch.model import Matcher
from mlwatch.notify.router import _matches
from mlwatch.notify.silences import SilenceError, make_matcher
from mlwatch.promql.functions import _label_replace
from mlwatch.promql.values import InstantVector, make_labels
from mlwatch.regex import RegexError, compile_regex
from mlwatch.sources.relabel import Relabeler

EVIL = "(a+)+b"
VALUE = "a" * 5000  # Python's re: 2 s at 24 letters, about 35 minutes at 34


def quick(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def test_promql_matcher() -> None:
    m = Matcher.make("x", "=~", EVIL)
    assert quick(lambda: m.matches(VALUE)) < 0.5
    assert not m.matches(VALUE) and m.matches("aab")
    assert Matcher.make("x", "!~", EVIL).matches(VALUE)


def test_label_replace() -> None:
    vec = InstantVector([make_labels({"x": VALUE})], np.array([[1.0]]), np.array([[True]]))
    out = None

    def run() -> None:
        nonlocal out
        out = _label_replace(vec, "y", "$2", "x", "(a+)+b|(a*)")

    assert quick(run) < 0.5
    assert out is not None and dict(out.labels[0])["y"] == VALUE


def test_relabel_route_and_silence() -> None:
    relabeler = Relabeler([RelabelConfig.model_validate({"source_labels": ["x"], "regex": EVIL, "action": "drop"})])
    assert quick(lambda: relabeler.apply({"__name__": "m", "x": VALUE})) < 0.5
    assert quick(lambda: _matches({"x": VALUE}, {}, {"x": EVIL})) < 0.5
    silence_matcher = make_matcher("x", EVIL, True, True)
    assert quick(lambda: silence_matcher.matches({"x": VALUE})) < 0.5


@pytest.mark.parametrize("pattern", ["(?=a)", "(a)\\1", "(unclosed"])
def test_what_re2_refuses_is_a_clear_error(pattern: str) -> None:
    with pytest.raises(RegexError, match="error parsing regexp"):
        compile_regex(pattern)
    with pytest.raises(SilenceError, match="invalid regex"):
        make_matcher("x", pattern, True, True)


def test_re2_syntax_that_prometheus_accepts() -> None:
    assert Matcher.make("x", "=~", "[[:alpha:]]+").matches("abc")
    assert Matcher.make("x", "=~", "(?i)ABC").matches("abc")
    assert not Matcher.make("x", "=~", "a.c").matches("a\nc")  # Prometheus 2.x: "." stops at a newline
