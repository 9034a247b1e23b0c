"""Repeated push bodies parsed from their template: exactly what the text parser gives, or nothing."""

from __future__ import annotations

import math

import pytest

from mlwatch.model import MetricFamily
from mlwatch.sources.pushtext import BodyTemplates
from mlwatch.sources.textparse import parse_text

BODY = (
    "# HELP x Some help.\n# TYPE x gauge\n"
    'x{{a="1",b="q\\"uote"}} {}\nx{{a="2",b=""}} {}\n'
    "# TYPE h histogram\n"
    'h_bucket{{le="0.5"}} {}\nh_bucket{{le="+Inf"}} {}\nh_sum {}\nh_count {}\n'
    "\n"
    "plain {}\n"
)
FIRST = BODY.format("1.5", "-2", "1", "3", "4.5", "3", "7")


def as_data(families: list[MetricFamily]) -> list[tuple[object, ...]]:
    def v(x: float) -> object:
        return "NaN" if math.isnan(x) else x

    return [(f.name, f.type, f.help, f.unit, [(s.name, s.labels, v(s.value), s.timestamp_ms) for s in f.samples])
            for f in families]


def learned(text: str = FIRST) -> BodyTemplates:
    t = BodyTemplates()
    t.learn("/p", text, parse_text(text))
    return t


@pytest.mark.parametrize(
    "values",
    [("2.5", "3", "4", "5", "6.25", "7", "8"), ("NaN", "+Inf", "-Inf", "Inf", "1e3", ".5", "-0"),
     ("1.5", "-2", "1", "3", "4.5", "3", "7")],
)
def test_same_lines_new_values_parse_as_the_parser_does(values: tuple[str, ...]) -> None:
    body = BODY.format(*values)
    got = learned().parse("/p", body)
    assert got is not None
    assert as_data(got) == as_data(parse_text(body))


@pytest.mark.parametrize(
    "body",
    [
        FIRST.replace("plain 7", "plain 7 1700000000000"),  # a timestamp
        FIRST.replace("plain 7", "plain  7"),  # another layout
        FIRST.replace("plain 7", "plain 1e999"),  # out of range: the parser decides
        FIRST.replace("plain 7", "plain 0x10"),  # not a plain float
        FIRST.replace("plain 7", "plain 7\r"),
        FIRST.replace("plain 7", "other 7"),  # another series
        FIRST.replace("Some help.", "Other help."),  # another comment
        FIRST + "extra 1\n",  # another line
        FIRST.rstrip("\n"),  # no final newline: another line structure
    ],
)
def test_anything_else_is_left_to_the_parser(body: str) -> None:
    assert learned().parse("/p", body) is None
    assert learned().parse("/other", FIRST) is None  # templates are per path


@pytest.mark.parametrize(
    "text",
    [
        "x 1 1700000000000\n",  # timestamps
        'x{a = "1"} 1\n',  # not as a client writes it
        'x{a="1",} 1\n',
        "x\t1\n",
        "x 1\nx 2\n",  # duplicates are fine to template (the push is refused later all the same)
    ],
)
def test_what_becomes_a_template(text: str) -> None:
    t = learned(text)
    again = t.parse("/p", text)
    if text == "x 1\nx 2\n":
        assert again is not None and as_data(again) == as_data(parse_text(text))
    else:
        assert again is None


def test_shared_label_dicts_are_not_changed() -> None:
    t = learned()
    first = t.parse("/p", FIRST)
    assert first is not None
    second = t.parse("/p", FIRST.replace(" 1.5\n", " 9\n"))
    assert second is not None and second[0].samples[0].value == 9.0
    assert first[0].samples[0].value == 1.5  # a new sample object per body
