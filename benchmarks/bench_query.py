"""B6: query latency over HTTP, mlwatch vs Prometheus 2.x and VictoriaMetrics, on the same data, same run.

Figures (BENCHMARKS.md B6):
  one series, 10k points     query_range of one series over 10k points, step 15 s
  avg over 1000 series       avg(m) across 1000 series, 1 h, step 60 s
  sum by rate, 100 counters  sum by (l) (rate(c[5m])) over 100 counters with 10 values of l, 24 h, step 5 m

The data is written once as OpenMetrics text, loaded with ``mlwatch import``, ``promtool tsdb
create-blocks-from openmetrics`` and VictoriaMetrics' ``/api/v1/import/prometheus``, and ends 4 hours
ago (promtool does not backfill the last 3 hours). mlwatch answers from a real ``mlwatch daemon`` on the
imported database. Each query is checked to return the same number of points on every system, and
the same series, times and values as Prometheus (within 1e-9 relative), before its speed is reported.
Usage: ``python benchmarks/bench_query.py [--quick] [--runs N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEERS, emit, ensure_debian_package, row

STEP = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def write_data(path: Path, end_s: int, quick: bool) -> dict[str, Any]:
    """OpenMetrics text for the three figures; returns the time ranges of each."""
    one_n = 10_000
    m_series, m_n = (1000, 4 * 65)
    c_span = 24 * 3600 + 600
    one_start = end_s - one_n * STEP
    m_start = end_s - m_n * STEP
    c_start = end_s - c_span
    with path.open("w") as fh:
        fh.write("# TYPE one gauge\n")
        for k in range(one_n):
            fh.write(f"one {k % 97 * 0.5} {one_start + k * STEP}\n")
        fh.write("# TYPE m gauge\n")
        for i in range(m_series):
            for k in range(m_n):
                fh.write(f'm{{i="{i}"}} {(i * 7 + k) % 101} {m_start + k * STEP}\n')
        fh.write("# TYPE c counter\n")
        for lv in range(10):
            for i in range(10):
                v = 0
                for k in range(c_span // STEP):
                    v += (i + k) % 5
                    fh.write(f'c_total{{l="{lv}",i="{i}"}} {v} {c_start + k * STEP}\n')
        fh.write("# EOF\n")
    return {"one": (one_start, one_start + (one_n - 1) * STEP), "m": (m_start, end_s - STEP),
            "c": (c_start, end_s - STEP)}


def to_prometheus_text(om: Path, out: Path) -> None:
    """VictoriaMetrics' import wants Prometheus text with millisecond timestamps."""
    with om.open() as src, out.open("w") as dst:
        for line in src:
            if line.startswith("#"):
                continue
            head, ts = line.rsplit(" ", 1)
            dst.write(f"{head} {int(ts) * 1000}\n")


def values(base: str, expr: str, start: int, end: int, step: int) -> dict[str, dict[float, float]]:
    """The result of a range query: series (labels as a string) -> {time: value}."""
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step, "nocache": 1})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{qs}", timeout=120) as r:
        body = json.loads(r.read())
    return {json.dumps(s["metric"], sort_keys=True): {float(t): float(v) for t, v in s["values"]}
            for s in body["data"]["result"]}


def same_values(a: dict[str, dict[float, float]], b: dict[str, dict[float, float]]) -> bool:
    """The same series, times and values (relative tolerance 1e-9: float sums in another order)."""
    if a.keys() != b.keys():
        return False
    for k, mine in a.items():
        theirs = b[k]
        if mine.keys() != theirs.keys():
            return False
        if any(abs(v - theirs[t]) > 1e-9 * max(1.0, abs(theirs[t])) for t, v in mine.items()):
            return False
    return True


def query(base: str, expr: str, start: int, end: int, step: int) -> tuple[float, int]:
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step, "nocache": 1})
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{qs}", timeout=120) as r:
        body = json.loads(r.read())
    took = time.perf_counter() - t0
    if body.get("status") != "success":
        raise RuntimeError(f"{base}: {body}")
    points = sum(len(s["values"]) for s in body["data"]["result"])
    return took, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs = args.runs or (5 if args.quick else 9)
    work = Path(tempfile.mkdtemp(prefix="bench_query_"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        end_s = int(time.time()) // 3600 * 3600 - 4 * 3600
        om = work / "data.om"
        ranges = write_data(om, end_s, args.quick)
        ml_port = free_port()
        (work / "mlwatch.yaml").write_text(f"storage:\n  url: sqlite:///{work / 'm.db'}\n  retention: 3650d\n"
                                           f"server:\n  listen: 127.0.0.1:{ml_port}\n")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlwatch.cli", "import", str(om), "-c", str(work / "mlwatch.yaml"), "-q"],
                       check=True, capture_output=True)
        import_s = time.perf_counter() - t0
        subprocess.run([ensure_debian_package("promtool", PEERS["promtool"]), "tsdb", "create-blocks-from", "openmetrics", str(om), str(work / "prom")],
                       check=True, capture_output=True)
        systems: dict[str, str] = {}
        procs.append(subprocess.Popen([sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(work / "mlwatch.yaml")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work))
        systems["mlwatch"] = f"http://127.0.0.1:{ml_port}"
        (work / "prometheus.yml").write_text("global: {}\n")
        port = free_port()
        procs.append(subprocess.Popen(
            [ensure_debian_package("prometheus", PEERS["prometheus"]), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'prom'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=10y"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        systems["prometheus"] = f"http://127.0.0.1:{port}"
        vm = ensure_debian_package("victoria-metrics", PEERS["victoria-metrics"])
        if vm:
            port = free_port()
            procs.append(subprocess.Popen(
                [vm, f"-storageDataPath={work / 'vm'}", f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=100y",
                 "-search.latencyOffset=0s", "-dedup.minScrapeInterval=0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            systems["victoriametrics"] = f"http://127.0.0.1:{port}"
        for name, base in systems.items():
            wait(f"{base}/-/ready" if name != "victoriametrics" else f"{base}/health")
        if vm:
            text = work / "data.prom"
            to_prometheus_text(om, text)
            req = urllib.request.Request(f"{systems['victoriametrics']}/api/v1/import/prometheus",
                                         data=text.read_bytes(), method="POST")
            urllib.request.urlopen(req, timeout=300).read()
            urllib.request.urlopen(f"{systems['victoriametrics']}/internal/force_flush", timeout=60).read()
            time.sleep(2)
        figures = [
            ("one series, 10k points", "one", *ranges["one"], 15),
            ("avg(m), 1000 series, 1h", "avg(m)", ranges["m"][1] - 3600, ranges["m"][1], 60),
            ("sum by (l) (rate(c[5m])), 24h", "sum by (l) (rate(c_total[5m]))", ranges["c"][1] - 86400,
             ranges["c"][1], 300),
        ]
        samples = sum(1 for line in om.open() if line[:1] != "#")
        rows = []
        print(f"import: {samples} samples in {import_s:.1f}s ({samples / import_s:,.0f} samples/s, whole command)",
              file=sys.stderr)
        failed = []
        for label, expr, start, end, step in figures:
            counts = {}
            times: dict[str, list[float]] = {}
            for name, base in systems.items():
                _, counts[name] = query(base, expr, start, end, step)  # warm-up, and the result check
                times[name] = [query(base, expr, start, end, step)[0] * 1000 for _ in range(runs)]
            if len(set(counts.values())) != 1:
                failed.append(f"{label}: systems disagree on the number of points: {counts}")
                continue
            if not same_values(values(systems["mlwatch"], expr, start, end, step),
                               values(systems["prometheus"], expr, start, end, step)):
                failed.append(f"{label}: mlwatch's values differ from Prometheus'")
                continue
            for name, peer_name in (("prometheus", "Prometheus"), ("victoriametrics", "VictoriaMetrics")):
                if name in times:
                    rows.append(row(f"B6 query {label} (ms)", times["mlwatch"], times[name], unit="ms",
                                    better="lower", peer_name=peer_name, target="<= 1x" if name == "prometheus" else "",
                                    ok=statistics.median(times["mlwatch"]) <= statistics.median(times[name])
                                    if name == "prometheus" else None,
                                    note=f"{counts['mlwatch']} points; peer {min(times[name]):.1f}-{max(times[name]):.1f}"))
        emit(rows, args.json)
        if failed:
            print("check failed: " + "; ".join(failed), file=sys.stderr)
            return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
