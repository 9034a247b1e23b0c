"""The error tree of mlwatch.

    MlwatchError
     ├── ConfigError        a config file that does not validate (carries every problem)
     ├── StorageError       the database cannot be opened, migrated or written
     │    ├── StorageUnavailable   transient: locked, read-only or full; retry later
     │    └── DatabaseLocked       another daemon holds the database
     ├── SourceError        a source failed to collect
     ├── ParseError         a malformed body or line (exposition text, protobuf, JSON)
     ├── PushError          a push that Pushgateway semantics refuse (type conflict, bad path)
     ├── QueryError         a PromQL expression that cannot be parsed or evaluated
     └── NotifyError        a notification could not be delivered

Only ``cli.py`` turns these into one-line user messages.
"""

from __future__ import annotations

from dataclasses import dataclass


class MlwatchError(Exception):
    """Root of every error mlwatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file, located by line (0 when unknown)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class ConfigError(MlwatchError):
    """A config that does not validate; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StorageError(MlwatchError):
    """The database cannot be opened, migrated or written."""


class StorageUnavailable(StorageError):
    """A transient write failure (locked, read-only, disk full): the caller should retry later."""


class DatabaseLocked(StorageError):
    """Another daemon already holds the database."""


class SourceError(MlwatchError):
    """A source failed to collect."""


class ParseError(MlwatchError):
    """A malformed input; ``line`` is 1-based, 0 when not line-oriented."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


class PushError(MlwatchError):
    """A push refused by Pushgateway's rules (type conflict, reserved name, bad grouping key)."""


class QueryError(MlwatchError):
    """A PromQL expression that cannot be parsed or evaluated."""


class NotifyError(MlwatchError):
    """A notification could not be delivered."""
