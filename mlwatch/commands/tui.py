"""``mlwatch tui``: the terminal UI on the configured database (read-only; works without the daemon)."""

from __future__ import annotations

import sys

import click

from mlwatch.commands.common import common_options, handle_errors


@click.command("tui")
@click.option(
    "--refresh",
    default="5s",
    show_default=True,
    metavar="D",
    help="Auto-refresh interval (Prometheus duration; 0 turns it off; p pauses it in the UI).",
)
@click.option("--light", is_flag=True, help="Start with the light theme (t toggles).")
@common_options
@handle_errors
def tui_command(
    refresh: str, light: bool, config_path: str | None, db_url: str | None, debug: bool, log_format: str
) -> None:
    """The terminal UI: overview, explorer (charts), alerts (and silences), notifications, sources."""
    from mlwatch.model import parse_duration_ms
    from mlwatch.readside import open_readside

    try:
        refresh_s = 0.0 if refresh.strip() == "0" else parse_duration_ms(refresh) / 1000
    except ValueError as exc:
        click.echo(f"mlwatch: error: --refresh: {exc}", err=True)
        sys.exit(2)
    data = open_readside(config_path, db_url)
    from mlwatch.tui.app import MlwatchApp

    try:
        MlwatchApp(
            data, refresh_s=refresh_s, theme="textual-light" if light else "textual-dark", source=str(data.db_path)
        ).run()
    finally:
        data.close()
