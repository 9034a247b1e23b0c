"""``mlwatch notify test NOTIFIER``: send a test notification through one notifier.

Through the running daemon when one holds the database (the notification goes through its outbox
and history), else directly, recording the attempt in the database when there is one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import click

from mlwatch.commands.common import common_options, handle_errors
from mlwatch.commands.silence import usage
from mlwatch.errors import MlwatchError, NotifyError


@click.group("notify")
def notify_group() -> None:
    """Notifications."""


@notify_group.command("test")
@click.argument("notifier")
@common_options
@handle_errors
def notify_test(notifier: str, config_path: str | None, db_url: str | None, debug: bool, log_format: str) -> None:
    """Send a test notification through NOTIFIER (a name from `notifiers:`)."""
    from mlwatch.config import load_config
    from mlwatch.notify.channels import make_channel
    from mlwatch.notify.testmsg import make_test_payload
    from mlwatch.readside import DaemonClient
    from mlwatch.storage import alertstore
    from mlwatch.storage.database import read_lock_owner

    cfg = load_config(config_path).with_overrides(db_url=db_url)
    names = [n.name for n in cfg.notifiers]
    if notifier not in names:
        known = ", ".join(names) if names else "none configured"
        usage(f"no notifier named {notifier!r} (notifiers: {known})")
    path = Path(cfg.storage.path)
    owner = read_lock_owner(path) if path.name else None
    if owner is not None and owner.get("listen"):
        data = DaemonClient.for_config(cfg, str(owner["listen"])).request("POST", f"/api/v1/notify/test/{notifier}")["data"]
        outcome = data["outcome"]
    else:
        ncfg = next(n for n in cfg.notifiers if n.name == notifier)
        now = time.time()
        payload = make_test_payload(notifier, now)
        started = time.perf_counter()
        try:
            asyncio.run(make_channel(ncfg).send(payload))
            outcome, error = "delivered", ""
        except NotifyError as exc:
            outcome, error = f"failed: {exc}", str(exc)
        if path.exists():
            conn = alertstore.open_direct(path)
            try:
                key = payload["mlwatch"]["idempotencyKey"]
                alertstore.enqueue(conn, [(key, notifier, "test", payload, now, now)])
                nid = next(n.id for n in alertstore.load_notifications(conn, now - 1) if n.key == key)
                status = "delivered" if not error else "expired"
                alertstore.record_attempt(conn, nid, now, not error, error, time.perf_counter() - started, status, now)
            except sqlite3.Error as exc:  # e.g. an old schema: the test itself still counts
                click.echo(f"mlwatch: warning: the attempt was not recorded: {exc}", err=True)
            finally:
                conn.close()
    if outcome != "delivered":
        raise MlwatchError(f"test notification through {notifier!r}: {outcome}")
    click.echo(f"test notification delivered through {notifier!r}")
