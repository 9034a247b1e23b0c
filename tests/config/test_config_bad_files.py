"""Every ``bad/*.bad.yaml`` gives exactly the problems its trailing ``#>`` comments list (config_test.go style).

A file may set its environment with ``#env: NAME=value`` lines (nothing else is set) and name values
that must never appear in the output with ``#secret: value``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwatch.config import check_config, load_config
from mlwatch.errors import ConfigError

BAD = Path(__file__).parent / "bad"
BAD_FILES = sorted(BAD.glob("*.bad.yaml"))


def _directives(path: Path, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)]


def test_there_are_bad_files() -> None:
    assert len(BAD_FILES) >= 15


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_bad_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _directives(path, "#> ")
    assert expected, f"{path.name} lists no expected errors"
    env = dict(line.partition("=")[::2] for line in _directives(path, "#env: "))
    monkeypatch.chdir(BAD)  # so FILE in each message is the bare file name

    with pytest.raises(ConfigError) as info:
        load_config(path.name, env)

    got = [str(p) for p in info.value.problems]
    assert got == expected
    assert str(info.value) == "\n".join(expected)
    for secret in _directives(path, "#secret: "):
        assert secret not in str(info.value)


def test_check_config_returns_the_same_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    problems = check_config("many_errors.bad.yaml", {})
    assert [str(p) for p in problems] == _directives(BAD / "many_errors.bad.yaml", "#> ")
    assert all(p.file == "many_errors.bad.yaml" and p.line > 0 for p in problems)


def test_rule_file_problems_are_named_as_the_config_file_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config given as DIR/FILE names its rule files DIR/RULEFILE, one line per problem, so each opens."""
    monkeypatch.chdir(BAD.parent)
    problems = [str(p) for p in check_config("bad/rule_files.bad.yaml", {})]
    expected = _directives(BAD / "rule_files.bad.yaml", "#> ")
    assert problems == [f"bad/{line}" for line in expected]
    assert sum(p.startswith("bad/rules/serving.yml:") for p in problems) == 2
    assert sum(p.startswith("bad/rules/quality.yml:") for p in problems) == 3
