"""The ``mlwatch`` command line: thin click commands that call into the package.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. Errors are one line per problem
on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from mlwatch import __version__
from mlwatch.commands.common import common_options, handle_errors

__all__ = ["common_options", "handle_errors", "main"]

def _load(config_path: str | None) -> Any:
    from mlwatch.config import load_config

    return load_config(config_path)


def _db_url(cfg: Any, db_url: str | None) -> str:
    return str(cfg.with_overrides(db_url=db_url).storage.url)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mlwatch", message="%(prog)s %(version)s")
def main() -> None:
    """mlwatch: monitoring for machine-learning models and the services around them.

    Pushgateway-compatible pushes, Prometheus-compatible exposition and federation, one SQLite file.
    """


@main.command()
@common_options
@click.option("--listen", metavar="HOST:PORT", help="Override server.listen.")
@handle_errors
def daemon(config_path: str | None, db_url: str | None, debug: bool, log_format: str, listen: str | None) -> None:
    """Run storage, the push API and the HTTP server until SIGINT/SIGTERM; SIGHUP reloads the config."""
    from mlwatch.config import config_path as resolve_path
    from mlwatch.daemon import Daemon, DaemonOptions

    cfg = _load(config_path).with_overrides(listen=listen, db_url=db_url)
    path = resolve_path(config_path)
    d = Daemon(cfg, DaemonOptions(config_path=str(path) if path else None, db_url=db_url, listen=listen))
    asyncio.run(d.run())


@main.command()
@common_options
@click.option("--speed", type=click.FloatRange(min=0.1, max=100), default=1.0, show_default=True,
              help="Scale time: 2 runs the scenario twice as fast.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Working directory (default: a new temp dir).")
@click.option("--listen", default="127.0.0.1:9091", show_default=True, metavar="HOST:PORT", help="Where the daemon listens.")
@click.option("--stats-port", type=int, default=0, help="Port of the demo's JSON endpoint (default: a free one).")
@handle_errors
def demo(config_path: str | None, db_url: str | None, debug: bool, log_format: str, speed: float,
         directory: str | None, listen: str, stats_port: int) -> None:
    """A daemon on a temp dir with a synthetic model whose accuracy drops: alerts fire within ~2 min."""
    import socket

    from mlwatch.demo import demo_config, make_plan, run_demo

    if not stats_port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            stats_port = sock.getsockname()[1]
    plan = make_plan(directory, listen, stats_port, speed)
    cfg = demo_config(plan).with_overrides(listen=listen)
    db = plan.directory / "mlwatch.db"

    def announce() -> None:
        click.echo(
            f"mlwatch demo: working in {plan.directory}\n"
            f"  database   {db}\n"
            f"  config     {plan.directory / 'mlwatch.yaml'}\n"
            f"  HTTP       http://{listen}/metrics\n"
            f"The fraud-v2 model's accuracy drops after ~{60 / speed:.0f}s; alerts fire within ~{120 / speed:.0f}s.\n"
            f"Watch it in another terminal:  mlwatch tui --db sqlite:///{db}\n"
            "Stop with Ctrl-C.",
            err=True,
        )

    asyncio.run(run_demo(plan, cfg, announce))


@main.command("check-config")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@common_options
@handle_errors
def check_config(file: str | None, config_path: str | None, db_url: str | None, debug: bool, log_format: str) -> None:
    """Validate a config file; print every problem as FILE:LINE: message; exit 2 if any."""
    from mlwatch.config import config_path as resolve_path

    target = file or config_path
    _load(target)
    where = resolve_path(target)
    click.echo(f"{where}: OK" if where else "built-in default: OK")


@main.group()
def db() -> None:
    """Database migrations and backups."""


@db.command("upgrade")
@common_options
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handle_errors
def db_upgrade(config_path: str | None, db_url: str | None, debug: bool, log_format: str, revision: str) -> None:
    """Apply Alembic migrations (the daemon also does this on start)."""
    from mlwatch.storage.database import current_revision, make_engine, upgrade

    url = _db_url(_load(config_path), db_url)
    engine = make_engine(url)
    upgrade(engine, revision)
    click.echo(f"{url}: at revision {current_revision(engine)}")


@db.command("current")
@common_options
@handle_errors
def db_current(config_path: str | None, db_url: str | None, debug: bool, log_format: str) -> None:
    """Print the database's migration revision and the newest one this mlwatch knows."""
    from mlwatch.storage.database import current_revision, head_revision, make_engine

    url = _db_url(_load(config_path), db_url)
    cur = current_revision(make_engine(url, readonly=True))
    head = head_revision()
    state = "up to date" if cur == head else f"behind (head is {head}; run `mlwatch db upgrade`)"
    click.echo(f"{cur or 'empty'} ({state})")


def _register_commands() -> None:
    from mlwatch.commands.alerts import alerts_command
    from mlwatch.commands.importer import import_command
    from mlwatch.commands.notify import notify_group
    from mlwatch.commands.query import query_command
    from mlwatch.commands.silence import silence_group
    from mlwatch.commands.tui import tui_command

    for command in (query_command, import_command, alerts_command, silence_group, notify_group, tui_command):
        main.add_command(command)


_register_commands()

@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@common_options
@handle_errors
def db_backup(file: str, config_path: str | None, db_url: str | None, debug: bool, log_format: str) -> None:
    """Write a consistent copy of the (possibly live) database to FILE."""
    from mlwatch.storage.backup import backup

    url = _db_url(_load(config_path), db_url)
    dest = backup(url, file)
    click.echo(f"backup written to {dest}")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="mlwatch")
