"""The config file: pydantic models of the YAML, and a loader that reports every problem with its line.

Shape of the schema (every model is frozen and forbids unknown keys)::

    Config
     ├── storage: StorageConfig         url, retention, out_of_order_window
     ├── server: ServerConfig           listen, bearer_token_env, protect_reads, tls: TLSConfig,
     │                                  basic_auth_users, max_body_bytes
     ├── limits: LimitsConfig           max_series, query_timeout, query_max_samples, lookback_delta
     ├── push: PushConfig               sample_interval, accept_timestamps, default_ttl
     ├── evaluation_interval            duration
     └── sources: [SourceConfig]        name, type, interval, timeout, labels; one subclass per ``type``
                                        (HttpSourceConfig, LogSourceConfig, CommandSourceConfig)

Conventions every model follows, so that later sections only add models:

- durations are Prometheus strings in the file and ``int`` milliseconds in the model (:data:`Duration`,
  :data:`PositiveDuration`); byte sizes accept ``10MiB`` and are ``int`` bytes (:data:`Size`);
- a key whose value is empty (``push:`` with everything below commented out) means "use the default";
- secrets are never inline: a ``*_env`` key (:data:`EnvVarName`) names an environment variable, which
  must be set when the file is loaded; fields marked ``secret`` never have their value echoed in an error;
- a new source type is a ``SourceConfig`` subclass registered with :func:`source_type`; it adds its own
  keys and may declare the metrics it writes (``declared_metrics``) so that a name keeps one type
  across the whole config (:func:`check_metric_types`).

Loading (``load_config`` / ``parse_config``) reads the YAML with ruamel.yaml to keep node positions,
expands ``${VAR}`` in string values, validates with pydantic, then runs the cross-field checks on the raw
tree, so one run reports every problem as ``FILE:LINE: path: message``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mlwatch.errors import ConfigError, ConfigProblem
from mlwatch.model import LABEL_NAME_RE, MetricType, format_duration_ms, parse_duration_ms, parse_size

__all__ = [
    "CommandSourceConfig", "Config", "HttpSourceConfig", "LimitsConfig", "LogSourceConfig",
    "MetricDeclaration", "PushConfig", "ServerConfig", "SourceConfig", "StorageConfig", "TLSConfig",
    "check_config", "check_metric_types", "config_path", "default_config", "load_config", "parse_config",
    "source_type",
]  # fmt: skip

DEFAULT_CONFIG_FILE = "mlwatch.yaml"
CONFIG_ENV_VAR = "MLWATCH_CONFIG"

_S = 1000
_MIN = 60 * _S
_H = 60 * _MIN
_D = 24 * _H
# Prometheus durations are int64 nanoseconds; staying below that keeps every duration representable.
_MAX_DURATION_MS = (2**63 - 1) // 1_000_000

# ------------------------------------------------------------------ field types


def _ctx(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _parse_duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use Prometheus syntax such as 30s, 5m, 1h30m, 7d)")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, int):
        # Python callers pass milliseconds; in a file a bare number has no unit and is ambiguous.
        if value == 0 or not _ctx(info).get("from_file"):
            return value
        raise ValueError(f"invalid duration {value}: a unit is required (e.g. {value}s)")
    if isinstance(value, str):
        if value.strip() == "0":
            return 0
        ms = parse_duration_ms(value)
        if ms > _MAX_DURATION_MS:
            raise ValueError(f"duration {value!r} is too large")
        return ms
    raise ValueError(f"expected a duration such as 30s or 5m, got {_kind(value)}")


def _positive_duration(value: int) -> int:
    if value <= 0:
        raise ValueError("must be a duration greater than 0")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_size(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r} (use e.g. 512KiB, 10MiB, 2GB)")  # noqa: TRY004
    if isinstance(value, int | str):
        size = parse_size(value)
        if size <= 0:
            raise ValueError("must be a size greater than 0")
        return size
    raise ValueError(f"expected a size such as 10MiB, got {_kind(value)}")


def _whole_number(value: Any) -> Any:
    """Refuse ``true`` as 1, which pydantic's lax mode would accept for an int."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")  # noqa: TRY004
    return value


def _label_name(name: str) -> str:
    if not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r} (letters, digits and _, not starting with a digit)")
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is reserved (names starting with __ are internal)")
    return name


def _scalar_to_str(value: Any) -> Any:
    # `labels: {version: 2}` is common; a number is a fine label value, true/false is probably a mistake.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_var_name(name: str, info: ValidationInfo) -> str:
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    ctx = _ctx(info)
    if "env" in ctx:  # only a load checks the environment; Python callers resolve later
        value = ctx["env"].get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        if value == "":
            raise ValueError(f"environment variable {name} is set but empty")
    return name


Duration = Annotated[int, BeforeValidator(_parse_duration), AfterValidator(_non_negative)]
"""A Prometheus duration (``30s``, ``1h30m``) in the file; ``int`` milliseconds in the model; 0 allowed."""
PositiveDuration = Annotated[int, BeforeValidator(_parse_duration), AfterValidator(_positive_duration)]
"""A duration that must be greater than 0."""
Size = Annotated[int, BeforeValidator(_parse_size)]
"""A byte size (``4096``, ``512KiB``, ``10MiB``, ``2GB``) greater than 0, as ``int`` bytes."""
PositiveInt = Annotated[int, BeforeValidator(_whole_number), Field(gt=0)]
EnvVarName = Annotated[str, AfterValidator(_env_var_name)]
"""The name of an environment variable holding a secret; it must be set (and non-empty) at load."""
LabelName = Annotated[str, AfterValidator(_label_name)]
LabelSet = dict[LabelName, Annotated[str, BeforeValidator(_scalar_to_str)]]

SECRET: dict[str, Any] = {"secret": True}
"""``Field(json_schema_extra=SECRET)`` marks a field whose value never appears in an error message."""


class _Model(BaseModel):
    """Base of every config model: immutable, unknown keys are errors, an empty value means the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keys = _keys_of(cls)
            return {k: v for k, v in data.items() if v is not None or k not in keys}
        return data


# ------------------------------------------------------------------ storage


_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}


def _sqlite_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL (expected sqlite:///path/to/mlwatch.db)") from None
    if parsed.drivername not in _SQLITE_DRIVERS:
        shown = parsed.render_as_string(hide_password=True)
        raise ValueError(f"SQLite is the only supported database today: expected sqlite:///path, got {shown!r}")
    if not parsed.database or parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
        raise ValueError("an in-memory database cannot be shared by the daemon and its readers; give a file path")
    return url


class StorageConfig(_Model):
    """Where samples are stored and for how long."""

    url: Annotated[str, AfterValidator(_sqlite_url)] = "sqlite:///mlwatch.db"
    """A SQLAlchemy URL; relative paths are relative to the working directory, as SQLAlchemy does."""
    retention: PositiveDuration = 30 * _D
    out_of_order_window: Duration = 1 * _H

    @property
    def sqlalchemy_url(self) -> URL:
        return make_url(self.url)

    @property
    def path(self) -> Path:
        """The database file (relative to the working directory when the URL's path is relative)."""
        return Path(self.sqlalchemy_url.database or "")


# ------------------------------------------------------------------ server

_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_LISTEN_HELP = "expected host:port, e.g. 127.0.0.1:9091, 0.0.0.0:9091 or [::1]:9091"


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid listen address {listen!r}: {_LISTEN_HELP}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {listen!r}: {_LISTEN_HELP}") from None
    elif ":" in host:
        raise ValueError(f"invalid listen address {listen!r}: IPv6 addresses go in brackets, e.g. [::1]:9091")
    elif not _HOST_RE.match(host):
        raise ValueError(f"invalid host in {listen!r}: {_LISTEN_HELP}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid port in {listen!r}: expected 0-65535")
    return host, int(port_text)


def _listen(listen: str) -> str:
    _split_listen(listen)
    return listen


_BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT_RE.match(value):
        raise ValueError("not a bcrypt hash (expected $2a$, $2b$ or $2y$, a cost, and 53 characters)")
    return value


def _basic_auth_user(name: str) -> str:
    if not name or ":" in name:
        raise ValueError("a basic-auth user name must be non-empty and contain no ':'")
    return name


def _existing_file(path: str, info: ValidationInfo) -> str:
    if not path:
        raise ValueError("expected a file path")
    base = _ctx(info).get("base_dir")
    relative = base is not None and not Path(path).is_absolute()
    full = Path(os.path.normpath(Path(str(base)) / path)) if relative else Path(path)
    shown = f"{path!r} (relative to the config file's directory)" if relative else repr(path)
    if not full.exists():
        raise ValueError(f"file not found: {shown}")
    if not full.is_file():
        raise ValueError(f"not a file: {shown}")
    if not os.access(full, os.R_OK):
        raise ValueError(f"file not readable: {shown}")
    return str(full)


ExistingFile = Annotated[str, AfterValidator(_existing_file)]
"""A path to a readable file; relative paths are relative to the config file's directory, as Prometheus does."""


def _pem_containing(marker: str, what: str) -> Callable[[str], str]:
    def check(path: str) -> str:
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 20)
        except OSError as exc:
            raise ValueError(f"cannot read the file: {exc.strerror}") from None
        if marker.encode() not in head:
            raise ValueError(f"the file holds no PEM {what}")
        return path

    return check


class TLSConfig(_Model):
    """Serve HTTPS with this certificate chain and private key (PEM)."""

    cert_file: Annotated[ExistingFile, AfterValidator(_pem_containing("-----BEGIN CERTIFICATE-----", "certificate"))]
    key_file: Annotated[ExistingFile, AfterValidator(_pem_containing("PRIVATE KEY-----", "private key"))]

    @model_validator(mode="after")
    def _loads(self) -> TLSConfig:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # A password callback that fails keeps an encrypted key from prompting on the terminal.
            context.load_cert_chain(self.cert_file, self.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            reason = str(getattr(exc, "reason", None) or exc.strerror or "unreadable").lower().replace("_", " ")
            raise ValueError(
                f"the certificate and key do not load together ({reason}): "
                "is it the key of this certificate, and is the key unencrypted?"
            ) from None
        return self


class ServerConfig(_Model):
    """The HTTP server: pushes, the Prometheus API, /metrics and /federate."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9091"
    bearer_token_env: EnvVarName | None = None
    protect_reads: bool = False
    tls: TLSConfig | None = None
    basic_auth_users: dict[
        Annotated[str, AfterValidator(_basic_auth_user)], Annotated[str, AfterValidator(_bcrypt_hash)]
    ] = Field(default_factory=dict, repr=False, json_schema_extra=SECRET)
    max_body_bytes: Size = 10 * 1024 * 1024

    _bearer_token: SecretStr | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        env = context.get("env") if isinstance(context, Mapping) else None
        if self.bearer_token_env is not None:
            value = (os.environ if env is None else env).get(self.bearer_token_env)
            self._bearer_token = SecretStr(value) if value else None

    @property
    def host(self) -> str:
        """The host part of ``listen``, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    def bearer_token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The token that writes (and, with ``protect_reads``, reads) need; None when there is none.

        Without ``env``, the value read from the environment when the config was loaded.
        """
        if self.bearer_token_env is None:
            return None
        if env is not None:
            return env.get(self.bearer_token_env) or None
        return self._bearer_token.get_secret_value() if self._bearer_token else None


# ------------------------------------------------------------------ limits, push


class LimitsConfig(_Model):
    """Bounds that keep one bad query or target from taking the daemon down."""

    max_series: PositiveInt = 100_000
    query_timeout: PositiveDuration = 30 * _S
    query_max_samples: PositiveInt = 50_000_000
    lookback_delta: PositiveDuration = 5 * _MIN


class PushConfig(_Model):
    """Pushgateway-compatible pushes."""

    sample_interval: PositiveDuration = 15 * _S
    accept_timestamps: bool = True
    default_ttl: PositiveDuration | None = None
    """Delete a push group this long after its last push; None keeps groups until deleted."""


# ------------------------------------------------------------------ sources


@dataclass(frozen=True, slots=True)
class MetricDeclaration:
    """A metric name that a part of the config writes, with its type and where it is declared.

    ``loc`` is the path to the declaration inside the owning model (e.g. ``("metrics", 0)``) until
    :meth:`Config.metric_declarations` prefixes it; the loader turns it into a line.
    """

    name: str
    type: MetricType
    loc: tuple[str | int, ...] = ()


_SourceT = TypeVar("_SourceT", bound="SourceConfig")

SOURCE_TYPES: dict[str, type[SourceConfig]] = {}
"""Every source ``type`` and the model that validates it, filled by :func:`source_type`."""


def source_type(name: str) -> Callable[[type[_SourceT]], type[_SourceT]]:
    """Register a ``SourceConfig`` subclass as the model for ``type: name``."""

    def register(cls: type[_SourceT]) -> type[_SourceT]:
        SOURCE_TYPES[name] = cls
        return cls

    return register


def _source_name(name: str) -> str:
    if not name.strip():
        raise ValueError("must not be empty")
    if name != name.strip() or any(not ch.isprintable() for ch in name):
        raise ValueError("must not start or end with spaces or contain control characters")
    return name


class SourceConfig(_Model):
    """Keys every source has; each ``type`` subclasses this with its own keys."""

    name: Annotated[str, AfterValidator(_source_name)]
    """The target's ``job`` label (unless ``labels`` sets one); unique across sources."""
    type: str
    interval: PositiveDuration = 15 * _S
    timeout: PositiveDuration = 10 * _S
    """At most ``interval``; when not given, the smaller of 10s and ``interval``."""
    labels: LabelSet = Field(default_factory=dict)

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, timeout: int, info: ValidationInfo) -> int:
        interval = info.data.get("interval")  # absent when the interval itself is invalid
        if interval is not None and timeout > interval:
            raise ValueError(
                f"must not be longer than interval ({format_duration_ms(timeout)} > {format_duration_ms(interval)})"
            )
        return timeout

    @model_validator(mode="after")
    def _default_timeout_within_interval(self) -> SourceConfig:
        if self.timeout > self.interval:  # only the default can get here: clamp it, as Prometheus does
            return self.model_copy(update={"timeout": self.interval})
        return self

    def declared_metrics(self) -> Iterable[MetricDeclaration]:
        """Metric names this source writes whose type is known from the config (none for the common keys)."""
        return ()


@source_type("http")
class HttpSourceConfig(SourceConfig):
    """Scrapes Prometheus text/OpenMetrics or JSON endpoints (its keys come with the HTTP source)."""

    type: Literal["http"] = "http"


@source_type("log")
class LogSourceConfig(SourceConfig):
    """Tails log files (its keys come with the log source)."""

    type: Literal["log"] = "log"


@source_type("command")
class CommandSourceConfig(SourceConfig):
    """Runs a command and reads its output (its keys come with the command source)."""

    type: Literal["command"] = "command"


def _type_tag(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("type")
    return getattr(value, "type", None)


def _tagged_union(registry: Mapping[str, type[BaseModel]]) -> Any:
    members = tuple(Annotated[model, Tag(tag)] for tag, model in registry.items())
    return Annotated[Union[members], Discriminator(_type_tag)]  # noqa: UP007 (a runtime-built union)


if TYPE_CHECKING:
    AnySource = SourceConfig
else:
    AnySource = _tagged_union(SOURCE_TYPES)
    """Validates a source with the model its ``type`` names."""


# ------------------------------------------------------------------ the whole config


class Config(_Model):
    """The whole config file."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    evaluation_interval: PositiveDuration = 15 * _S
    sources: list[AnySource] = Field(default_factory=list)

    def metric_declarations(self) -> Iterator[MetricDeclaration]:
        """Every metric the config declares with a type, located from the top of the file."""
        for i, source in enumerate(self.sources):
            for decl in source.declared_metrics():
                yield MetricDeclaration(decl.name, decl.type, ("sources", i, *decl.loc))


def default_config() -> Config:
    """The config used when there is no file: push and self-metrics into ./mlwatch.db."""
    return Config()


# ------------------------------------------------------------------ cross-field checks


_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_SUMMARY_SUFFIXES = ("_sum", "_count")


def check_metric_types(
    declarations: Iterable[tuple[str, MetricType | str, int]], file: str = "<config>"
) -> list[ConfigProblem]:
    """Report every metric name given two types, including a histogram's or summary's own series.

    ``declarations`` are ``(name, type, line)``; the first declaration of a name wins and each later
    conflicting one is reported at its own line.
    """
    owners: dict[str, tuple[str, MetricType, int]] = {}  # series name -> (family, type, line)
    problems = []
    for name, raw_type, line in declarations:
        mtype = MetricType(raw_type)
        suffixes = {MetricType.HISTOGRAM: _HISTOGRAM_SUFFIXES, MetricType.SUMMARY: _SUMMARY_SUFFIXES}
        claimed = [name, *(name + s for s in suffixes.get(mtype, ()))]
        for series in claimed:
            prior = owners.get(series)
            if prior is None:
                owners[series] = (name, mtype, line)
                continue
            family, prior_type, prior_line = prior
            if family == name and prior_type == mtype:
                continue
            if family == series:
                what = f"a {prior_type.value}"
            else:
                what = f"a series of {prior_type.value} {family!r}"
            at = f" (line {prior_line})" if prior_line else ""
            here = f"{series!r} (of {mtype.value} {name!r})" if series != name else repr(name)
            problems.append(ConfigProblem(file, line, f"metric {here} is declared as {what}{at}"))
            break
    return problems


def _duplicate_source_names(tree: Any, reader: _TreeReader, file: str) -> list[ConfigProblem]:
    sources = tree.get("sources") if isinstance(tree, dict) else None
    if not isinstance(sources, list):
        return []
    seen: dict[str, int] = {}
    problems = []
    for i, source in enumerate(sources):
        name = source.get("name") if isinstance(source, dict) else None
        if not isinstance(name, str):
            continue
        line = reader.lines.line(("sources", i, "name"))
        if name in seen:
            message = f"sources[{i}].name: duplicate source name {name!r} (first at line {seen[name]})"
            problems.append(ConfigProblem(file, line, reader.redact(message, ("sources", i, "name"))))
        else:
            seen[name] = line
    return problems


# ------------------------------------------------------------------ reading YAML with positions

_Path = tuple[str | int, ...]
_MAX_NODES = 200_000  # aliases can make a small file expand into a huge tree
_MAX_DEPTH = 100
_OLD_YAML_RE = re.compile(r"^%YAML[ \t]+(?!1\.2\b)", re.MULTILINE)
_VAR_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")


class _Lines:
    """Line numbers (1-based) of the keys and values of the raw tree, by path."""

    def __init__(self) -> None:
        self.at: dict[_Path, int] = {}

    def line(self, path: _Path) -> int:
        for end in range(len(path), -1, -1):
            if path[:end] in self.at:
                return self.at[path[:end]]
        return 0


class _TreeReader:
    """Turns ruamel's round-trip tree into plain dicts, lists and scalars, recording positions,
    expanding ``${VAR}`` in string values and collecting problems instead of stopping at the first."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines = _Lines()
        self.problems: list[ConfigProblem] = []
        self.failed_paths: set[_Path] = set()
        self.expanded: dict[_Path, tuple[str, str]] = {}  # path -> (text as written, expanded text)
        self._nodes = 0
        self._open: set[int] = set()

    def redact(self, message: str, *paths: _Path) -> str:
        """``message`` with values expanded from the environment (which may hold secrets) shown as written."""
        # The values at these paths, around them (an error about a list quotes its items) and above them.
        related = [
            (written, value)
            for at, (written, value) in self.expanded.items()
            if value and any(at[: len(p)] == p or p[: len(at)] == at for p in paths)
        ]
        for written, value in sorted(related, key=lambda pair: -len(pair[1])):
            for quote in (json.dumps, repr):
                message = message.replace(quote(value), quote(written))
            message = message.replace(value, written)
        return message

    def problem(self, path: _Path, message: str, line: int | None = None) -> None:
        where = _format_path(path)
        text = f"{where}: {message}" if where else message
        self.problems.append(ConfigProblem(self.file, self.lines.line(path) if line is None else line, text))

    def read(self, node: Any, path: _Path, line: int) -> Any:
        self.lines.at.setdefault(path, line)
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            if self._nodes == _MAX_NODES + 1:
                self.problem(path, f"the document is too large (more than {_MAX_NODES} values after aliases)")
            return None
        if isinstance(node, dict | list) and id(node) in self._open:
            self.problem(path, "an alias refers to a node that contains it")
            return None
        if isinstance(node, dict):
            self._open.add(id(node))
            try:
                return self._mapping(node, path, line)
            finally:
                self._open.discard(id(node))
        if isinstance(node, list):
            self._open.add(id(node))
            try:
                return [self.read(item, (*path, i), _position(node, "item", i, line)) for i, item in enumerate(node)]
            finally:
                self._open.discard(id(node))
        if isinstance(node, str):
            return self._expand(str(node), path)
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if node is None or isinstance(node, date | bytes):
            return node  # pydantic reports these as the wrong type where they do not fit
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag == "tag:yaml.org,2002:str" and isinstance(getattr(node, "value", None), str):
            return self._expand(node.value, path)  # `!!str 5s`
        what = "a set" if isinstance(node, AbstractSet) else f"tagged {tag}" if tag else type(node).__name__
        self.problem(path, f"unsupported YAML value ({what})")
        return None

    def _mapping(self, node: dict[Any, Any], path: _Path, line: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            key_line = _position(node, "key", key, line)
            if not isinstance(key, str) or isinstance(key, bool):
                self.problem(path, f"keys must be strings, got {_describe(key, False)}", key_line)
                continue
            key = str(key)
            nested = isinstance(value, dict | list)
            value_line = key_line if nested else _position(node, "value", key, key_line)
            self.lines.at.setdefault((*path, key), key_line)
            out[key] = self.read(value, (*path, key), value_line)
        return out

    def _expand(self, text: str, path: _Path) -> str:
        if "$" not in text:
            return text

        def substitute(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            ref = m.group(1)
            name, sep, default = ref.partition(":-")
            if not _ENV_NAME_RE.match(name):
                raise _ExpandError(f"invalid variable reference ${{{ref}}} (expected ${{NAME}} or ${{NAME:-default}})")
            value = self.env.get(name)
            if value is None or (sep and value == ""):
                if sep:
                    return default
                raise _ExpandError(f"environment variable {name} is not set (used as ${{{name}}})")
            return value

        try:
            pieces = _VAR_RE.split(text)
            if any("${" in piece for piece in pieces[::2]):
                raise _ExpandError("unterminated ${ (write $${ for a literal ${)")
            result = _VAR_RE.sub(substitute, text)
        except _ExpandError as exc:
            self.problem(path, str(exc))
            self.failed_paths.add(path)  # pydantic's complaint about the unexpanded text would repeat it
            return text
        if result != text:
            self.expanded[path] = (text, result)
        return result


class _ExpandError(Exception):
    pass


def _position(node: Any, what: str, arg: Any, default: int) -> int:
    """1-based line of ``node.lc.<what>(arg)``; ``default`` where ruamel has none (e.g. keys merged with <<)."""
    try:
        line = getattr(node.lc, what)(arg)[0]
    except (AttributeError, KeyError, TypeError, IndexError):
        return default
    return line + 1 if isinstance(line, int) else default


def _yaml_problem(exc: YAMLError, file: str) -> ConfigProblem:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, MaxDepthExceededError):
            what = f"nested more than {_MAX_DEPTH} levels deep"
        # ruamel quotes both values of a duplicate key; they may be secrets.
        what = what.split(" with value")[0]
        return ConfigProblem(file, (mark.line + 1) if mark else 0, f"YAML syntax error: {what}")
    return ConfigProblem(file, 0, f"YAML error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


# ------------------------------------------------------------------ pydantic errors -> problems


def _format_path(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]" if out else json.dumps(part)
    return out


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "true/false"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
    (int, "an integer"), (float, "a number"), (date, "a date"), (type(None), "null"),
)  # fmt: skip


def _kind(value: Any) -> str:
    """What a YAML value is, in the file's terms, without its content."""
    return next((word for tp, word in _KINDS if isinstance(value, tp)), f"a {type(value).__name__}")


def _describe(value: Any, secret: bool) -> str:
    if secret or isinstance(value, dict | list | set | bytes) or value is None:
        return _kind(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text)
    return str(value)


@dataclass(slots=True)
class _Where:
    path: _Path  # into the raw tree (union tags removed)
    model: type[BaseModel] | None  # the model that owns the last key
    secret: bool
    union: Mapping[str, type[BaseModel]] | None  # set when the loc ends at a tagged union


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated and not _union_tags(tp):
            tp = get_args(tp)[0]
        elif origin is Union or origin is UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _union_tags(tp: Any) -> dict[str, type[BaseModel]]:
    """The members of a tagged union annotation, by tag; empty for anything else."""
    if get_origin(tp) is not Annotated:
        return {}
    inner = get_args(tp)[0]
    if get_origin(inner) is not Union:
        return {}
    tags = {}
    for member in get_args(inner):
        if get_origin(member) is Annotated:
            model, *meta = get_args(member)
            for m in meta:
                if isinstance(m, Tag):
                    tags[m.tag] = model
    return tags


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _resolve(loc: tuple[str | int, ...]) -> _Where:
    tp: Any = Config
    path: list[str | int] = []
    owner: type[BaseModel] | None = None
    secret = False
    after_dict_key = False
    for el in loc:
        if el == "[key]" and after_dict_key:
            break  # pydantic's marker for "the key itself is invalid", not a level of the tree
        after_dict_key = get_origin(_unwrap(tp)) is dict
        tp = _unwrap(tp)
        tags = _union_tags(tp)
        if tags:
            tp = tags.get(str(el))
            continue  # pydantic puts the tag into the loc; the raw tree has no such level
        path.append(el)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(el, str):
            owner = tp
            info = _field(tp, el)
            tp = info.annotation if info else None
            if info and isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret"):
                secret = True
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
    tp = _unwrap(tp)
    tags = _union_tags(tp)
    return _Where(tuple(path), owner, secret, tags or None)


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_WORDS = {
    "model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
    "list_type": "a list", "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
}  # fmt: skip


def _message(error: Mapping[str, Any], where: _Where) -> tuple[_Path, str]:
    """The path to report an error at and its message, in the file's terms (never a secret value)."""
    kind = error["type"]
    value = error.get("input")
    path = where.path
    ctx = error.get("ctx") or {}
    if not path and kind in ("extra_forbidden", "missing"):
        return path, str(error["msg"])  # cannot happen with the loc pydantic gives; never crash on it
    if kind == "extra_forbidden":
        return path, "unknown key" + _did_you_mean(str(path[-1]), _keys_of(where.model))
    if kind == "missing":
        return path[:-1], f"missing required key {path[-1]!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = sorted(where.union or {})
        expected = ", ".join(tags)
        if not isinstance(value, Mapping):
            return path, f"expected a mapping, got {_kind(value)}"
        if kind == "union_tag_not_found" or value.get("type") is None:
            return path, f"missing required key 'type' (one of: {expected})"
        tag = str(ctx.get("tag", value.get("type")))
        return (*path, "type"), f"unknown type {tag!r}{_did_you_mean(tag, tags)}; expected one of: {expected}"
    if kind in ("value_error", "assertion_error"):
        return path, str(ctx.get("error", error["msg"]))
    if kind in _TYPE_WORDS:
        return path, f"expected {_TYPE_WORDS[kind]}, got {_describe(value, where.secret)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        bound = next(iter(ctx.values()), "?")
        return path, f"must be {words[kind]} {bound}, got {_describe(value, where.secret)}"
    return path, str(error["msg"])


def _validation_problems(exc: ValidationError, reader: _TreeReader, file: str) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        where = _resolve(tuple(error["loc"]))
        if any(where.path[: len(p)] == p for p in reader.failed_paths):
            continue  # already reported (e.g. an unset ${VAR})
        path, message = _message(error, where)
        message = reader.redact(message, where.path, path)
        text = f"{_format_path(path)}: {message}" if path else message
        problems.append(ConfigProblem(file, reader.lines.line(path), text))
    return problems


# ------------------------------------------------------------------ public loading API


def _finish(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: p.line)


def parse_config(text: str, filename: str = "<config>", env: Mapping[str, str] = os.environ) -> Config:
    """Validate config text; raise ConfigError listing every problem (``filename`` names them).

    An empty document is the default config. Relative TLS file paths are resolved against the
    directory of ``filename`` (the working directory for a pseudo-name such as ``<config>``).
    """
    old_yaml = _OLD_YAML_RE.search(text)
    if old_yaml:  # 1.1 reads `yes` as true and `010` as 8; ruamel would also warn rather than fail
        line = text.count("\n", 0, old_yaml.start()) + 1
        raise ConfigError([ConfigProblem(filename, line, "only YAML 1.2 is supported (remove the %YAML directive)")])
    yaml = YAML(typ="rt", pure=True)
    yaml.max_depth = _MAX_DEPTH
    yaml.composer.warn_double_anchors = False  # redefining an anchor is valid YAML: the later one wins
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, filename)]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(filename, 0, "YAML nesting is too deep")]) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # ruamel fails this way on some valid but odd YAML, e.g. a mapping used as a key (`? {a: 1}`).
        message = f"YAML structure mlwatch cannot read ({type(exc).__name__}: {exc})"
        raise ConfigError([ConfigProblem(filename, 0, message)]) from None
    if document is None:
        return default_config()
    reader = _TreeReader(filename, env)
    try:
        tree = reader.read(document, (), _node_line(document))
    except RecursionError:
        raise ConfigError([ConfigProblem(filename, 0, "YAML nesting is too deep")]) from None
    if not isinstance(tree, dict):
        message = f"the top level must be a mapping of keys such as storage, server and sources, got {_kind(tree)}"
        raise ConfigError([ConfigProblem(filename, _node_line(document), message)])
    problems = list(reader.problems)
    problems += _duplicate_source_names(tree, reader, filename)
    base_dir = Path.cwd() if filename.startswith("<") else Path(filename).resolve().parent
    context = {"env": env, "base_dir": base_dir, "from_file": True}
    config: Config | None = None
    try:
        config = Config.model_validate(tree, context=context)
    except ValidationError as exc:
        problems += _validation_problems(exc, reader, filename)
    except RecursionError:
        problems.append(ConfigProblem(filename, 0, "the config is nested too deeply"))
    if config is not None:
        decls = [(d.name, d.type, reader.lines.line(d.loc)) for d in config.metric_declarations()]
        problems += check_metric_types(decls, filename)
    if problems or config is None:
        raise ConfigError(_finish(problems))
    return config


def _node_line(node: Any) -> int:
    line = getattr(getattr(node, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else 1


def config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The file :func:`load_config` reads: ``path``, else ``$MLWATCH_CONFIG``, else ./mlwatch.yaml if it
    exists; None means the built-in default."""
    if path is not None:
        return Path(path)
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """Load and validate the config that :func:`config_path` picks; raise ConfigError with every problem."""
    chosen = config_path(path, env)
    if chosen is None:
        return default_config()
    name = str(chosen)
    try:
        data = chosen.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(name, 0, f"cannot read the config file: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(name, line, "the config file is not valid UTF-8")]) from None
    return parse_config(text, name, env)


def check_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> list[ConfigProblem]:
    """Every problem in the config :func:`config_path` picks, in line order; empty when it is valid."""
    try:
        load_config(path, env)
    except ConfigError as exc:
        return exc.problems
    return []
