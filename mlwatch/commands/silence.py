"""``mlwatch silence add|list|expire``: Alertmanager-style silences.

Through the running daemon's ``/api/v2/silences`` when one holds the database (so it applies at
once), else directly in the database.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import click

from mlwatch.commands.common import common_options, handle_errors
from mlwatch.errors import MlwatchError
from mlwatch.readside import DaemonClient


def usage(message: str) -> NoReturn:
    """A usage error: one line on stderr, exit 2 (``handle_errors`` would take a click exception for a bug)."""
    click.echo(f"mlwatch: error: {message}", err=True)
    sys.exit(2)


def open_store(config_path: str | None, db_url: str | None, *, write: bool) -> tuple[Any, DaemonClient | None, Any]:
    """(config, a client of the daemon holding the DB or None, a direct connection when there is none)."""
    from mlwatch.config import load_config
    from mlwatch.storage import alertstore
    from mlwatch.storage.database import read_lock_owner

    cfg = load_config(config_path).with_overrides(db_url=db_url)
    path = Path(cfg.storage.path)
    owner = read_lock_owner(path) if path.name else None
    if write and owner is not None and owner.get("listen"):
        return cfg, DaemonClient.for_config(cfg, str(owner["listen"])), None
    if not path.exists():
        raise MlwatchError(f"no database at {path} (start the daemon, or pass --db)")
    conn = alertstore.open_direct(path, readonly=not write)
    try:
        conn.execute("SELECT 1 FROM silences LIMIT 1")
    except Exception:  # noqa: BLE001 - sqlite3.OperationalError: an old schema
        conn.close()
        raise MlwatchError(f"{path} has no alerting tables yet: run `mlwatch db upgrade`") from None
    return cfg, None, conn


@click.group("silence")
def silence_group() -> None:
    """Silences with Alertmanager-style matchers (alertname=AccuracyLow, model=~"m.*")."""


@silence_group.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option(
    "--duration", "-d", default="2h", show_default=True, help="How long the silence lasts (e.g. 30m, 2h, 1d)."
)
@click.option("--comment", default="", help="Why (shown with the silence).")
@click.option("--author", default=None, help="Who (default: $USER).")
@common_options
@handle_errors
def silence_add(
    matchers: tuple[str, ...],
    duration: str,
    comment: str,
    author: str | None,
    config_path: str | None,
    db_url: str | None,
    debug: bool,
    log_format: str,
) -> None:
    """Silence alerts matching every MATCHER (name=value, name!=value, name=~regex, name!~regex); prints the id."""
    import os

    from mlwatch.model import parse_duration_ms
    from mlwatch.notify.silences import SilenceError, parse_matcher, rfc3339, silence_from_api
    from mlwatch.storage import alertstore

    try:
        ms = parse_duration_ms(duration)
        parsed = [parse_matcher(m) for m in matchers]
    except (ValueError, SilenceError) as exc:
        usage(str(exc))
    if ms <= 0:
        usage("--duration must be greater than 0")
    now = time.time()
    body = {
        "matchers": [m.api() for m in parsed],
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + ms / 1000),
        "createdBy": author or os.environ.get("USER", "mlwatch"),
        "comment": comment,
    }
    _cfg, client, conn = open_store(config_path, db_url, write=True)
    if client is not None:
        sid = client.request("POST", "/api/v2/silences", body)["silenceID"]
    else:
        try:
            silence = silence_from_api({**body, "id": str(uuid.uuid4())}, now)
        except SilenceError as exc:
            usage(str(exc))
        alertstore.put_silence(conn, silence.row())
        conn.close()
        sid = silence.id
    click.echo(sid)


@silence_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also expired silences.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: the body of Alertmanager's GET /api/v2/silences.",
)
@common_options
@handle_errors
def silence_list(
    show_all: bool, output: str, config_path: str | None, db_url: str | None, debug: bool, log_format: str
) -> None:
    """Active and pending silences (with --all, expired ones too)."""
    from mlwatch.notify.silences import Silence
    from mlwatch.storage import alertstore

    _cfg, _client, conn = open_store(config_path, db_url, write=False)
    now = time.time()
    items = [Silence.from_row(r).api(now) for r in alertstore.load_silences(conn)]
    conn.close()
    if not show_all:
        items = [s for s in items if s["status"]["state"] != "expired"]
    if output == "json":
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("(no silences)")
        return
    rows = [
        (
            s["id"],
            s["status"]["state"],
            s["endsAt"],
            " ".join(_matcher_text(m) for m in s["matchers"]),
            s["createdBy"],
            s["comment"],
        )
        for s in items
    ]
    _table(("ID", "STATE", "ENDS", "MATCHERS", "BY", "COMMENT"), rows)


@silence_group.command("expire")
@click.argument("ids", nargs=-1, required=True)
@common_options
@handle_errors
def silence_expire(
    ids: tuple[str, ...], config_path: str | None, db_url: str | None, debug: bool, log_format: str
) -> None:
    """End silences now."""
    from mlwatch.storage import alertstore

    _cfg, client, conn = open_store(config_path, db_url, write=True)
    for sid in ids:
        if client is not None:
            client.request("DELETE", f"/api/v2/silence/{sid}")
        elif not alertstore.expire_silence(conn, sid, time.time()):
            raise MlwatchError(f"no active silence with id {sid}")
        click.echo(f"expired {sid}")
    if conn is not None:
        conn.close()


def _matcher_text(m: dict[str, Any]) -> str:
    from mlwatch.notify.silences import LabelMatcher

    return str(LabelMatcher(m["name"], m["value"], m.get("isRegex", False), m.get("isEqual", True)))


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    cells = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(head[i]), *(len(r[i]) for r in cells)) for i in range(len(head))]
    click.echo("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
