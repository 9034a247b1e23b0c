"""Run every benchmark of BENCHMARKS.md and print one table (plus a JSON file).

    python -m benchmarks                         # everything, full size (about an hour on 2 cores)
    python -m benchmarks --quick                 # smaller data and fewer runs: under 5 minutes
    python benchmarks/run_all.py --only B2,B6 --json out.json

Each benchmark runs as its own subprocess (``benchmarks/bench_*.py --json FILE``), in its own
process group, checks its own result before it reports a speed, and writes its rows as JSON lines;
this runner collects them. Peers (Debian's prometheus-pushgateway, mtail, prometheus,
victoria-metrics, wrk) are installed first when their binary is missing; each script starts its own
instances on 127.0.0.1 with temporary data and stops them. Whatever a script leaves running in its
process group when it ends (or times out) is stopped here and reported as a fault of the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import PEERS, ensure_debian_package, fmt


@dataclass(frozen=True)
class Bench:
    id: str
    script: str
    what: str
    quick_args: tuple[str, ...] = ("--quick",)
    full_args: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()  # binaries it needs
    timeout_s: float = 3600


BENCHES = [
    Bench("B1", "bench_ingest.py", "storage ingest vs raw sqlite3", ("--quick", "--runs", "1")),
    Bench("B2", "bench_push.py", "pushes vs Pushgateway (wrk)", ("--quick", "--runs", "1", "--seconds", "3"),
          peers=("wrk", "prometheus-pushgateway")),
    Bench("B3", "bench_logs.py", "log lines vs mtail", ("--quick", "--runs", "2"), peers=("mtail",)),
    Bench("B4", "bench_scrape.py", "scrape parse+store vs prometheus_client", ("--quick", "--runs", "2", "--lines", "50000")),
    Bench("B5", "bench_bytes.py", "bytes/sample vs Prometheus, VictoriaMetrics", ("--quick",),
          peers=("promtool", "victoria-metrics")),
    Bench("B6", "bench_query.py", "query latency vs Prometheus, VictoriaMetrics", ("--quick", "--runs", "3"),
          peers=("promtool", "prometheus", "victoria-metrics")),
    Bench("B6r", "bench_read.py", "range read into numpy", ("--quick", "--runs", "2")),
    Bench("B7", "bench_footprint.py", "daemon footprint, 10k series / 15 s", ("--quick",)),
    Bench("B8", "bench_tui.py", "TUI first frame, chart redraw", ("--quick", "--runs", "2")),
    Bench("B9", "bench_load.py", "load: scrapes + pushes + logs + rules", ("--quick",), timeout_s=4 * 3600),
]


@dataclass
class Outcome:
    id: str
    script: str
    argv: list[str]
    seconds: float
    status: str  # "ok", "failed (exit N)", "timeout"
    rows: list[dict[str, object]] = field(default_factory=list)
    log_tail: str = ""
    strays: list[str] = field(default_factory=list)


def _group_members(pgid: int) -> list[str]:
    """Processes still in a process group (by /proc), as 'pid cmdline'."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) == pgid:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                out.append(f"{d.name} {cmd}")
        except (OSError, ProcessLookupError):
            continue
    return out


def _stop_group(pgid: int) -> list[str]:
    """Stop what is left of a benchmark's process group (TERM, then KILL); returns what was left."""
    left = _group_members(pgid)
    if not left:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return left
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_members(pgid):
            time.sleep(0.1)
        if not _group_members(pgid):
            break
    return left


def run_one(b: Bench, extra: list[str], logdir: Path, quick: bool, timeout_s: float | None) -> Outcome:
    rows_path = logdir / f"{b.id}.jsonl"
    log_path = logdir / f"{b.id}.log"
    argv = [sys.executable, str(HERE / b.script), *(b.quick_args if quick else b.full_args), *extra,
            "--json", str(rows_path)]
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=HERE.parent)
    status = "ok"
    try:
        proc.wait(timeout_s or (min(b.timeout_s, 900) if quick else b.timeout_s))
        if proc.returncode:
            status = f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = "timeout"
        os.killpg(proc.pid, signal.SIGTERM)  # the script's own handlers stop its servers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        _stop_group(proc.pid)
        raise
    strays = _stop_group(proc.pid)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    if status == "ok" and not rows:
        status = "failed (no rows)"
    return Outcome(b.id, b.script, argv, time.monotonic() - started, status, rows, tail if status != "ok" else "",
                   strays)


def ensure_peers(benches: list[Bench], console: Console) -> None:
    for binary in sorted({p for b in benches for p in b.peers}):
        path = ensure_debian_package(binary, PEERS[binary])
        console.print(f"[dim]peer {binary}: {path}[/dim]")


def table(outcomes: list[Outcome], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for col, just in (("#", "left"), ("figure", "left"), ("mlwatch", "right"), ("peer", "left"),
                      ("peer value", "right"), ("ratio", "right"), ("target", "left"), ("runs", "right"),
                      ("min–max (mlwatch)", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in outcomes:
        if o.status != "ok":
            t.add_row(o.id, f"[red]{o.script}: {o.status}[/red]", "", "", "", "", "", "", "")
        for r in o.rows:
            unit = str(r.get("unit") or "")
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            ok = r.get("ok")
            target = str(r.get("target") or "")
            if ok is not None:
                target = f"[green]{target} ✓[/green]" if ok else f"[red]{target} ✗[/red]"
            arrow = "↑" if r.get("better", "higher") == "higher" else "↓"
            t.add_row(o.id, f"{r['figure']}", f"{fmt(r['ours'])} {unit}", str(r.get("peer_name") or ""),  # type: ignore[arg-type]
                      fmt(r["peer"]), f"{ratio} {arrow}", target, str(r["runs"]),  # type: ignore[arg-type]
                      f"{fmt(r['lo'])}–{fmt(r['hi'])}")  # type: ignore[arg-type]
    return t


def _shown(argv: list[str]) -> list[str]:
    """The command line without where its outputs went."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--json", "--logs", "--markdown"):
            skip = True
        elif not a.startswith(("--json=", "--logs=", "--markdown=")):
            out.append(a)
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The suite's table as Markdown (for the README), from the JSON the runner writes."""
    la = doc["loadavg_before"]
    command = doc.get("command") or f"python -m benchmarks{' --quick' if doc['quick'] else ''}"
    head = (f"`{command}`, {doc['started'][:16].replace('T', ' ')} UTC, "
            f"{doc['cpus']} cores, load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} at the start "
            f"(the machine was shared), {doc['seconds'] / 60:.1f} min in all.\n\n")
    lines = ["| # | figure | mlwatch | peer | peer value | ratio | target | runs | min–max (mlwatch) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b in doc["benchmarks"]:
        if b["status"] != "ok":
            lines.append(f"| {b['id']} | `{b['script']}`: {b['status']} | | | | | | | |")
        for r in b["rows"]:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x {'↑' if r.get('better') == 'higher' else '↓'}"
            target = r.get("target") or ""
            if r.get("ok") is not None:
                target += " ✓" if r["ok"] else " ✗"
            fig = str(r["figure"]).replace("|", "\\|")
            lines.append(f"| {b['id']} | {fig} | {fmt(r['ours'])} {r.get('unit') or ''} | {r.get('peer_name') or ''} | "
                         f"{fmt(r['peer'])} | {ratio} | {target} | {r['runs']} | {fmt(r['lo'])}–{fmt(r['hi'])} |")
    notes = [f"- {r['figure']}{' vs ' + str(r['peer_name']) if r.get('peer_name') else ''}: {r['note']}"
             for b in doc["benchmarks"] for r in b["rows"] if r.get("note")]
    return head + "\n".join(lines) + "\n\nNotes:\n\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller data and fewer runs (under 5 minutes)")
    ap.add_argument("--only", help="comma-separated ids, e.g. B2,B6 (ids: " + ",".join(b.id for b in BENCHES) + ")")
    ap.add_argument("--skip", help="comma-separated ids to leave out")
    ap.add_argument("--runs", type=int, help="measured runs for every benchmark (default: each script's own)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where the JSON goes")
    ap.add_argument("--logs", type=Path, help="keep each benchmark's output here (default: a temporary directory)")
    ap.add_argument("--timeout", type=float, help="seconds per benchmark before it is stopped")
    ap.add_argument("--minutes", type=float, help="B9's load duration (default 10, --quick 1)")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only print a past run's JSON as Markdown")
    args = ap.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())), end="")
        return 0
    known = {b.id for b in BENCHES}
    picked = [s.strip() for s in (args.only or "").split(",") if s.strip()]
    skipped = [s.strip() for s in (args.skip or "").split(",") if s.strip()]
    for s in picked + skipped:
        if s not in known:
            ap.error(f"unknown benchmark {s!r}; known: {', '.join(sorted(known))}")
    benches = [b for b in BENCHES if (not picked or b.id in picked) and b.id not in skipped]
    console = Console(width=max(Console().width, 160))
    ensure_peers(benches, console)
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="mlwatch-suite-") as tmp:
        logdir = args.logs or Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        for stale in logdir.glob("*.jsonl"):
            stale.unlink()
        t0 = time.monotonic()
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            overall = progress.add_task("suite", total=len(benches))
            for b in benches:
                extra = ["--runs", str(args.runs)] if args.runs else []
                if b.id == "B9" and args.minutes:
                    extra += ["--minutes", str(args.minutes)]
                progress.update(overall, description=f"{b.id} {b.what} ({b.script})")
                o = run_one(b, extra, logdir, args.quick, args.timeout)
                outcomes.append(o)
                style = "green" if o.status == "ok" else "red"
                progress.console.print(f"[{style}]{b.id} {o.status}[/{style}] in {o.seconds:.0f} s, {len(o.rows)} rows")
                if o.log_tail:
                    progress.console.print(f"[dim]{o.log_tail}[/dim]")
                if o.strays:
                    progress.console.print(f"[red]{b.id} left processes running (stopped now): {o.strays}[/red]")
                progress.advance(overall)
        total_s = time.monotonic() - t0
    load_after = os.getloadavg()
    title = (f"mlwatch benchmarks{' (--quick)' if args.quick else ''}, {started:%Y-%m-%d %H:%M} UTC, "
             f"{os.cpu_count()} cores, load avg {load_before[0]:.1f} → {load_after[0]:.1f}, {total_s / 60:.1f} min")
    console.print(table(outcomes, title))
    console.print("ratio: mlwatch / peer (per-run ratios' median where the script pairs runs); "
                  "↑ higher is better, ↓ lower is better; min–max over the runs")
    for o in outcomes:
        for r in o.rows:
            if r.get("note"):
                peer = f" vs {r['peer_name']}" if r.get("peer_name") else ""
                console.print(f"[dim]{r['figure']}{peer}: {r['note']}[/dim]")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "started": started.isoformat(timespec="seconds"), "quick": args.quick, "seconds": round(total_s, 1),
        "command": " ".join(["python -m benchmarks", *_shown(sys.argv[1:] if argv is None else argv)]),
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
        "benchmarks": [asdict(o) for o in outcomes],
    }, indent=2))
    console.print(f"JSON: {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(json.loads(args.json.read_text())))
    return 0 if all(o.status == "ok" and not o.strays for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
