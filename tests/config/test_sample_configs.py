"""Every sample config loads, including its optional `#~` examples, and the systemd unit is hardened."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from mlwatch.config import default_config, load_config, parse_config

SAMPLES = Path(__file__).parents[2] / "sample_configs"
ENV = {"MLWATCH_TOKEN": "sample-token"}


def test_the_samples_are_there() -> None:
    assert {p.name for p in SAMPLES.iterdir()} >= {"minimal.yaml", "full.yaml", "mlwatch.service"}


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_sample_loads(path: Path) -> None:
    load_config(path, ENV)


def test_optional_examples_in_full_yaml_load_too(fixtures: Path) -> None:
    text = (SAMPLES / "full.yaml").read_text().replace("#~ ", "")
    text = text.replace("/etc/mlwatch/tls/mlwatch.crt", str(fixtures / "tls.crt"))
    text = text.replace("/etc/mlwatch/tls/mlwatch.key", str(fixtures / "tls.key"))
    cfg = parse_config(text, "full.yaml", ENV)
    assert cfg.server.tls is not None
    assert set(cfg.server.basic_auth_users) == {"prometheus"}


def test_full_yaml_sets_every_key_and_minimal_is_close_to_the_defaults() -> None:
    full = load_config(SAMPLES / "full.yaml", ENV)
    assert full.server.bearer_token() == "sample-token"
    assert {s.type for s in full.sources} == {"http", "log", "command"}
    minimal = load_config(SAMPLES / "minimal.yaml", ENV)
    assert minimal == default_config()


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SAMPLES / "mlwatch.service")
    return parser


def test_systemd_unit() -> None:
    service = _unit()["Service"]
    assert service["ExecStart"] == "/usr/local/bin/mlwatch daemon -c /etc/mlwatch/mlwatch.yaml"
    assert service["WorkingDirectory"] == "/var/lib/mlwatch"
    assert service["ReadWritePaths"] == "/var/lib/mlwatch"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["RestartPreventExitStatus"] == "2"  # a config error: restarting will not help
    assert service["User"] == "mlwatch"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(SAMPLES / "mlwatch.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The only acceptable complaint is that mlwatch is not installed at /usr/local/bin here.
    problems = [line for line in result.stderr.splitlines() if line and "is not executable" not in line]
    assert problems == []
