"""The Go-template subset: Prometheus' outputs for the documented constructs, and refusals."""

from __future__ import annotations

import pytest

from mlwatch.rules.templates import check_template, go_float, render_template

L = {"model": "my-model", "job": "api"}


@pytest.mark.parametrize(
    ("text", "value", "want"),
    [
        ("{{ $labels.model }}", 0.0, "my-model"),
        ("{{ .Labels.job }}/{{ $labels.missing }}/", 0.0, "api//"),
        ("{{ $value }}", 0.85, "0.85"),
        ("{{ $value }}", 100.0, "100"),
        ("{{ $value }}", 1e-05, "1e-05"),
        ("{{ $value }}", 1e17, "100000000000000000"),
        ("{{ $value | humanizePercentage }}", 0.8532, "85.32%"),
        ("{{ humanize 1234567 }}", 0.0, "1.235M"),
        ("{{ humanize 0.00123 }}", 0.0, "1.23m"),
        ("{{ $value | humanize }}", 0.0, "0"),
        ("{{ humanize1024 2048 }}", 0.0, "2ki"),
        ("{{ humanizeDuration 3725 }}", 0.0, "1h 2m 5s"),
        ("{{ humanizeDuration 90061 }}", 0.0, "1d 1h 1m 1s"),
        ("{{ humanizeDuration 12.5 }}", 0.0, "12.5s"),
        ("{{ humanizeDuration 0.25 }}", 0.0, "250ms"),
        ('{{ printf "%.2f" $value }}', 0.8532, "0.85"),
        ('{{ printf "%s=%d" $labels.job 3 }}', 0.0, "api=3"),
        ("{{ if gt $value 0.9 }}ok{{ else if gt $value 0.5 }}meh{{ else }}bad{{ end }}", 0.7, "meh"),
        ("{{ with $labels.model }}[{{ . }}]{{ else }}none{{ end }}", 0.0, "[my-model]"),
        ("{{ with $labels.nope }}[{{ . }}]{{ else }}none{{ end }}", 0.0, "none"),
        ("a  {{- $labels.job -}}  b", 0.0, "aapib"),
        ("{{/* a comment */}}x", 0.0, "x"),
        ('{{ $labels.model | toUpper }} {{ title "ab cd" }}', 0.0, "MY-MODEL Ab Cd"),
        ('{{ if and (eq $labels.job "api") (lt $value 1.0) }}y{{ end }}', 0.5, "y"),
        ("{{ $externalLabels.site }}", 0.0, "lab"),
    ],
)
def test_render(text: str, value: float, want: str) -> None:
    assert render_template(text, L, value, {"site": "lab"}) == want


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{{ range $labels }}{{ end }}", "'range' is not supported"),
        ('{{ template "x" }}', "'template' is not supported"),
        ('{{ define "x" }}{{ end }}', "'define' is not supported"),
        ('{{ query "up" }}', "templates cannot run queries"),
        ("{{ $x := 1 }}", "variable assignment is not supported"),
        ("{{ $foo }}", "variable $foo is not supported"),
        ("{{ .Foo }}", ""),  # a field of the root that does not exist renders empty, as a missing map key
        ("{{ if $value }}", "missing {{end}}"),
        ("{{ end }}", "{{end}} without"),
        ("{{ $labels.x", "unclosed action"),
        ("{{ call $labels.f }}", "function 'call' is not supported"),
        ("line1\n{{ nosuch }}", "line 2:"),
    ],
)
def test_refused(text: str, problem: str) -> None:
    got = check_template(text)
    if problem:
        assert got is not None and problem in got
    else:
        assert got is None


def test_go_float() -> None:
    assert [go_float(v) for v in (0.1, 2.0, -3.5, 1e21, float("inf"), float("nan"))] == [
        "0.1",
        "2",
        "-3.5",
        "1e+21",
        "+Inf",
        "NaN",
    ]
