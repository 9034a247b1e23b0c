"""B7: the daemon's footprint at idle: RSS and CPU with 10k series scraped every 15 s.

A real ``mlwatch daemon`` scrapes 10 exporter targets of 1,000 series each (one exporter process on
127.0.0.1, values changing on every scrape) every 15 s; nothing else talks to it. After the first
scrape of every target has landed (checked: 10 targets up, 10,000 series stored) and a warm-up, the
daemon's RSS (VmRSS, /proc, every second) and CPU (utime + stime of all its threads, /proc) are read
over a window of whole scrape intervals. Each interval is one "run" of the row; the check after the
window: every target still up and at least 10,000 samples scraped per interval in the window.

    python benchmarks/bench_footprint.py            # 30 s warm-up, 8 intervals (2 min) measured
    python benchmarks/bench_footprint.py --quick    # no warm-up beyond the first scrapes, 1 interval
    python benchmarks/bench_footprint.py --runs 64  # 16 min: through the head's first compaction (900 s)

Samples stay in the writer's in-memory head (and its log table) until a compaction, which runs when the
head holds 1M samples or its oldest sample is 900 s old: at 10k series / 15 s the head grows for 15 min.
The RSS row's note gives the head's growth and RSS's over the window and, from them, RSS extrapolated
to a 900 s head (an estimate; ``--runs 64`` measures it).
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    emit,
    free_port,
    get_json,
    median,
    parser,
    proc_cpu_seconds,
    proc_rss_bytes,
    row,
    start_mlwatch,
    start_process,
    stop,
)

INTERVAL = 15.0
RSS_LIMIT_MB = 150
CPU_LIMIT_PCT = 10


def start_exporter(tmp: Path, targets: int, series: int) -> tuple[Any, list[int]]:
    ports = [free_port() for _ in range(targets)]
    proc = start_process([sys.executable, str(Path(__file__).resolve().parent / "_loadtools.py"), "exporter",
                          "--ports", ",".join(map(str, ports)), "--series", str(series)], log=tmp / "exporter.log")
    deadline = time.monotonic() + 60
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    stop(proc)
                    raise SystemExit("the exporter did not start") from None
                time.sleep(0.1)
    return proc, ports


def scrape_config(ports: list[int], interval: str = "15s") -> str:
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
    return f"sources:\n  - name: exporter\n    type: http\n    interval: {interval}\n    targets: [{targets}]\n"


def instant(base: str, expr: str) -> float | None:
    body: Any = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    res = body["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def own_metrics(base: str) -> tuple[float, float]:
    """(mlwatch_source_samples of the exporter job summed over targets, mlwatch_storage_head_samples), from /metrics."""
    total = head = 0.0
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mlwatch_source_samples") and 'job="exporter"' in line:
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("mlwatch_storage_head_samples "):
                head = float(line.rsplit(" ", 1)[1])
    return total, head


def wait_first_scrapes(base: str, targets: int, series: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = instant(base, 'sum(up{job="exporter"})')
        stored = instant(base, 'count({__name__=~"bench_.*", job="exporter"})')
        if up == targets and stored == targets * series:
            return
        time.sleep(1)
    raise SystemExit(f"check failed: after {timeout:.0f}s, up={up}, {stored} series stored "
                     f"(want {targets} up, {targets * series} series)")


def measure(pid: int, intervals: int) -> tuple[list[float], list[float]]:
    """Per scrape interval: the peak RSS (MB) and the CPU used (% of one core)."""
    rss: list[float] = []
    cpu: list[float] = []
    for _ in range(intervals):
        start = time.monotonic()
        c0 = proc_cpu_seconds(pid)
        peak = 0
        while (left := start + INTERVAL - time.monotonic()) > 0:
            peak = max(peak, proc_rss_bytes(pid))
            time.sleep(min(1.0, left))
        used = proc_cpu_seconds(pid) - c0
        rss.append(peak / 2**20)
        cpu.append(100 * used / (time.monotonic() - start))
        print(f"interval: RSS {rss[-1]:.1f} MB, CPU {cpu[-1]:.1f}%", file=sys.stderr, flush=True)
    return rss, cpu


def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(runs=None)
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--series", type=int, default=1000, help="series per target")
    args = p.parse_args()
    intervals = args.runs or (1 if args.quick else 8)
    warmup = 0 if args.quick else 2 * INTERVAL  # --quick: the first scrapes are the warm-up
    with tempfile.TemporaryDirectory(prefix="mlwatch-bench-footprint-") as d:
        tmp = Path(d)
        exporter, ports = start_exporter(tmp, args.targets, args.series)
        try:
            daemon, base, _db = start_mlwatch(tmp, scrape_config(ports))
            try:
                wait_first_scrapes(base, args.targets, args.series)
                time.sleep(warmup)
                before, head0 = own_metrics(base)
                rss0 = proc_rss_bytes(daemon.pid) / 2**20
                rss, cpu = measure(daemon.pid, intervals)
                after, head1 = own_metrics(base)
                rss1 = proc_rss_bytes(daemon.pid) / 2**20
                up = instant(base, 'sum(up{job="exporter"})')
            finally:
                stop(daemon)
        finally:
            stop(exporter)
    want = args.targets * args.series * intervals
    if up != args.targets or after - before < want * 0.95:
        raise SystemExit(f"check failed: {up} targets up, {after - before:.0f} samples scraped in the window "
                         f"(want {args.targets} up, about {want})")
    n = args.targets * args.series
    head_note = f"head {head0:,.0f} -> {head1:,.0f} samples, RSS {rss0:.1f} -> {rss1:.1f} MB"
    if head1 > head0 and rss1 > rss0 and warmup + intervals * INTERVAL < 900:  # no age-triggered compaction yet
        per = (rss1 - rss0) * 2**20 / (head1 - head0)
        full_head = n * 900 / INTERVAL
        head_note += (f" ({per:.0f} B per head sample: with a 900 s head of {full_head:,.0f} samples, about "
                      f"{rss0 + per * (full_head - head0) / 2**20:.0f} MB, extrapolated)")
    emit([
        row(f"B7 daemon RSS, {n:,} series scraped every 15 s (MB)", rss, unit="MB", better="lower",
            target=f"<= {RSS_LIMIT_MB} MB", ok=max(rss) <= RSS_LIMIT_MB,
            note=f"peak per 15 s interval; {after - before:,.0f} samples scraped in the window; " + head_note),
        row(f"B7 daemon CPU, {n:,} series scraped every 15 s (% of a core)", cpu, unit="%", better="lower",
            target=f"<= {CPU_LIMIT_PCT}%", ok=median(cpu) <= CPU_LIMIT_PCT, note="per 15 s interval"),
    ], args.json)


if __name__ == "__main__":
    main()
