"""The config file: pydantic models of the YAML, and a loader that reports every problem with its line.

Modules: ``_fields`` (durations, sizes, label sets, env names, the base model), ``schema`` (storage,
server, limits, push, the whole :class:`Config`), ``sources`` (source models, one per ``type``, and
their parts: relabelling, sampling, derived metrics), ``loader`` (YAML with positions, ``${VAR}``,
pydantic errors turned into ``FILE:LINE: path: message``). Import from here, not from the modules.
"""

from __future__ import annotations

from mlwatch.config._fields import CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE
from mlwatch.config.loader import (
    check_config,
    config_path,
    load_config,
    parse_config,
)
from mlwatch.config.schema import (
    Config,
    LimitsConfig,
    PushConfig,
    ServerConfig,
    StorageConfig,
    TLSConfig,
    check_metric_types,
    default_config,
)
from mlwatch.config.sources import (
    SOURCE_TYPES,
    CommandSourceConfig,
    HttpSourceConfig,
    LogSourceConfig,
    MetricDeclaration,
    SourceConfig,
    source_type,
)

__all__ = [
    "CONFIG_ENV_VAR", "DEFAULT_CONFIG_FILE", "SOURCE_TYPES",
    "CommandSourceConfig", "Config", "HttpSourceConfig", "LimitsConfig", "LogSourceConfig",
    "MetricDeclaration", "PushConfig", "ServerConfig", "SourceConfig", "StorageConfig", "TLSConfig",
    "check_config", "check_metric_types", "config_path", "default_config", "load_config", "parse_config",
    "source_type",
]  # fmt: skip
