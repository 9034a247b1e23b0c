"""Soak: ``kill -9`` of a real daemon at random moments under mixed load, N times; nothing acknowledged lost.

The harness is tests/reliability/mixedload.py (the suite runs it with 3 kills in
tests/reliability/test_kill_mixed.py): pushes, an http scrape, a tailed JSONL log, alert rules every
second and a webhook notifier run at once against a real ``mlwatch daemon``; each iteration kills it at
a random moment (sometimes again while it restarts), checks the database offline (integrity, every
acknowledged push exactly once at its receive time, log counters equal to the committed offset), restarts
it on the same database and checks that alerts and pushes continue through its API. At the end the load
stops, the daemon catches up and stops cleanly, and the outbox is checked (every notification delivered;
duplicates only across a kill).

    python benchmarks/soak_kill.py                 # 50 kills
    python benchmarks/soak_kill.py -n 5 --seed 7   # a short one

Prints a summary and exits 1 on any loss, duplicate, integrity failure, alert reset or undelivered
notification (the problems are listed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reliability.mixedload import Findings, MixedLoad

SUMMARY = (
    ("kills", "kills (all)"),
    ("startup_kills", "  of which while restarting"),
    ("acked_pushes", "acknowledged pushes"),
    ("failed_pushes", "pushes without a 2xx"),
    ("failed_pushes_stored", "  of which stored anyway"),
    ("lines_written", "log lines written"),
    ("lines_committed", "log lines committed"),
    ("flap_firings", "MixFlap firings"),
    ("notifications", "notifications in the outbox"),
    ("deliveries", "webhook deliveries"),
    ("notification_dupes", "duplicate deliveries"),
    ("pending_kills", "kills while MixSlow was pending"),
    ("compactions", "compactions completed"),
    ("compaction_failures", "compaction steps failed"),
    ("chunks", "compressed chunks at the end"),
    ("history_samples", "history samples written offline"),
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--iterations", type=int, default=50, help="kills (default 50)")
    p.add_argument("--seed", type=int, default=1, help="random seed of kill moments and load")
    p.add_argument("--run-min", type=float, default=0.3, help="shortest run before a kill, seconds")
    p.add_argument("--run-max", type=float, default=6.0, help="longest run before a kill, seconds")
    p.add_argument("--startup-kill-chance", type=float, default=0.15, help="chance to kill again while restarting")
    p.add_argument("--pushers", type=int, default=3, help="push threads")
    p.add_argument(
        "--bulk", type=int, default=200, help="extra series per push (samples enough for compactions to run)"
    )
    p.add_argument(
        "--history",
        type=int,
        default=300_000,
        help="samples written offline before each restart, so compactions run while kills land",
    )
    p.add_argument("--workdir", type=Path, help="keep the database, log and daemon logs here (default: temporary)")
    p.add_argument("--json", type=Path, help="write the findings as JSON to this file")
    return p.parse_args()


def summary_table(f: Findings, seconds: float) -> Table:
    t = Table(title=f"kill -9 soak: {f.kills} kills in {seconds:.0f} s", show_header=True)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for name, label in SUMMARY:
        t.add_row(label, f"{getattr(f, name):,}")
    for name in Findings.LOSSES:
        value = getattr(f, name)
        t.add_row(name.replace("_", " "), f"[{'red' if value else 'green'}]{value}")
    return t


def soak(args: argparse.Namespace, workdir: Path, console: Console) -> tuple[Findings, float]:
    started = time.monotonic()
    columns = (
        TextColumn("[bold]kill -9"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with (
        MixedLoad(
            workdir, seed=args.seed, pushers=args.pushers, bulk=args.bulk, history=args.history, say=console.log
        ) as load,
        Progress(*columns, console=console) as progress,
    ):
        task = progress.add_task("soak", total=args.iterations, status="starting")
        try:
            load.start()
            for _ in range(args.iterations):
                load.kill_and_restart((args.run_min, args.run_max), args.startup_kill_chance)
                f = load.findings
                status = (
                    f"acked {f.acked_pushes:,}  lines {f.lines_committed:,}  "
                    f"{'[red]PROBLEMS' if f.failed else '[green]ok'}"
                )
                progress.update(task, advance=1, status=status)
            progress.update(task, status="catching up, stopping, final checks")
            findings = load.finish()
        except Exception as exc:  # noqa: BLE001 - a daemon that does not come back is a finding too
            console.print_exception()
            findings = load.findings
            findings.problem("restart_failures", f"{type(exc).__name__}: {str(exc)[:500]}")
    return findings, time.monotonic() - started


def main() -> int:
    args = parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="mlwatch-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        findings, seconds = soak(args, workdir, console)
    console.print(summary_table(findings, seconds))
    for p in findings.problems:
        console.print(f"[red]{p}")
    if args.json:
        args.json.write_text(json.dumps({**findings.summary(), "seconds": seconds, "problems": findings.problems}))
    console.print("[red]LOSS" if findings.failed else "[green]nothing acknowledged was lost")
    return 1 if findings.failed else 0


if __name__ == "__main__":
    sys.exit(main())
