"""Whatever text it is given, parse_config returns a Config or raises ConfigError, and never leaks a secret."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlwatch.config import Config, parse_config
from mlwatch.errors import ConfigError

SECRET = "zq-s3cret-zq"  # expanded into values with ${SECRET}: may be in a Config, never in an error
TOKEN = "zq-t0ken-zq"  # only ever named by a *_env key: never in an error nor in a Config's repr
ENV = {"SECRET": SECRET, "TOKEN": TOKEN, "PORT": "9091", "EMPTY": ""}

KEYS = [
    "storage", "url", "retention", "out_of_order_window", "server", "listen", "bearer_token_env",
    "protect_reads", "tls", "cert_file", "key_file", "basic_auth_users", "max_body_bytes", "limits",
    "max_series", "query_timeout", "query_max_samples", "lookback_delta", "evaluation_interval", "push",
    "sample_interval", "accept_timestamps", "default_ttl", "sources", "name", "type", "interval", "timeout",
    "labels", "storag", "retenton", "rules", "<<", "__name__", "",
]  # fmt: skip
SCALARS = [
    "15s", "1h30m", "0", "0s", "-1s", "30x", "10MiB", "0KiB", "http", "log", "command", "htp", "true", "null",
    "127.0.0.1:9091", "[::1]:0", "::1:80", "sqlite:///m.db", "sqlite://", "postgresql://u:p@h/db",
    "${SECRET}", "${SECRET}x", "${PORT}", "${UNSET}", "${EMPTY:-5m}", "$${X}", "${", "${bad name}",
    "SECRET", "TOKEN", "$2b$12$" + "a" * 53, "fixtures/tls.crt",
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(SCALARS), st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.none(),
    st.text(max_size=20).filter(lambda s: SECRET not in s and TOKEN not in s),
)  # fmt: skip
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=25,
)
FRAGMENTS = [
    "storage:", "server:", "sources:", "  - ", "  ", "    ", "name: a", "type: http", "interval: 5s",
    "&a ", "*a", "<<: *a", "!!binary ", "!foo ", "? ", ": ", "{", "}", "[", "]", ",", "'", '"', "\t", "#",
    "---", "...", "%YAML 1.2", "%TAG ! tag:x,2000:", "|", ">", "\\", "\x00", "\ufeff", "\u2028", "${SECRET}",
    "- - - - - - - -", "[[[[[[[[[[[[[[[[[[[[",
]  # fmt: skip
yamlish = st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join), max_size=12).map("\n".join)


def _check(text: str) -> None:
    try:
        cfg = parse_config(text, "f.yaml", ENV)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError names at least one problem"
        for problem in exc.problems:
            assert problem.file == "f.yaml" and problem.line >= 0 and problem.message
        assert SECRET not in str(exc) and TOKEN not in str(exc)
    else:
        assert isinstance(cfg, Config)
        assert TOKEN not in repr(cfg) and TOKEN not in cfg.model_dump_json()


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    _check(text)


@FAST
@given(yamlish)
@example("? : storage:")  # ruamel raised TypeError on a mapping used as a key
@example("&a : &a ")  # ruamel warned about the reused anchor
@example("=")  # a value-tagged scalar without a position
@example('"[key]": 1')  # pydantic's own marker for dict keys, used as a key
def test_yaml_fragments(text: str) -> None:
    _check(text)


@FAST
@given(trees)
def test_any_tree(tree: object) -> None:
    _check(json.dumps(tree))  # JSON is YAML: a well-formed document of any shape


@FAST
@given(trees, st.integers(0, 400), st.text(max_size=5))
def test_damaged_trees(tree: object, at: int, junk: str) -> None:
    text = json.dumps(tree, indent=1)
    _check(text[:at] + junk + text[at + len(junk) :])


def test_deep_nesting() -> None:
    _check("[" * 5000 + "]" * 5000)
    _check("a:\n" + "".join(" " * i + "a:\n" for i in range(1, 500)))
    _check("&a [" + "*a, " * 1000 + "]")


def test_alias_bomb() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    _check("\n".join(lines))


def _section(keys: list[str], values: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


_value = st.one_of(scalars, trees)
config_shaped = st.fixed_dictionaries(
    {},
    optional={
        "storage": _section(["url", "retention", "out_of_order_window", "retenton"], _value),
        "server": _section(
            [
                "listen",
                "bearer_token_env",
                "bearer_token_env",
                "protect_reads",
                "max_body_bytes",
                "basic_auth_users",
                "tls",
            ],
            _value,
        ),
        "limits": _section(["max_series", "query_timeout", "query_max_samples", "lookback_delta"], _value),
        "push": _section(["sample_interval", "accept_timestamps", "default_ttl"], _value),
        "evaluation_interval": _value,
        "sources": st.lists(
            _section(["name", "type", "interval", "timeout", "labels", "url"], _value)
            | st.fixed_dictionaries(
                {"name": st.sampled_from(["a", "b", "${SECRET}"]), "type": st.sampled_from(["http", "log", "command"])},
                optional={"labels": st.dictionaries(st.text(max_size=5), _value, max_size=3)},
            ),
            max_size=4,
        ),
    },
)


@FAST
@given(config_shaped)
def test_config_shaped_trees(tree: dict[str, object]) -> None:
    _check(json.dumps(tree, indent=2))
