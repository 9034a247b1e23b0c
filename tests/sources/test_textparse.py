"""The text format parser: Pushgateway's accept/reject decisions, prometheus_client agreement, fuzzing."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from mlwatch.errors import ParseError
from mlwatch.model import MetricType
from mlwatch.sources.textparse import TextParser, format_float, go_float, parse_go_float, parse_text


def samples(text: str | bytes) -> list[tuple[str, str, dict[str, str], float, int | None]]:
    return [(f.type.value, s.name, s.labels, s.value, s.timestamp_ms) for f in parse_text(text) for s in f.samples]


# Decisions of a real Pushgateway 1.5.1 (PUT of each body; the parse step only).
ACCEPTED = {
    'ai_model_accuracy {model="my-model"} 0.93\n': [("untyped", "ai_model_accuracy", {"model": "my-model"}, 0.93, None)],
    'x{a="1",} 1\n': [("untyped", "x", {"a": "1"}, 1.0, None)],
    'x{a="1" , b="2"} 1\n': [("untyped", "x", {"a": "1", "b": "2"}, 1.0, None)],
    'x{ a = "1" } 1\n': [("untyped", "x", {"a": "1"}, 1.0, None)],
    'x{a="\\\\ \\" \\n"} 1\n': [("untyped", "x", {"a": '\\ " \n'}, 1.0, None)],
    'x{a="}{,="} 1\n': [("untyped", "x", {"a": "}{,="}, 1.0, None)],
    'x{a="1"}1\n': [("untyped", "x", {"a": "1"}, 1.0, None)],
    "x{} 1\n": [("untyped", "x", {}, 1.0, None)],
    "x {} 1\n": [("untyped", "x", {}, 1.0, None)],
    "x\t1\n": [("untyped", "x", {}, 1.0, None)],
    " x 1\n": [("untyped", "x", {}, 1.0, None)],
    "\n\nx 1\n\n": [("untyped", "x", {}, 1.0, None)],
    "x 1\n  ": [("untyped", "x", {}, 1.0, None)],
    "x 1 +12\n": [("untyped", "x", {}, 1.0, 12)],
    "x 1  -12\n": [("untyped", "x", {}, 1.0, -12)],
    ":x 1\n": [("untyped", ":x", {}, 1.0, None)],
    "x .5\n": [("untyped", "x", {}, 0.5, None)],
    "x 5.\n": [("untyped", "x", {}, 5.0, None)],
    "x 1E3\n": [("untyped", "x", {}, 1000.0, None)],
    "x +1\n": [("untyped", "x", {}, 1.0, None)],
    "x 00012\n": [("untyped", "x", {}, 12.0, None)],
    "x 1e-500\n": [("untyped", "x", {}, 0.0, None)],
    "x Inf\n": [("untyped", "x", {}, math.inf, None)],
    "x -infinity\n": [("untyped", "x", {}, -math.inf, None)],
    "# random comment\n#\n#TYPE x Gauge\nx 1\n": [("gauge", "x", {}, 1.0, None)],
    'x{a="é"} 1\n': [("untyped", "x", {"a": "é"}, 1.0, None)],
    "": [],
    "# TYPE x untyped\n# HELP x\n": [],
    "# TYPE x\n# TYPE x gauge\nx 1\n": [("gauge", "x", {}, 1.0, None)],  # a bare name is a plain comment
    "# HELP x \n# HELP x foo\n# TYPE x\nx 1\n": [("untyped", "x", {}, 1.0, None)],
    "  # TYPE x gauge\nx 1\n": [("gauge", "x", {}, 1.0, None)],
    '# TYPE x summary\nx_sum{quantile="0.5"} 1\n': [("summary", "x_sum", {"quantile": "0.5"}, 1.0, None)],
    # Spread samples merge into one family, as expfmt does.
    "a 1\nb 2\na{k=\"v\"} 3\n": [("untyped", "a", {}, 1.0, None), ("untyped", "a", {"k": "v"}, 3.0, None),
                                ("untyped", "b", {}, 2.0, None)],
}

REJECTED = {
    'x{__name__="y"} 1\n': (1, 'label name "__name__" is reserved'),
    'x{a="\\t"} 1\n': (1, "invalid escape sequence '\\t'"),
    "x 1_000\n": (1, "expected float as value, got '1_000'"),
    "x 0x1p3\n": (1, "expected float as value"),
    "x +nan\n": (1, "expected float as value"),
    "x 1e500\n": (1, "expected float as value"),
    "x  1  \n": (1, "expected integer as timestamp, got ''"),
    "x 1 \n": (1, "expected integer as timestamp"),
    "x 1": (1, "unexpected end of input stream"),
    "x 1\n# c": (2, "unexpected end of input stream"),
    "x 1\r\n": (1, "expected float as value, got '1\\r'"),
    "x 1 1.5\n": (1, "expected integer as timestamp, got '1.5'"),
    "x 1 1 2\n": (1, "spurious string after timestamp"),
    "x 1 12 \n": (1, "spurious string after timestamp"),
    "x 1 99999999999999999999\n": (1, "out of range"),
    "# TYPE x counter\n# TYPE x gauge\nx 1\n": (2, 'second TYPE line for metric name "x"'),
    "x 1\n# TYPE x gauge\n": (2, "TYPE reported after samples"),
    "# TYPE x foo\nx 1\n": (1, 'unknown metric type "foo"'),
    "# TYPE  x  gauge \nx 1\n": (1, 'unknown metric type "gauge "'),
    "# HELP x a\n# HELP x b\nx 1\n": (2, 'second HELP line for metric name "x"'),
    "# HELP x hi \\ there\nx 1\n": (1, "invalid escape sequence"),
    '# HELP x a \\"\n': (1, "invalid escape sequence"),
    '# TYPE x summary\nx{quantile="abc"} 2\n': (2, "expected float as value for 'quantile' label"),
    '# TYPE x histogram\nx_bucket{le="abc"} 2\n': (2, "expected float as value for 'le' label"),
    '# TYPE x histogram\nx_sum{le="z"} 2\n': (2, "expected float as value for 'le' label"),
    "1x 1\n": (1, "invalid metric name"),
    "x-y 1\n": (1, "invalid metric name"),
    'x{1a="1"} 1\n': (1, 'invalid label name for metric "x"'),
    "x{a=1} 1\n": (1, "expected '\"' at start of label value"),
    'x{a="1"\n': (1, "expected ',' or '}' after label value"),
    'x{a="1\n': (1, "unexpected end of label value"),
    'x{a="1" b="2"} 1\n': (1, "expected ',' or '}' after label value"),
    'x{a="1",a="2"} 1\n': (1, 'duplicate label names for metric "x"'),
    "x\n": (1, "expected float as value, got ''"),
    "ok 1\nx \n": (2, "expected float as value"),
    "# HELP 1x a\n": (1, "invalid metric name"),
    # Shapes near the fast path's layout.
    "bad{ 1\n": (1, "label"),
    'x{a="1" 1\n': (1, ""),
    'x{a="1"}} 1\n': (1, ""),
    "x} 1\n": (1, ""),
    '{a="1"} 1\n': (1, "invalid metric name"),
    'x{a="1"}{b="2"} 1\n': (1, ""),
    'x{"1"} 1\n': (1, "invalid label name"),
    'x{a=""1"} 1\n': (1, ""),
    'x{a="1",,b="2"} 1\n': (1, "invalid label name"),
    "x{,} 1\n": (1, "invalid label name"),
    'x{a="1"}, 1\n': (1, "expected float as value"),
    "x 1 1 \n": (1, "spurious string"),
    "x 1 -\n": (1, "expected integer as timestamp"),
    "x 1 ١٢\n": (1, "expected integer as timestamp"),
    "x ١\n": (1, "expected float as value"),
}


@pytest.mark.parametrize("body", list(ACCEPTED))
def test_accepted_like_pushgateway(body: str) -> None:
    assert samples(body) == ACCEPTED[body]


@pytest.mark.parametrize("body", list(REJECTED))
def test_rejected_like_pushgateway(body: str) -> None:
    line, message = REJECTED[body]
    with pytest.raises(ParseError) as err:
        parse_text(body)
    assert err.value.line == line
    assert message in err.value.message


def test_invalid_utf8_names_its_line() -> None:
    with pytest.raises(ParseError) as err:
        parse_text(b'ok 1\nx{a="\xff"} 1\n')
    assert err.value.line == 2 and "UTF-8" in err.value.message


def test_help_type_and_family_assembly() -> None:
    fams = parse_text(
        "# HELP h Latency\\nseconds \\\\ here \n# TYPE h histogram\n"
        'h_bucket{le="0.1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.3\nh_count 2\n'
        "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 4\n"
        "# TYPE c_total counter\nc_total 7\nc_total_count 1\n"
    )
    assert [(f.name, f.type, f.help, [s.name for s in f.samples]) for f in fams] == [
        ("h", MetricType.HISTOGRAM, "Latency\nseconds \\ here ", ["h_bucket", "h_bucket", "h_sum", "h_count"]),
        ("s", MetricType.SUMMARY, None, ["s", "s_sum", "s_count"]),
        ("c_total", MetricType.COUNTER, None, ["c_total"]),
        ("c_total_count", MetricType.UNTYPED, None, ["c_total_count"]),
    ]


def test_sum_before_type_is_its_own_family() -> None:
    fams = parse_text("x_count 1\n# TYPE x histogram\nx_count 2\nx_sum 3\n")
    assert [(f.name, f.type, len(f.samples)) for f in fams] == [
        ("x_count", MetricType.UNTYPED, 2), ("x", MetricType.HISTOGRAM, 1)
    ]


def test_huge_body() -> None:
    body = "".join(f'm{{i="{i}",model="m{i % 7}"}} {i}.5\n' for i in range(50_000))
    (fam,) = parse_text(body.encode())
    assert len(fam.samples) == 50_000 and fam.samples[-1].value == 49_999.5


def test_long_line_and_many_labels() -> None:
    labels = ",".join(f'l{i}="{"v" * 100}"' for i in range(500))
    (fam,) = parse_text(f"m{{{labels}}} 1\n")
    assert len(fam.samples[0].labels) == 500
    with pytest.raises(ParseError):
        parse_text("m{" + 'a="' + "x" * 100_000 + "\n")


# ---------------------------------------------------------------- Go float formatting

@pytest.mark.parametrize(
    ("value", "text"),
    [(1e10, "1e+10"), (123456789012.0, "1.23456789012e+11"), (0.1, "0.1"), (1e-07, "1e-07"),
     (1.5e21, "1.5e+21"), (1234567.0, "1.234567e+06"), (123456.0, "123456"), (0.0001, "0.0001"),
     (0.00001, "1e-05"), (1795619266.5042064, "1.7956192665042064e+09"), (-2.5e-05, "-2.5e-05"),
     (5e-324, "5e-324"), (2.0**64, "1.8446744073709552e+19"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
     (math.nan, "NaN"), (-0.0, "-0"), (100.0, "100"), (12345.678, "12345.678")],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


def test_format_float_special_cases() -> None:
    assert [format_float(v) for v in (0.0, -0.0, 1.0, -1.0, 2.0)] == ["0", "0", "1", "-1", "2"]


@given(st.floats(allow_nan=False))
def test_go_float_round_trips(value: float) -> None:
    assert parse_go_float(go_float(value)) == value


# ---------------------------------------------------------------- agreement with prometheus_client

_name = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True).filter(
    lambda n: not n.endswith(("_total", "_sum", "_count", "_bucket", "_created", "_info"))
)
_label_name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in ("le", "quantile") and not n.startswith("__")
)
_label_value = st.text(st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from('\\"\n{},= '), max_size=12)
_value = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**15), 10**15).map(float)
_help = st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"], blacklist_characters='"#\\'),
                min_size=1, max_size=20)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_value(v: float) -> str:
    return go_float(v)


@st.composite
def _body(draw: st.DrawFn) -> str:
    names = draw(st.lists(_name, min_size=1, max_size=5, unique=True))
    lines: list[str] = []
    for name in names:
        kind = draw(st.sampled_from(["untyped", "gauge", "counter", "histogram", "summary", "bare"]))
        fam = name + "_total" if kind == "counter" else name
        if kind != "bare" and draw(st.booleans()):
            lines.append(f"# HELP {fam} {draw(_help)}")
        if kind != "bare":
            lines.append(f"# TYPE {fam} {kind}")
        for _ in range(draw(st.integers(1, 3))):
            labels = draw(st.dictionaries(_label_name, _label_value, max_size=3))
            lbl = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            sep = draw(st.sampled_from([" ", "\t", "  "]))
            ts = draw(st.none() | st.integers(-(10**12), 10**13))
            tail = "" if ts is None else f" {ts}"
            if kind == "histogram":
                for le in ("0.5", "+Inf"):
                    extra = ",".join(filter(None, [lbl, f'le="{le}"']))
                    lines.append(f"{fam}_bucket{{{extra}}}{sep}{draw(st.integers(0, 99))}{tail}")
                lines.append(f"{fam}_sum{{{lbl}}}{sep}{_fmt_value(draw(_value))}{tail}")
                lines.append(f"{fam}_count{{{lbl}}}{sep}{draw(st.integers(0, 99))}{tail}")
            elif kind == "summary":
                extra = ",".join(filter(None, [lbl, 'quantile="0.9"']))
                lines.append(f"{fam}{{{extra}}}{sep}{_fmt_value(draw(_value))}{tail}")
                lines.append(f"{fam}_sum{{{lbl}}}{sep}{_fmt_value(draw(_value))}{tail}")
                lines.append(f"{fam}_count{{{lbl}}}{sep}{draw(st.integers(0, 99))}{tail}")
            else:
                space = draw(st.sampled_from(["", " "]))
                lines.append(f"{fam}{space}{{{lbl}}}{sep}{_fmt_value(draw(_value))}{tail}")
    return "\n".join(lines) + "\n"


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_body())
def test_agrees_with_prometheus_client(body: str) -> None:
    ours = [
        (s.name, s.labels, s.value, None if s.timestamp_ms is None else s.timestamp_ms / 1000,
         f.type.value, f.help or "")
        for f in parse_text(body) for s in f.samples
    ]
    theirs = [
        (s.name, s.labels, float(s.value), s.timestamp, "untyped" if m.type == "unknown" else m.type,
         m.documentation)
        for m in text_string_to_metric_families(body) for s in m.samples
    ]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a[0:2] == b[0:2] and _same(a[2], b[2]) and a[3:] == b[3:], (a, b)


# ---------------------------------------------------------------- hostile input

_alphabet = st.sampled_from(list('x_:{}"=,\\ \t\n#+-.0123456789eEInfNa') + ["HELP", "TYPE", "le", "quantile"])


@settings(max_examples=400)
@given(st.lists(_alphabet, max_size=60).map("".join))
def test_structured_garbage_only_raises_parse_error(text: str) -> None:
    try:
        parse_text(text)
    except ParseError as exc:
        assert exc.line >= 1


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    try:
        parse_text(data)
    except ParseError:
        pass


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(_body(), st.data())
def test_mutated_valid_bodies_only_raise_parse_error(body: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(body)))
    cut = data.draw(st.integers(0, 5))
    insert = data.draw(st.text(max_size=3))
    try:
        parse_text(body[:pos] + insert + body[pos + cut:])
    except ParseError:
        pass


def test_reused_parser_gives_the_same_result() -> None:
    parser = TextParser()
    body = '# TYPE m gauge\nm{a="1",b="x y"} 1\nm{a="2"} 2 1700000000000\nn 3\nm {a="3"} NaN\n'
    first = parser.parse(body)
    again = parser.parse(body.replace(" 1\n", " 5\n"))
    assert [(s.name, s.labels, s.value, s.timestamp_ms) for f in again for s in f.samples][1:] == [
        (s.name, s.labels, s.value, s.timestamp_ms) for f in first for s in f.samples
    ][1:]
    assert again[0].samples[0].value == 5.0
    with pytest.raises(ParseError):
        parser.parse('m{a="1",b="x y"} 1x\n')


_line_alphabet = st.sampled_from(list('xa_{}"=, \t\\#+-.019eEN') + ["Inf", "NaN", "le", "__name__"])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_body() | st.lists(_line_alphabet, max_size=30).map(lambda t: "x" + "".join(t) + "\n"))
def test_fast_path_agrees_with_the_regex_path(body: str) -> None:
    from mlwatch.sources import textparse

    class RegexOnly(textparse._FastPath):
        def _series(self, prefix: str) -> None:
            return None  # so the series cache stays empty and no line takes a quick path

    def flat(fams: list[object]) -> list[object]:
        return [(f.name, f.type, f.help, [(s.name, s.labels, repr(s.value), s.timestamp_ms) for s in f.samples])
                for f in fams]  # type: ignore[attr-defined]

    def outcome(parse: Callable[[], list[object]]) -> object:
        try:
            return flat(parse())
        except ParseError as exc:
            return ("error", exc.line)

    reused = TextParser()
    outcome(lambda: reused.parse(body))  # fills the series cache
    expected = outcome(lambda: textparse._parse(body, RegexOnly()))  # type: ignore[arg-type]
    assert outcome(lambda: parse_text(body)) == expected
    assert outcome(lambda: reused.parse(body)) == expected
