"""``mlwatch query EXPR``: evaluate PromQL against the store, as a table, JSON (the API's body) or CSV.

Reads through a read-only connection, so it works while the daemon runs and on a backup copy.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
import time
from typing import Any

import click

from mlwatch.commands.common import common_options, handle_errors
from mlwatch.promql.engine import QueryResult
from mlwatch.promql.jsonfmt import format_value, success_body
from mlwatch.promql.params import parse_step, parse_time
from mlwatch.promql.values import format_labels


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _rows(res: QueryResult) -> list[tuple[str, int, float]]:
    if res.kind == "scalar" and res.scalar is not None:
        return [("scalar", res.scalar[0], res.scalar[1])]
    rows = []
    for labels, ts, vals in res.series:
        name = format_labels(labels)
        for t, v in zip(ts.tolist(), list(vals), strict=True):
            rows.append((name, int(t), float(v)))
    return rows


def render_table(res: QueryResult) -> str:
    if res.kind == "string" and res.string is not None:
        return res.string[1]
    rows = [(s, _iso(t), format_value(v)) for s, t, v in _rows(res)]
    if not rows:
        return "(no data)"
    head = ("SERIES", "TIME", "VALUE")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}")
    return "\n".join(lines)


def write_csv(res: QueryResult, out: Any) -> None:
    w = csv.writer(out, lineterminator="\n")
    if res.kind == "string" and res.string is not None:
        w.writerow(["timestamp", "value"])
        w.writerow([res.string[0] / 1000, res.string[1]])
        return
    label_names = sorted({k for labels, _, _ in res.series for k, _ in labels})
    w.writerow([*label_names, "timestamp", "value"])
    if res.kind == "scalar" and res.scalar is not None:
        w.writerow([*([""] * len(label_names)), res.scalar[0] / 1000, format_value(res.scalar[1])])
        return
    for labels, ts, vals in res.series:
        d = dict(labels)
        cells = [d.get(k, "") for k in label_names]
        for t, v in zip(ts.tolist(), list(vals), strict=True):
            w.writerow([*cells, t / 1000, format_value(float(v))])


@click.command("query")
@click.argument("expr")
@click.option("--time", "at", metavar="T", help="Evaluation time of an instant query (RFC 3339, Unix seconds, -1h, now).")
@click.option("--start", metavar="T", help="Start of a range query.")
@click.option("--end", metavar="T", help="End of a range query (default: now).")
@click.option("--step", metavar="D", help="Resolution of a range query (default: about 250 points).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="json prints exactly the body /api/v1/query (or query_range) returns.")
@common_options
@handle_errors
def query_command(expr: str, at: str | None, start: str | None, end: str | None, step: str | None, output: str,
                  config_path: str | None, db_url: str | None, debug: bool, log_format: str) -> None:
    """Evaluate the PromQL expression EXPR against the store."""
    from mlwatch.config import load_config
    from mlwatch.promql.engine import Engine, EngineOptions
    from mlwatch.storage.database import make_engine
    from mlwatch.storage.reader import Reader

    cfg = load_config(config_path)
    url = db_url or cfg.storage.url
    now = int(time.time() * 1000)
    if at and (start or end or step):
        raise click.UsageError("--time is for an instant query; --start/--end/--step for a range query")
    if (end or step) and not start:
        raise click.UsageError("a range query needs --start")
    engine = make_engine(url, readonly=True)
    try:
        limits = cfg.limits
        eng = Engine(Reader(engine), EngineOptions(lookback_ms=limits.lookback_delta, timeout_ms=limits.query_timeout,
                                                   max_samples=limits.query_max_samples))
        if start:
            s = parse_time(start, now_ms=now)
            e = parse_time(end, now_ms=now) if end else now
            st = parse_step(step) if step else max(1000, (e - s) // 250 // 1000 * 1000)
            res = eng.range(expr, s, e, st)
        else:
            res = eng.instant(expr, parse_time(at, now_ms=now) if at else now)
    finally:
        engine.dispose()
    if output == "json":
        click.echo(success_body(res))
    elif output == "csv":
        write_csv(res, sys.stdout)
    else:
        click.echo(render_table(res))
