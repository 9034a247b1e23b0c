"""B9: the daemon under a mixed load for a fixed time, on loopback.

Load, all at once, against one real ``mlwatch daemon``:
- 10k series scraped every 15 s (10 exporter targets x 1,000 series, values changing every scrape);
- 200 pushes/s, open loop (``_loadtools.py load``: request i is due at t0 + i/200 and its latency is
  measured from that due time, so queueing shows up instead of slowing the sender: no coordinated
  omission; wrk2, which does this, is not in Debian), each body different (11 lines, 20 groups);
- a JSONL prediction log appended at 5,000 lines/s, tailed by a log source (counter by model +
  latency histogram);
- 100 rules evaluated every 15 s (recording rules over the scraped families, alerts that stay quiet).

Every 5 s the measuring process reads the daemon's RSS and CPU (/proc), the log lag (lines written
minus the daemon's stored ``mlwatch_log_lines_total``), the writer queue depth and head size
(``/metrics``) and the slowest last scrape (``/api/v1/targets``). Verdict (BENCHMARKS.md B9):
no growing lag (median lag of the last third within 2 s of log (10k lines) of the first third's),
flat RSS (mean of the last third within 10% of the first third's; the slope over the last two thirds
is reported too), p99 push latency < 50 ms.

Checks before anything is reported: every push answered 2xx and the last push of every group is stored;
after the load stops every log line is counted (within 60 s); every scrape target up; all 100 rules
healthy.

    python benchmarks/bench_load.py              # 10 minutes
    python benchmarks/bench_load.py --quick      # 1 minute
    python benchmarks/bench_load.py --minutes 3
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, emit, get_json, parser, proc_cpu_seconds, proc_rss_bytes, start_mlwatch, start_process, stop
from bench_footprint import scrape_config, start_exporter, wait_first_scrapes

PUSH_RATE = 200
LOG_RATE = 5000
TARGETS, SERIES = 10, 1000
SAMPLE_EVERY = 5.0
P99_LIMIT_MS = 50
GROUPS = 20


def rules_yaml() -> str:
    """100 rules: 50 recording rules over the scraped families, 50 alerts that do not fire."""
    out = ["rules:"]
    for j in range(100):
        f, v = j % 10, j // 10
        if v < 5:
            expr = (f'sum by (shard) (rate(bench_c{f}_total{{i!="{v}"}}[1m]))' if f % 2 == 0
                    else f'avg by (shard) (bench_g{f}{{i!="{v}"}})')
            out.append(f"  - record: 'bench:r{j}'\n    expr: '{expr}'")
        else:
            expr = (f"sum(rate(bench_c{f}_total[5m])) < 0" if f % 2 == 0 else f"max by (shard) (bench_g{f}) > {1000 + v}")
            out.append(f"  - alert: BenchQuiet{j}\n    expr: '{expr}'\n    for: 1m")
    return "\n".join(out) + "\n"


def log_source_yaml(log: Path) -> str:
    return f"""  - name: predictions
    type: log
    path: {log}
    metrics:
      - {{name: ai_model_predictions_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: ai_model_latency_seconds, type: histogram, field: latency_ms, scale: 0.001, buckets: [0.01, 0.05, 0.1, 0.5, 1]}}
"""


def instant(base: str, expr: str) -> list[Any]:
    body: Any = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    return list(body["data"]["result"])


def scalar(base: str, expr: str) -> float | None:
    res = instant(base, expr)
    return float(res[0]["value"][1]) if res else None


def own_metrics(base: str) -> dict[str, float]:
    want = ("mlwatch_storage_write_queue_depth", "mlwatch_storage_head_samples")
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            name = line.split(" ", 1)[0]
            if name in want:
                out[name] = float(line.rsplit(" ", 1)[1])
    return out


def slowest_scrape(base: str) -> tuple[float, int]:
    """(the slowest last scrape duration in s, targets up) of the exporter job."""
    body: Any = get_json(f"{base}/api/v1/targets?scrapePool=exporter")
    ts = body["data"]["activeTargets"]
    return max((float(t["lastScrapeDuration"]) for t in ts), default=0.0), sum(t["health"] == "up" for t in ts)


class LineCounter:
    """Lines in a growing file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.lines += data.count(b"\n", 0, end)
        self.offset += end
        return self.lines


def thirds(xs: list[float]) -> tuple[list[float], list[float], list[float]]:
    n = len(xs)
    return xs[: n // 3], xs[n // 3 : 2 * n // 3], xs[2 * n // 3 :]


def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(runs=1)
    p.add_argument("--minutes", type=float, help="how long the load runs (default 10; --quick 1)")
    p.add_argument("--trace", type=Path, help="write the 5 s samples (time, RSS, CPU, lag, ...) as JSON here")
    args = p.parse_args()
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    seconds = minutes * 60
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="mlwatch-bench-load-") as d:
        tmp = Path(d)
        log = tmp / "predictions.jsonl"
        log.touch()
        exporter, ports = start_exporter(tmp, TARGETS, SERIES)
        load = None
        try:
            cfg = ("limits:\n  max_series: 1000000\n" + rules_yaml() + scrape_config(ports) + log_source_yaml(log))
            daemon, base, _db = start_mlwatch(tmp, cfg)
            try:
                wait_first_scrapes(base, TARGETS, SERIES)
                out = tmp / "load.json"
                load = start_process([sys.executable, str(here / "_loadtools.py"), "load", "--url", base,
                                      "--push-rate", str(PUSH_RATE), "--log", str(log), "--log-rate", str(LOG_RATE),
                                      "--seconds", str(seconds), "--out", str(out)], log=tmp / "load.log")
                trace = sample(daemon.pid, base, LineCounter(log), load, seconds)
                load.wait(120)
                if load.returncode:
                    raise SystemExit(f"the load generator failed: {(tmp / 'load.log').read_text()[-2000:]}")
                pushes = json.loads(out.read_text())
                checks = check(base, pushes, LineCounter(log).count())
            finally:
                if load is not None:
                    stop(load)
                stop(daemon)
        finally:
            stop(exporter)
    if args.trace:
        args.trace.write_text(json.dumps(trace))
    print_minutes(trace, pushes)
    emit(report(trace, pushes, checks, minutes), args.json)


def sample(pid: int, base: str, lines: LineCounter, load: Any, seconds: float) -> list[dict[str, float]]:
    trace: list[dict[str, float]] = []
    t0 = time.monotonic()
    cpu0 = proc_cpu_seconds(pid)
    last_t, last_cpu = t0, cpu0
    while time.monotonic() - t0 < seconds and load.poll() is None:
        time.sleep(max(0.0, t0 + SAMPLE_EVERY * (len(trace) + 1) - time.monotonic()))
        counted = scalar(base, "sum(mlwatch_log_lines_total)") or 0.0
        written = lines.count()  # read after the daemon's count: the lag is never under-stated
        now, cpu = time.monotonic(), proc_cpu_seconds(pid)
        own = own_metrics(base)
        slow, up = slowest_scrape(base)
        trace.append({"t": now - t0, "rss_mb": proc_rss_bytes(pid) / 2**20,
                      "cpu_pct": 100 * (cpu - last_cpu) / (now - last_t), "written": written, "counted": counted,
                      "lag_lines": written - counted, "queue": own.get("mlwatch_storage_write_queue_depth", 0),
                      "head": own.get("mlwatch_storage_head_samples", 0), "scrape_s": slow, "up": up})
        last_t, last_cpu = now, cpu
        s = trace[-1]
        print(f"t={s['t']:.0f}s RSS {s['rss_mb']:.0f} MB CPU {s['cpu_pct']:.0f}% lag {s['lag_lines']:.0f} lines "
              f"queue {s['queue']:.0f} head {s['head']:.0f} scrape {s['scrape_s']:.2f}s up {up}", file=sys.stderr,
              flush=True)
    return trace


def check(base: str, pushes: dict[str, Any], written: int) -> dict[str, float]:
    bad = {c: n for c, n in pushes["codes"].items() if not c.startswith("2")}
    if bad:
        raise SystemExit(f"check failed: pushes answered {bad}")
    last = {r["metric"]["instance"]: float(r["value"][1]) for r in instant(base, 'bench_push_seq{job="load"}')}
    total = int(pushes["pushes"])
    want = {f"g{g}": float(max(i for i in range(total - GROUPS, total) if i % GROUPS == g)) for g in range(GROUPS)}
    if last != want:
        raise SystemExit(f"check failed: the last push of each group is not what is stored: {last} != {want}")
    deadline = time.monotonic() + 60
    started = time.monotonic()
    counted = 0.0
    while time.monotonic() < deadline:
        counted = scalar(base, "sum(mlwatch_log_lines_total)") or 0.0
        if counted == written:
            break
        time.sleep(0.5)
    if counted != written:
        raise SystemExit(f"check failed: {counted:.0f} of {written} log lines counted 60 s after the load stopped")
    drain = time.monotonic() - started
    by_model = scalar(base, "sum(ai_model_predictions_total)")
    if by_model != written:
        raise SystemExit(f"check failed: ai_model_predictions_total sums to {by_model}, {written} lines written")
    _slow, up = slowest_scrape(base)
    if up != TARGETS:
        raise SystemExit(f"check failed: {up} of {TARGETS} targets up")
    body: Any = get_json(f"{base}/api/v1/rules")
    rules = [r for g in body["data"]["groups"] for r in g["rules"]
             if str(r.get("name", "")).startswith(("bench:r", "BenchQuiet"))]
    unhealthy = [r.get("name") for r in rules if r.get("health") != "ok"]
    if len(rules) != 100 or unhealthy:
        raise SystemExit(f"check failed: {len(rules)} rules, unhealthy: {unhealthy[:5]}")
    recorded = scalar(base, 'count({__name__=~"bench:r.*"})') or 0
    if recorded < 50:
        raise SystemExit(f"check failed: only {recorded:.0f} recorded series")
    return {"drain_s": drain, "lines": written, "recorded": recorded}


def print_minutes(trace: list[dict[str, float]], pushes: dict[str, Any]) -> None:
    """Over time, a line per minute: RSS, CPU, log lag, writer queue, slowest scrape, push p99."""
    print(f"{'minute':>6} {'RSS MB':>7} {'CPU %':>6} {'lag median':>10} {'lag max':>8} {'queue max':>9} "
          f"{'head max':>9} {'scrape max s':>12} {'push p99 ms':>11}")
    p99s = pushes["p99_ms_per_minute"]
    minutes = max(1, round(trace[-1]["t"] / 60))
    for m in range(minutes):
        sel = [s for s in trace if min(int(s["t"] // 60), minutes - 1) == m]
        if not sel:
            continue
        p99 = f"{p99s[m]:.1f}" if m < len(p99s) else "-"
        print(f"{m + 1:>6} {np.mean([s['rss_mb'] for s in sel]):>7.0f} {np.mean([s['cpu_pct'] for s in sel]):>6.0f} "
              f"{np.median([s['lag_lines'] for s in sel]):>10,.0f} {max(s['lag_lines'] for s in sel):>8,.0f} "
              f"{max(s['queue'] for s in sel):>9.0f} {max(s['head'] for s in sel):>9,.0f} "
              f"{max(s['scrape_s'] for s in sel):>12.2f} {p99:>11}", file=sys.stderr)


def report(trace: list[dict[str, float]], pushes: dict[str, Any], checks: dict[str, float], minutes: float) -> list[Row]:
    if len(trace) < 6:
        raise SystemExit(f"only {len(trace)} samples: run longer")
    lag = [s["lag_lines"] for s in trace]
    rss = [s["rss_mb"] for s in trace]
    cpu = [s["cpu_pct"] for s in trace]
    lag1, _lag2, lag3 = thirds(lag)
    rss1, _rss2, rss3 = thirds(rss)
    lag_first, lag_last = float(np.median(lag1)), float(np.median(lag3))
    lag_ok = lag_last <= lag_first + 2 * LOG_RATE
    rss_first, rss_last = float(np.mean(rss1)), float(np.mean(rss3))
    tail = trace[len(trace) // 3 :]
    slope = float(np.polyfit([s["t"] / 60 for s in tail], [s["rss_mb"] for s in tail], 1)[0])
    per_min = pushes["p99_ms_per_minute"] or [pushes["p99_ms"]]
    p99 = float(pushes["p99_ms"])
    load = f"{minutes:g} min, 10k series/15 s + {PUSH_RATE} pushes/s + {LOG_RATE:,} lines/s + 100 rules"
    return [
        Row(f"B9 push p99 latency under load (ms), {load}", p99, None, None, len(per_min), min(per_min), max(per_min),
            "ms", note=f"{pushes['pushes']:,} pushes, p50 {pushes['p50_ms']:.1f} p99.9 {pushes['p999_ms']:.1f} "
            f"max {pushes['max_ms']:.0f} ms; min-max: p99 of each minute; from the scheduled send time "
            f"(service time from the actual send: p50 {pushes['service_p50_ms']:.1f}, p99 "
            f"{pushes['service_p99_ms']:.1f} ms; the generator started requests up to {pushes['late_p99_ms']:.1f} ms "
            "late at p99)",
            better="lower", target=f"< {P99_LIMIT_MS} ms", ok=p99 < P99_LIMIT_MS),
        Row("B9 log lag (lines): last third's median vs first third's", lag_last, lag_first,
            lag_last / lag_first if lag_first else None, len(trace), min(lag), max(lag), "lines",
            peer_name="first third of the run", better="lower", target="no growth (within 2 s of log)", ok=lag_ok,
            note=f"every 5 s; all {checks['lines']:,.0f} lines counted {checks['drain_s']:.1f} s after the load stopped"),
        Row("B9 daemon RSS (MB): last third's mean vs first third's", rss_last, rss_first, rss_last / rss_first,
            len(trace), min(rss), max(rss), "MB", peer_name="first third of the run", better="lower",
            target="flat (within 10%)", ok=rss_last <= 1.10 * rss_first,
            note=f"slope over the last two thirds {slope:+.2f} MB/min"),
        Row("B9 daemon CPU under load (% of a core)", float(np.median(cpu)), None, None, len(trace), min(cpu), max(cpu),
            "%", better="lower",
            note=f"writer queue max {max(s['queue'] for s in trace):.0f}, head max {max(s['head'] for s in trace):,.0f} "
            f"samples; slowest scrape {max(s['scrape_s'] for s in trace):.2f} s"),
    ]


if __name__ == "__main__":
    main()
