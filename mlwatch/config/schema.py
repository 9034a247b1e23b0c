"""The top-level config models: storage, server, limits, push, and the whole :class:`Config`."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mlwatch.config._fields import (
    _D,
    _H,
    _MIN,
    _S,
    SECRET,
    Duration,
    EnvVarName,
    PositiveDuration,
    PositiveInt,
    Size,
    _ctx,
    _Model,
)
from mlwatch.config.alerting import AlertingConfig, InhibitRuleConfig, Notifiers, Routes, RuleFiles, Rules
from mlwatch.config.sources import AnySource, MetricDeclaration
from mlwatch.errors import ConfigError, ConfigProblem
from mlwatch.model import MetricType

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


def _series_selector(text: str) -> str:
    from mlwatch.errors import QueryError
    from mlwatch.promql.selector import parse_selector

    try:
        parse_selector(text)
    except QueryError as exc:
        raise ValueError(str(exc)) from None
    return text


class RetentionOverride(_Model):
    """A retention for the series a selector matches (the first matching override wins)."""

    match: Annotated[str, AfterValidator(_series_selector)]
    retention: PositiveDuration


class DownsampleLevel(_Model):
    """Rollups (min, max, sum, count, last per ``step``) of data older than ``after``."""

    after: PositiveDuration
    step: PositiveDuration


class StorageConfig(_Model):
    """Where samples are stored and for how long."""

    url: Annotated[str, AfterValidator(_sqlite_url)] = "sqlite:///mlwatch.db"
    """A SQLAlchemy URL; relative paths are relative to the working directory, as SQLAlchemy does."""
    retention: PositiveDuration = 30 * _D
    out_of_order_window: Duration = 1 * _H
    max_size: Size | None = None
    retention_overrides: list[RetentionOverride] = Field(default_factory=list)
    downsample: list[DownsampleLevel] = Field(default_factory=list)

    @property
    def sqlalchemy_url(self) -> URL:
        return make_url(self.url)

    @property
    def path(self) -> Path:
        """The database file (relative to the working directory when the URL's path is relative)."""
        return Path(self.sqlalchemy_url.database or "")


# ------------------------------------------------------------------ server

_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\Z")
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


_BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}\Z")


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
    scrape_buffer_samples: PositiveInt = 1_000_000
    """Scrape results (samples) kept in memory while storage is unavailable; older ones are dropped and counted."""


class PushConfig(_Model):
    """Pushgateway-compatible pushes."""

    sample_interval: PositiveDuration = 15 * _S
    accept_timestamps: bool = True
    default_ttl: PositiveDuration | None = None
    """Delete a push group this long after its last push; None keeps groups until deleted."""


# ------------------------------------------------------------------ the whole config


class Config(_Model):
    """The whole config file."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    evaluation_interval: PositiveDuration = 15 * _S
    sources: list[AnySource] = Field(default_factory=list)
    # Rules and alerting (models in config/alerting.py); notifiers come before routes, which name them.
    rule_files: RuleFiles = Field(default_factory=list)
    rules: Rules = Field(default_factory=list)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    notifiers: Notifiers = Field(default_factory=list)
    routes: Routes = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)

    def metric_declarations(self) -> Iterator[MetricDeclaration]:
        """Every metric the config declares with a type, located from the top of the file."""
        for i, source in enumerate(self.sources):
            for decl in source.declared_metrics():
                yield MetricDeclaration(decl.name, decl.type, ("sources", i, *decl.loc))

    def with_overrides(self, listen: str | None = None, db_url: str | None = None) -> Config:
        """This config with ``server.listen`` and/or ``storage.url`` replaced (the CLI's ``--listen``/``--db``).

        The new values are validated like the file's; a bad one raises ConfigError naming the option.
        """
        problems = []
        update: dict[str, Any] = {}
        for option, value, check in (("--listen", listen, _listen), ("--db", db_url, _sqlite_url)):
            if value is None:
                continue
            try:
                check(value)
            except ValueError as exc:
                problems.append(ConfigProblem(option, 0, str(exc)))
        if problems:
            raise ConfigError(problems)
        if listen is not None:
            update["server"] = self.server.model_copy(update={"listen": listen})
        if db_url is not None:
            update["storage"] = self.storage.model_copy(update={"url": db_url})
        return self.model_copy(update=update)


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
