"""docs/config-reference.md documents every key the schema accepts, and no key it does not."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from mlwatch.config import SOURCE_TYPES, Config, SourceConfig, TLSConfig
from mlwatch.config.schema import DownsampleLevel, RetentionOverride

REFERENCE = Path(__file__).parents[2] / "docs" / "config-reference.md"


def _keys(model: type[BaseModel], prefix: str) -> set[str]:
    return {prefix + (info.alias or name) for name, info in model.model_fields.items()}


def _schema_keys() -> set[str]:
    keys = _keys(Config, "")
    for section in ("storage", "server", "limits", "push"):
        annotation = Config.model_fields[section].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        keys |= _keys(annotation, f"{section}.")
    keys |= _keys(TLSConfig, "server.tls.")
    keys |= _keys(RetentionOverride, "storage.retention_overrides[].")
    keys |= _keys(DownsampleLevel, "storage.downsample[].")
    source_models: list[type[BaseModel]] = [SourceConfig, *SOURCE_TYPES.values()]
    for model in source_models:
        keys |= _keys(model, "sources[].")
    return keys


def _documented_keys() -> set[str]:
    """Section titles (## `storage`) and the first cell of every table row (| `storage.url` |)."""
    text = REFERENCE.read_text()
    rows = re.findall(r"^\| `([a-z_.\[\]]+)` \|", text, re.MULTILINE)
    return set(rows) | set(re.findall(r"^## `([a-z_]+)`$", text, re.MULTILINE))


def test_every_key_is_documented() -> None:
    assert _schema_keys() - _documented_keys() == set()


def test_no_documented_key_is_missing_from_the_schema() -> None:
    assert _documented_keys() - _schema_keys() == set()
