"""Options and error handling shared by every command (the only place errors become user messages).

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. Errors are one line per problem
on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mlwatch.errors import ConfigError, MlwatchError

F = TypeVar("F", bound=Callable[..., Any])


def common_options(fn: F) -> F:
    """-c/--config, --db, --debug and --log-format, accepted by every command."""
    fn = click.option(
        "-c", "--config", "config_path", type=click.Path(dir_okay=False), envvar="MLWATCH_CONFIG",
        help="Config file (default: $MLWATCH_CONFIG, else ./mlwatch.yaml, else the built-in default).",
    )(fn)
    fn = click.option("--db", "db_url", metavar="URL", help="Storage URL; overrides storage.url (e.g. sqlite:///mlwatch.db).")(fn)
    fn = click.option("--debug", is_flag=True, help="Debug logging, and tracebacks on errors.")(fn)
    fn = click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        help="Log lines on stderr as readable text or one JSON object per line.",
    )(fn)
    return fn


def handle_errors(fn: F) -> F:
    """Turn mlwatch errors into one-line messages and exit codes (the only place that does)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        from mlwatch.logs import setup_logging

        setup_logging(kwargs.get("log_format") or "text", "debug" if debug else "info")
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            if debug:
                raise
            for line in [str(p) for p in exc.problems] or [str(exc)]:
                click.echo(line, err=True)
            sys.exit(2)
        except MlwatchError as exc:
            if debug:
                raise
            click.echo(f"mlwatch: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
            if debug:
                raise
            click.echo(f"mlwatch: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
