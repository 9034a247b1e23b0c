"""B2: push requests/s and p99 latency, mlwatch vs Pushgateway 1.5, in the same run.

wrk (2 threads, 32 connections) POSTs text-format bodies whose values change on every request,
to 32 groups, first with 1-line then with 100-line bodies. Every mlwatch push is durably
committed before its reply. The run checks its own result before it reports a speed: every
response was 2xx, and mlwatch's database holds at least one stored sample per pushed line.

    python benchmarks/bench_push.py            # 5 runs x 10 s per body and system
    python benchmarks/bench_push.py --quick    # 3 runs x 5 s
    options: --runs N, --seconds S, --json PATH (rows appended as JSON lines)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    PEERS,
    ensure_debian_package,
    free_port,
    median,
    parser,
    row,
    start_mlwatch,
    start_process,
    stop,
    wait_http,
)
from _common import emit as emit_rows

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


def start_pushgateway(binary: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start_process([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                         log=tmp / "pushgateway.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", proc=proc)
    return proc, url


def stored_samples(db: Path) -> int:
    from mlwatch.storage.database import make_engine
    from mlwatch.storage.reader import Reader

    return Reader(make_engine(f"sqlite:///{db}", readonly=True)).count_samples()


def main() -> None:
    ap = parser(__doc__ or "")
    ap.set_defaults(runs=None)
    ap.add_argument("--seconds", type=int, help="seconds of wrk per run (default 10, --quick 5)")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    seconds = args.seconds or (5 if args.quick else 10)
    wrk = ensure_debian_package("wrk", PEERS["wrk"])
    pgw = ensure_debian_package("prometheus-pushgateway", PEERS["prometheus-pushgateway"])
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
                ml, url, db = start_mlwatch(run_dir, "limits:\n  max_series: 1000000\npush:\n  sample_interval: 1h\n")
                try:
                    res = run_wrk(wrk, url, script, seconds)
                finally:
                    stop(ml)
                stored = stored_samples(db)
                if res.non_2xx or stored < res.requests * lines:
                    raise SystemExit(f"mlwatch check failed: {res.non_2xx} non-2xx, {stored} samples stored "
                                     f"for {res.requests} pushes of {lines} lines")
                pg, pg_url = start_pushgateway(pgw, run_dir)
                try:
                    pres = run_wrk(wrk, pg_url, script, seconds)
                finally:
                    stop(pg)
                if pres.non_2xx:
                    raise SystemExit(f"Pushgateway answered {pres.non_2xx} non-2xx")
                if r:
                    ours.append(res)
                    peer.append(pres)
                print(f"{lines}-line run {r}{' (warm-up)' if not r else ''}: mlwatch {res.rps:,.0f} req/s "
                      f"p99 {res.p99_ms:.1f} ms; Pushgateway {pres.rps:,.0f} req/s p99 {pres.p99_ms:.1f} ms",
                      file=sys.stderr, flush=True)
            rps = [w.rps for w in ours]
            peer_rps = [w.rps for w in peer]
            p99 = [w.p99_ms for w in ours]
            peer_p99 = [w.p99_ms for w in peer]
            ratios = [o / p for o, p in zip(rps, peer_rps, strict=True)]
            rows.append(row(f"B2 push {lines}-line req/s (wrk -t2 -c32, {seconds} s)", rps, peer_rps, unit="req/s",
                            peer_name="Pushgateway", ratios=ratios, target=">= 1.5x", ok=median(ratios) >= 1.5,
                            note=f"peer {min(peer_rps):,.0f}-{max(peer_rps):,.0f}; every push committed"))
            p99_ratios = [o / p for o, p in zip(p99, peer_p99, strict=True)]
            rows.append(row(f"B2 push {lines}-line p99 latency (ms)", p99, peer_p99, unit="ms", better="lower",
                            peer_name="Pushgateway", ratios=p99_ratios, target="<= 1x",
                            ok=median(p99_ratios) <= 1.0, note=f"peer {min(peer_p99):.1f}-{max(peer_p99):.1f}"))
    emit_rows(rows, args.json)


if __name__ == "__main__":
    main()
