"""B2: push requests/s and p99 latency, mlwatch vs Pushgateway 1.5, in the same run.

wrk (2 threads, 32 connections) POSTs text-format bodies whose values change on every request,
to 32 groups, first with 1-line then with 100-line bodies. Every mlwatch push is durably
committed before its reply. The run checks its own result before it reports a speed: every
response was 2xx, and mlwatch's database holds at least one stored sample per pushed line.

    python benchmarks/bench_push.py            # 5 runs x 10 s per body and system
    python benchmarks/bench_push.py --quick    # 3 runs x 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

LUA = """
counter = 0
lines = {lines}
request = function()
  counter = counter + 1
  local parts = {{}}
  for i = 1, lines do
    parts[i] = "bench_push_metric_" .. i .. "{{shard=\\"" .. (i % 7) .. "\\"}} " .. (counter * 1.5 + i) .. "\\n"
  end
  return wrk.format("POST", "/metrics/job/bench/group/g" .. (counter % 32), nil, table.concat(parts))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_debian(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    print(f"installing Debian package {package} ...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which(binary)
    if not found:
        raise SystemExit(f"{binary} not found after installing {package}")
    return found


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    requests: int
    non_2xx: int


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert m, out
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, p99, reqs, int(bad.group(1)) if bad else 0)


def run_wrk(wrk: str, url: str, script: Path, seconds: int) -> WrkResult:
    out = subprocess.run([wrk, "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


class Server:
    def __init__(self, argv: list[str], url: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.url = url
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, cwd=cwd)
        wait_ready(url + "/-/ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_mlwatch(tmp: Path) -> tuple[Server, Path]:
    port = free_port()
    db = tmp / "bench.db"
    cfg = tmp / "mlwatch.yaml"
    cfg.write_text(f"storage:\n  url: sqlite:///{db}\nserver:\n  listen: 127.0.0.1:{port}\n"
                   "limits:\n  max_series: 1000000\npush:\n  sample_interval: 1h\n")
    srv = Server([sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(cfg)], f"http://127.0.0.1:{port}", cwd=tmp)
    return srv, db


def start_pushgateway(binary: str) -> Server:
    port = free_port()
    return Server([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], f"http://127.0.0.1:{port}")


def stored_samples(db: Path) -> int:
    from mlwatch.storage.database import make_engine
    from mlwatch.storage.reader import Reader

    return Reader(make_engine(f"sqlite:///{db}", readonly=True)).count_samples()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 runs of 5 s")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_push.json"))
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    seconds = args.seconds or (5 if args.quick else 10)
    wrk = ensure_debian("wrk", "wrk")
    pgw = ensure_debian("prometheus-pushgateway", "prometheus-pushgateway")
    console = Console(width=160)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlwatch-bench-") as tmpd:
        tmp = Path(tmpd)
        for lines in (1, 100):
            script = tmp / f"push{lines}.lua"
            script.write_text(LUA.format(lines=lines))
            ours: list[WrkResult] = []
            peer: list[WrkResult] = []
            for r in range(runs + 1):  # the first run of each is a warm-up
                run_dir = tmp / f"ml-{lines}-{r}"
                run_dir.mkdir()
                ml, db = start_mlwatch(run_dir)
                try:
                    res = run_wrk(wrk, ml.url, script, seconds)
                finally:
                    ml.stop()
                stored = stored_samples(db)
                if res.non_2xx or stored < res.requests * lines:
                    raise SystemExit(f"mlwatch check failed: {res.non_2xx} non-2xx, {stored} samples stored "
                                     f"for {res.requests} pushes of {lines} lines")
                pg = start_pushgateway(pgw)
                try:
                    pres = run_wrk(wrk, pg.url, script, seconds)
                finally:
                    pg.stop()
                if pres.non_2xx:
                    raise SystemExit(f"Pushgateway answered {pres.non_2xx} non-2xx")
                if r:
                    ours.append(res)
                    peer.append(pres)
                console.print(f"[dim]{lines}-line run {r}{' (warm-up)' if not r else ''}: mlwatch {res.rps:,.0f} req/s "
                              f"p99 {res.p99_ms:.1f} ms; Pushgateway {pres.rps:,.0f} req/s p99 {pres.p99_ms:.1f} ms[/dim]")
            for what, get, unit in (("req/s", lambda w: w.rps, ""), ("p99 ms", lambda w: w.p99_ms, "")):
                o = [get(w) for w in ours]
                p = [get(w) for w in peer]
                rows.append({
                    "figure": f"B2 push {lines}-line {what}", "mlwatch": statistics.median(o),
                    "peer": statistics.median(p), "ratio": statistics.median(o) / statistics.median(p),
                    "runs": runs, "mlwatch_min": min(o), "mlwatch_max": max(o), "peer_min": min(p), "peer_max": max(p),
                })
    table = Table(title="B2: pushes, mlwatch vs Pushgateway 1.5 (wrk -t2 -c32, median)")
    for col in ("figure", "mlwatch", "Pushgateway", "ratio", "runs", "mlwatch min–max", "peer min–max"):
        table.add_column(col, justify="right" if col != "figure" else "left")
    for row in rows:
        table.add_row(row["figure"], f"{row['mlwatch']:,.1f}", f"{row['peer']:,.1f}", f"{row['ratio']:.2f}x",
                      str(row["runs"]), f"{row['mlwatch_min']:,.1f}–{row['mlwatch_max']:,.1f}",
                      f"{row['peer_min']:,.1f}–{row['peer_max']:,.1f}")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
