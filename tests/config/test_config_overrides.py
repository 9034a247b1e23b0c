"""Config.with_overrides: the CLI's --listen/--db, validated like the file's values."""

from __future__ import annotations

import pytest

from mlwatch.config import Config, parse_config
from mlwatch.errors import ConfigError


def test_overrides_replace_and_keep_the_rest() -> None:
    cfg = parse_config("server: {listen: 127.0.0.1:9000, protect_reads: true}\n")
    new = cfg.with_overrides(listen="0.0.0.0:9100", db_url="sqlite:////tmp/other.db")
    assert new.server.listen == "0.0.0.0:9100" and new.server.port == 9100
    assert new.server.protect_reads is True
    assert new.storage.url == "sqlite:////tmp/other.db"
    assert cfg.server.listen == "127.0.0.1:9000"  # the original is unchanged
    assert cfg.with_overrides() == cfg


def test_bad_overrides_name_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(listen="localhost", db_url="postgresql://x/y")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("--listen: invalid listen address 'localhost'")
    assert lines[1].startswith("--db: SQLite is the only supported database")
