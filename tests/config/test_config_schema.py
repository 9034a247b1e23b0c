"""The config schema: defaults, values in the units the daemon uses, env handling, locating the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlwatch.config import (
    SOURCE_TYPES,
    CommandSourceConfig,
    Config,
    HttpSourceConfig,
    LogSourceConfig,
    ServerConfig,
    StorageConfig,
    check_metric_types,
    config_path,
    default_config,
    load_config,
    parse_config,
)
from mlwatch.errors import ConfigError, ConfigProblem
from mlwatch.model import MetricType

HASH = "$2b$12$" + "a" * 53  # shape of a bcrypt hash


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", env or {})
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- defaults


def test_defaults() -> None:
    cfg = default_config()
    assert cfg.storage.url == "sqlite:///mlwatch.db"
    assert cfg.storage.retention == 30 * 86_400_000
    assert cfg.storage.out_of_order_window == 3_600_000
    assert cfg.server.listen == "127.0.0.1:9091"
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 9091)
    assert cfg.server.bearer_token_env is None and cfg.server.bearer_token() is None
    assert cfg.server.protect_reads is False
    assert cfg.server.tls is None
    assert cfg.server.basic_auth_users == {}
    assert cfg.server.max_body_bytes == 10 * 1024 * 1024
    assert cfg.limits.max_series == 100_000
    assert cfg.limits.query_timeout == 30_000
    assert cfg.limits.query_max_samples == 50_000_000
    assert cfg.limits.lookback_delta == 300_000
    assert cfg.evaluation_interval == 15_000
    assert cfg.push.sample_interval == 15_000
    assert cfg.push.accept_timestamps is True
    assert cfg.push.default_ttl is None
    assert cfg.sources == []


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "storage:\npush: ~\n"])
def test_empty_file_and_empty_sections_are_the_defaults(text: str) -> None:
    assert parse_config(text, env={}) == default_config()


def test_every_key_in_the_units_the_daemon_uses() -> None:
    cfg = parse_config(
        """
storage: {url: "sqlite:////var/lib/mlwatch/m.db", retention: 2w, out_of_order_window: 0s}
server:
  listen: "[::1]:0"
  protect_reads: true
  basic_auth_users: {prometheus: "HASH"}
  max_body_bytes: 512KiB
limits: {max_series: 5, query_timeout: 1m30s, query_max_samples: 1e3, lookback_delta: 250ms}
evaluation_interval: 1h
push: {sample_interval: 30s, accept_timestamps: false, default_ttl: 1d}
sources:
  - {name: api, type: http, url: 'http://127.0.0.1:8000/metrics', interval: 1m, timeout: 20s, labels: {env: prod, version: 2}}
  - {name: log, type: log, path: /var/log/x.jsonl}
  - {name: cmd, type: command, command: ['true'], interval: 5s}
""".replace("HASH", HASH),
        env={},
    )
    assert cfg.storage.url == "sqlite:////var/lib/mlwatch/m.db"
    assert cfg.storage.path == Path("/var/lib/mlwatch/m.db")
    assert cfg.storage.retention == 14 * 86_400_000
    assert cfg.storage.out_of_order_window == 0
    assert (cfg.server.host, cfg.server.port) == ("::1", 0)
    assert cfg.server.protect_reads is True
    assert cfg.server.basic_auth_users == {"prometheus": HASH}
    assert cfg.server.max_body_bytes == 512 * 1024
    assert (cfg.limits.max_series, cfg.limits.query_timeout) == (5, 90_000)
    assert (cfg.limits.query_max_samples, cfg.limits.lookback_delta) == (1000, 250)
    assert cfg.evaluation_interval == 3_600_000
    assert (cfg.push.sample_interval, cfg.push.accept_timestamps, cfg.push.default_ttl) == (
        30_000,
        False,
        86_400_000,
    )
    api, log, cmd = cfg.sources
    assert isinstance(api, HttpSourceConfig) and isinstance(log, LogSourceConfig)
    assert isinstance(cmd, CommandSourceConfig)
    assert (api.name, api.type, api.interval, api.timeout) == ("api", "http", 60_000, 20_000)
    assert api.labels == {"env": "prod", "version": "2"}
    assert (log.interval, log.timeout, log.labels) == (1_000, 1_000, {})  # logs are polled every second
    assert cmd.timeout == 5_000  # the default timeout never exceeds the interval


def test_relative_sqlite_path_stays_relative_to_the_working_directory() -> None:
    cfg = parse_config("storage: {url: 'sqlite:///data/m.db'}", "/etc/mlwatch/mlwatch.yaml", {})
    assert cfg.storage.url == "sqlite:///data/m.db"
    assert cfg.storage.path == Path("data/m.db")


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:9091", "0.0.0.0", 9091), ("localhost:80", "localhost", 80), ("[::]:9091", "::", 9091),
     ("[fe80::1%eth0]:1", "fe80::1%eth0", 1), ("my-host.example.com:65535", "my-host.example.com", 65535)],
)  # fmt: skip
def test_listen(listen: str, host: str, port: int) -> None:
    server = parse_config(f"server: {{listen: '{listen}'}}", env={}).server
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize("listen", ["9091", ":9091", "host:", "host:65536", "host:-1", "[::1]", "[zz]:1", "a b:1"])
def test_bad_listen(listen: str) -> None:
    [problem] = problems(f"server: {{listen: '{listen}'}}")
    assert problem.startswith("c.yaml:1: server.listen: invalid")


def test_models_are_frozen() -> None:
    cfg = default_config()
    with pytest.raises(ValidationError):
        cfg.storage.retention = 1


def test_python_callers_give_durations_in_milliseconds() -> None:
    assert StorageConfig(retention=1234).retention == 1234
    assert StorageConfig(retention="2s").retention == 2000  # type: ignore[arg-type]


def test_source_types_are_a_registry() -> None:
    assert SOURCE_TYPES == {"http": HttpSourceConfig, "log": LogSourceConfig, "command": CommandSourceConfig}


# ---------------------------------------------------------------- environment


def test_var_expansion() -> None:
    env = {"PORT": "9100", "DIR": "/srv/m", "EMPTY": ""}
    cfg = parse_config(
        "server: {listen: '127.0.0.1:${PORT}', basic_auth_users: {p: 'HASH'}}\n"
        "storage: {url: 'sqlite:///${DIR}/m.db', retention: '${RET:-7d}', out_of_order_window: '${EMPTY:-5m}'}\n"
        "sources: [{name: '${PORT}-api', type: log, path: /x.log, labels: {a: '$${PORT}', b: '$PORT'}}]\n".replace("HASH", HASH),
        env=env,
    )
    assert cfg.server.port == 9100
    assert cfg.server.basic_auth_users["p"] == HASH  # `$` alone is not special
    assert cfg.storage.url == "sqlite:////srv/m/m.db"
    assert (cfg.storage.retention, cfg.storage.out_of_order_window) == (7 * 86_400_000, 300_000)
    assert cfg.sources[0].name == "9100-api"
    assert cfg.sources[0].labels == {"a": "${PORT}", "b": "$PORT"}


def test_expansion_happens_in_values_only() -> None:
    assert problems("${KEY}: 1", {"KEY": "storage"}) == ['c.yaml:1: "${KEY}": unknown key']


def test_an_expanded_secret_never_appears_in_an_error() -> None:
    [problem] = problems("server: {listen: '${TOKEN}'}", {"TOKEN": "hunter2"})
    assert "hunter2" not in problem
    assert problem == (
        "c.yaml:1: server.listen: invalid listen address '${TOKEN}': expected host:port, "
        "e.g. 127.0.0.1:9091, 0.0.0.0:9091 or [::1]:9091"
    )


def test_bearer_token_is_read_at_load_and_never_shown() -> None:
    cfg = parse_config("server: {bearer_token_env: MLW_TOKEN}", env={"MLW_TOKEN": "hunter2"})
    assert cfg.server.bearer_token() == "hunter2"
    assert cfg.server.bearer_token({"MLW_TOKEN": "other"}) == "other"
    assert cfg.server.bearer_token({}) is None
    for text in (repr(cfg), str(cfg), repr(cfg.server), cfg.model_dump_json()):
        assert "hunter2" not in text


def test_basic_auth_hashes_stay_out_of_repr() -> None:
    cfg = parse_config("server: {basic_auth_users: {p: 'HASH'}}".replace("HASH", HASH), env={})
    assert HASH not in repr(cfg) and HASH not in str(cfg.server)


def test_bearer_token_outside_a_load_comes_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLW_TEST_TOKEN", "t0k")
    assert ServerConfig(bearer_token_env="MLW_TEST_TOKEN").bearer_token() == "t0k"


def test_missing_secret_is_reported_with_its_key() -> None:
    assert problems("server:\n  bearer_token_env: MLW_NOPE\n") == [
        "c.yaml:2: server.bearer_token_env: environment variable MLW_NOPE is not set"
    ]


# ---------------------------------------------------------------- TLS


def test_tls_files_resolve_against_the_config_directory(fixtures: Path) -> None:
    cfg = parse_config(
        "server: {tls: {cert_file: fixtures/tls.crt, key_file: fixtures/tls.key}}",
        str(fixtures.parent / "mlwatch.yaml"),
        {},
    )
    assert cfg.server.tls is not None
    assert cfg.server.tls.cert_file == str(fixtures / "tls.crt")
    assert cfg.server.tls.key_file == str(fixtures / "tls.key")


def test_tls_absolute_paths(fixtures: Path) -> None:
    text = f"server: {{tls: {{cert_file: '{fixtures}/tls.crt', key_file: '{fixtures}/tls.key'}}}}"
    assert parse_config(text, env={}).server.tls is not None


# ---------------------------------------------------------------- more problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage: {url: 'sqlite:///:memory:'}", "storage.url: an in-memory database"),
        ("storage: {url: 'not a url'}", "storage.url: not a database URL"),
        ("storage: {retention: 99999999999y}", "storage.retention: duration '99999999999y' is too large"),
        ("push: {default_ttl: 0}", "push.default_ttl: must be a duration greater than 0"),
        ("push: {default_ttl: [1]}", "push.default_ttl: expected a duration such as 30s or 5m, got a list"),
        ("server: {max_body_bytes: true}", "server.max_body_bytes: invalid size True"),
        ("server: {max_body_bytes: {a: 1}}", "server.max_body_bytes: expected a size such as 10MiB, got a mapping"),
        ("server: {protect_reads: 2026-01-01}", "server.protect_reads: expected true or false, got 2026-01-01"),
        ("limits: {max_series: 1.5}", "limits.max_series: expected a whole number, got 1.5"),
        ("sources: [{name: a, type: log, path: x, labels: {a: [1]}}]", "sources[0].labels.a: expected a string, got a list"),
        ("sources: [{name: a, type: [log]}]", "sources[0].type: unknown type"),
        ("sources: [{name: ' a', type: log, path: x}]", "sources[0].name: must not start or end with spaces"),
        ("x: !!binary aGVsbG8=", "x: unknown key"),
        ("true: 1", "keys must be strings, got true"),
        ("server:\n  listen: '127.0.0.1:9091'\n  listen: '127.0.0.1:9092'", "YAML syntax error: found duplicate key"),
        ("a: 1\n---\nb: 2\n", "YAML syntax error"),
        ("a: *nowhere", "YAML syntax error: found undefined alias"),
        ("sources: !!set {a}", "sources: unsupported YAML value (a set)"),
        ("evaluation_interval: !duration 5s", "evaluation_interval: unsupported YAML value (tagged !duration)"),
        ("%YAML 1.1\n---\nevaluation_interval: 5s", "c.yaml:1: only YAML 1.2 is supported"),
    ],
)  # fmt: skip
def test_problem(text: str, expected: str) -> None:
    got = problems(text)
    assert len(got) == 1, got
    assert expected in got[0]


def test_explicit_str_tag_is_a_string() -> None:
    assert parse_config("evaluation_interval: !!str 5s", env={}).evaluation_interval == 5000


def test_merge_keys_and_anchors() -> None:
    text = """
base: &base {interval: 30s, labels: {team: ml}}
"""
    assert problems(text) == ["c.yaml:2: base: unknown key"]
    cfg = parse_config("sources:\n  - &s {name: a, type: log, path: x, interval: 30s}\n  - {<<: *s, name: b}\n", env={})
    assert [(s.name, s.interval) for s in cfg.sources] == [("a", 30_000), ("b", 30_000)]


# ---------------------------------------------------------------- finding and reading the file


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None, {}) is None
    assert load_config(None, {}) == default_config()
    (tmp_path / "mlwatch.yaml").write_text("evaluation_interval: 1m\n")
    assert config_path(None, {}) == Path("mlwatch.yaml")
    assert load_config(None, {}).evaluation_interval == 60_000
    (tmp_path / "other.yaml").write_text("evaluation_interval: 2m\n")
    env = {"MLWATCH_CONFIG": "other.yaml"}
    assert config_path(None, env) == Path("other.yaml")
    assert load_config(None, env).evaluation_interval == 120_000
    assert config_path("given.yaml", env) == Path("given.yaml")


def test_missing_file_is_one_problem_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [
        ConfigProblem(str(path), 0, "cannot read the config file: No such file or directory")
    ]
    assert str(info.value) == f"{path}: cannot read the config file: No such file or directory"


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    [problem] = info.value.problems
    assert problem.line == 0 and "cannot read the config file" in problem.message


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"storage:\n  url: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert [str(p) for p in info.value.problems] == [f"{path}:2: the config file is not valid UTF-8"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfevaluation_interval: 1m\n")
    assert load_config(path, {}).evaluation_interval == 60_000


def test_load_uses_the_process_environment_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("evaluation_interval: ${MLW_TEST_EVAL}\n")
    monkeypatch.setenv("MLW_TEST_EVAL", "45s")
    assert load_config(path).evaluation_interval == 45_000
    assert os.environ["MLW_TEST_EVAL"] == "45s"


# ---------------------------------------------------------------- one type per metric name


def test_metric_types_agree() -> None:
    decls = [("a_total", "counter", 3), ("a_total", MetricType.COUNTER, 9), ("lat", "histogram", 4),
             ("lat", "histogram", 12), ("other_sum", "gauge", 5)]  # fmt: skip
    assert check_metric_types(decls, "c.yaml") == []


def test_metric_type_conflicts_are_reported_at_the_later_declaration() -> None:
    decls = [("acc", "gauge", 3), ("acc", "counter", 9), ("lat", "histogram", 4), ("lat_sum", "gauge", 7),
             ("q", "summary", 20), ("q", "histogram", 21)]  # fmt: skip
    assert [str(p) for p in check_metric_types(decls, "c.yaml")] == [
        "c.yaml:9: metric 'acc' is declared as a gauge (line 3)",
        "c.yaml:7: metric 'lat_sum' is declared as a series of histogram 'lat' (line 4)",
        "c.yaml:21: metric 'q' is declared as a summary (line 20)",
    ]


def test_config_reports_no_metric_declarations_yet() -> None:
    assert list(Config().metric_declarations()) == []


def test_metric_declarations_from_sources_are_checked_with_their_lines() -> None:
    text = """sources:
  - name: a
    type: log
    path: x
    metrics:
      - {name: up_ratio, type: gauge, field: r}
  - name: b
    type: command
    command: [x]
    metric: up_ratio
    metric_type: counter
  - name: c
    type: http
    format: json
    url: http://h:1/
    metrics:
      - {name: up_ratio_sum, path: a.b}
      - {name: lat, path: a.c}
  - name: d
    type: log
    path: y
    metrics:
      - name: lat
        type: histogram
        field: l
"""
    assert problems(text) == [
        "c.yaml:10: metric 'up_ratio' is declared as a gauge (line 6)",
        "c.yaml:23: metric 'lat' is declared as a gauge (line 18)",
    ]
