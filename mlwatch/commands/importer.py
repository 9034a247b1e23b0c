"""``mlwatch import FILE``: backfill history from OpenMetrics text or CSV.

The whole file is validated first (a file with errors imports nothing and says where), then read a
second time and written in batches, each its own short transaction, with ``backfill=True`` (exempt
from the out-of-order window; a sample at a stored timestamp replaces it, so a re-run stores nothing
twice). Both passes stream, so memory stays constant. When a daemon holds the database, the batches
go through its ``POST /api/v1/import`` instead.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from mlwatch.commands.common import common_options, handle_errors
from mlwatch.sources.importfmt import FORMATS, ImportStats, batches, read_items, render_openmetrics, validate
from mlwatch.errors import MlwatchError, ParseError

BATCH = 50_000
REMOTE_BATCH = 20_000


def _lines(fh: TextIO, progress: Any, task: Any) -> Iterator[str]:
    done = 0
    for k, line in enumerate(fh):
        done += len(line)
        if k % 20_000 == 0:
            progress.update(task, completed=done)
        yield line
    progress.update(task, completed=done)


def _progress(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=quiet, transient=False)


def _guess_format(path: Path) -> str:
    return "csv" if path.suffix.lower() == ".csv" else "openmetrics"


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: csv for *.csv, else openmetrics).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@common_options
@handle_errors
def import_command(file: Path, fmt: str | None, quiet: bool, config_path: str | None, db_url: str | None,
                   debug: bool, log_format: str) -> None:
    """Backfill history from FILE (OpenMetrics text with timestamps, or CSV), with a progress bar.

    CSV needs a header with metric, timestamp (Unix seconds or RFC 3339) and value columns; every
    other column is a label. Samples older than storage.retention are skipped and counted.
    """
    from mlwatch.config import load_config
    from mlwatch.storage.database import read_lock_owner, sqlite_path

    cfg = load_config(config_path)
    url = db_url or cfg.storage.url
    fmt = fmt or _guess_format(file)
    size = file.stat().st_size
    started = time.monotonic()
    with _progress(quiet) as progress:
        task = progress.add_task("validating", total=size)
        with file.open(encoding="utf-8", newline="") as fh:
            try:
                problems, total = validate(read_items(_lines(fh, progress, task), fmt))
            except UnicodeDecodeError as exc:
                raise ParseError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if problems:
            progress.stop()
            for p in problems:
                click.echo(f"{file}:{p.line}: {p.message}" if p.line else f"{file}: {p.message}", err=True)
            raise MlwatchError(f"{file}: {len(problems)} problem(s) found; nothing imported")
        db_path = sqlite_path(url)
        owner = read_lock_owner(db_path) if db_path is not None else None
        retention_ms = cfg.storage.retention
        cutoff = int(time.time() * 1000) - retention_ms
        stats = ImportStats()
        task2 = progress.add_task("importing ", total=size)
        with file.open(encoding="utf-8", newline="") as fh:
            items = read_items(_lines(fh, progress, task2), fmt)
            if owner is not None and owner.get("listen"):
                _remote(cfg, str(owner["listen"]), items, stats)
            else:
                _local(cfg, url, items, cutoff, stats)
    seconds = max(time.monotonic() - started, 1e-9)
    via = " through the running daemon" if owner else ""
    click.echo(
        f"imported {stats.samples} samples from {file}{via} in {seconds:.1f}s ({stats.samples / seconds:,.0f} samples/s); "
        f"{stats.skipped_old} older than the retention skipped (of {total} in the file)"
    )


def _local(cfg: Any, url: str, items: Any, cutoff: int, stats: ImportStats) -> None:
    from mlwatch.storage.database import make_engine, upgrade
    from mlwatch.storage.writer import WriteBatch, Writer

    engine = make_engine(url)
    upgrade(engine)
    writer = Writer(engine, max_series=cfg.limits.max_series)
    writer.start()
    try:
        for samples, meta, _line in batches(items, cutoff_ms=cutoff, size=BATCH, stats=stats):
            writer.write_sync(WriteBatch(samples=samples, meta=meta, backfill=True))
            stats.samples += len(samples)
    finally:
        writer.stop()
        engine.dispose()


def _remote(cfg: Any, listen: str, items: Any, stats: ImportStats) -> None:
    scheme = "https" if cfg.server.tls else "http"
    host = listen if not listen.startswith("0.0.0.0") else "127.0.0.1" + listen[7:]
    url = f"{scheme}://{host}/api/v1/import?format=openmetrics"
    headers = {"Content-Type": "application/openmetrics-text; charset=utf-8"}
    token = cfg.server.bearer_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    # the cutoff is applied by the daemon, with its clock and retention
    for samples, meta, _line in batches(items, cutoff_ms=-(2**62), size=REMOTE_BATCH, stats=stats):
        body = render_openmetrics(samples, meta).encode()
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120, context=ctx) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise MlwatchError(f"the daemon at {host} refused the import ({exc.code}): {detail}") from None
        except OSError as exc:
            raise MlwatchError(f"cannot reach the daemon at {host}: {exc}") from None
        stats.samples += int(data["data"]["imported"])
        stats.skipped_old += int(data["data"]["skipped_old"])
