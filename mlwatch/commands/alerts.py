"""``mlwatch alerts``: active alerts and the alert history, as a table or JSON.

Reads the database (read-only), so it works with and without a running daemon and on a backup copy.
JSON items carry the fields of Prometheus' ``/api/v1/alerts`` items (``labels``, ``annotations``,
``state``, ``activeAt``, ``value``), plus ``condition`` (the rule's compiled expression) and, in the
history, ``event``, ``time`` and ``resolvedAt``. The sample count behind an alert's value, where known,
is its ``samples`` annotation (:mod:`mlwatch.rules.samples`), shown in the table's SAMPLES column.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from mlwatch.commands.common import common_options, handle_errors
from mlwatch.commands.silence import _table, open_store, usage


@click.command("alerts")
@click.option("--active", "mode", flag_value="active", default=True, help="Pending and firing alerts (default).")
@click.option("--history", "mode", flag_value="history", help="Every transition (pending, firing, resolved).")
@click.option("--since", default="24h", show_default=True, help="How far back the history goes (e.g. 1h, 7d).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: a list of /api/v1/alerts items (plus resolvedAt in the history).",
)
@common_options
@handle_errors
def alerts_command(
    mode: str, since: str, output: str, config_path: str | None, db_url: str | None, debug: bool, log_format: str
) -> None:
    """Active alerts, or the alert history."""
    from mlwatch.model import parse_duration_ms
    from mlwatch.rules.state import iso
    from mlwatch.rules.templates import go_float
    from mlwatch.server.alerting_api import event_dict
    from mlwatch.storage import alertstore

    try:
        since_s = parse_duration_ms(since) / 1000
    except ValueError as exc:
        usage(f"--since: {exc}")
    _cfg, _client, conn = open_store(config_path, db_url, write=False)
    try:
        if mode == "history":
            items = [event_dict(e) for e in alertstore.load_events(conn, time.time() - since_s)]
        else:
            conditions = {e.fingerprint: e.condition for e in alertstore.load_events(conn, 0, 100_000)}
            items = []
            for a in alertstore.load_alerts(conn):
                items.append(
                    {
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "state": a.state,
                        "activeAt": iso(a.active_at),
                        "value": go_float(a.value),
                        "condition": conditions.get(a.fingerprint, ""),
                    }
                )
    finally:
        conn.close()
    if output == "json":
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("(no alerts)" if mode == "active" else "(no alert events)")
        return
    rows: list[tuple[Any, ...]] = []
    for it in items:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(it["labels"].items()) if k != "alertname")
        summary = it["annotations"].get("summary", "")
        when = it.get("time", it["activeAt"])
        rows.append(
            (
                when,
                it["state"].upper(),
                it["labels"].get("alertname", ""),
                labels,
                it["value"],
                it["annotations"].get("samples", ""),
                it.get("condition", ""),
                summary,
            )
        )
    _table(
        (
            "TIME" if mode == "history" else "ACTIVE SINCE",
            "STATE",
            "ALERT",
            "LABELS",
            "VALUE",
            "SAMPLES",
            "CONDITION",
            "SUMMARY",
        ),
        rows,
    )
