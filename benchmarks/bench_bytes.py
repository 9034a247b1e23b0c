"""B5: bytes per sample on disk after compaction, vs Prometheus TSDB and VictoriaMetrics.

Data: 1000 gauges x 10k samples 15 s apart, a noisy random walk rounded to 3 decimals; and the
same walk at full float precision (where decimal tricks cannot help). The same samples go into:

- ours: through the Writer in time order (one batch per scrape of all series), compaction as it
  runs by itself, then a final compaction + maintenance (vacuum, checkpoint); the whole database
  file is counted (series index, metadata and all);
- Prometheus: ``promtool tsdb create-blocks-from openmetrics`` on an OpenMetrics file of the data;
  the output blocks (chunks, index, meta) are counted;
- VictoriaMetrics: started on 127.0.0.1 with a temporary data directory, fed through
  /api/v1/import/prometheus, flushed, force-merged and stopped; its data directory is counted.

Each system is checked to hold all 10M samples before its size is reported (ours also bit-exact).
Sizes are deterministic for a given dataset; ``--runs`` repeats the whole measurement. ``--quick``:
100 series, the 3-decimal walk only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dir_bytes, emit, ensure_debian_package, median, parser, row

from mlwatch.model import Matcher, Sample, SeriesKey
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.retention import RetentionPolicy
from mlwatch.storage.writer import WriteBatch, Writer

STEP = 15_000


def dataset(series: int, points: int, decimals: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (ending about now, so that VictoriaMetrics' retention accepts them) and values [point, series]."""
    rng = np.random.default_rng(seed)
    end = int(time.time() * 1000) // STEP * STEP - STEP
    ts = end - STEP * np.arange(points)[::-1]
    walk = rng.uniform(0, 1000, series) + np.cumsum(rng.normal(0, 1, (points, series)), axis=0)
    return ts, (np.round(walk, decimals) if decimals is not None else walk)


def ours(ts: np.ndarray, vals: np.ndarray, tmp: Path) -> float:
    path = tmp / "ours.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    w = Writer(eng)
    w.start()
    keys = [SeriesKey.of("bench_gauge", {"i": str(i)}) for i in range(vals.shape[1])]
    pending: list[Future[object]] = []
    for p in range(len(ts)):
        t = int(ts[p])
        pending.append(w.submit(WriteBatch([Sample(k, t, v) for k, v in zip(keys, vals[p].tolist(), strict=True)])))  # type: ignore[arg-type]
        if len(pending) >= 256:
            for f in pending:
                f.result()
            pending = []
    for f in pending:
        f.result()
    w.compact().result()
    w.maintain(RetentionPolicy(retention_ms=10**13)).result()
    w.stop()
    r = Reader(eng)
    n = vals.size
    if r.count_samples() != n:
        raise SystemExit(f"check failed: ours holds {r.count_samples()} of {n} samples")
    for i in (0, vals.shape[1] // 2, vals.shape[1] - 1):
        (info,) = r.series([Matcher.make("i", "=", str(i))])
        got_t, got_v = r.read_range(info.id, int(ts[0]), int(ts[-1]))
        if got_t.tolist() != ts.tolist() or got_v.view(np.int64).tolist() != vals[:, i].view(np.int64).tolist():
            raise SystemExit(f"check failed: series {i} does not read back bit-exact")
    eng.dispose()
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    size = os.path.getsize(path) + (os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0)
    return size / n


def _lines(ts: np.ndarray, vals: np.ndarray, ts_fmt: str) -> Iterator[str]:
    names = [f'bench_gauge{{i="{i}"}} ' for i in range(vals.shape[1])]
    for p in range(len(ts)):
        stamp = ts_fmt.format(int(ts[p]) / 1000 if "." in ts_fmt else int(ts[p]))
        yield "".join(f"{nm}{v!r} {stamp}\n" for nm, v in zip(names, vals[p].tolist(), strict=True))


def prometheus(ts: np.ndarray, vals: np.ndarray, tmp: Path) -> float:
    promtool = ensure_debian_package("promtool", "prometheus")
    src = tmp / "data.om"
    with src.open("w") as f:
        f.write("# TYPE bench_gauge gauge\n")
        for chunk in _lines(ts, vals, "{:.3f}"):
            f.write(chunk)
        f.write("# EOF\n")
    out = tmp / "prom"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(src), str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    src.unlink()
    held = sum(json.loads(m.read_text())["stats"]["numSamples"] for m in out.glob("*/meta.json"))
    if held != vals.size:
        raise SystemExit(f"check failed: Prometheus blocks hold {held} of {vals.size} samples")
    return dir_bytes(out) / vals.size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def victoria(ts: np.ndarray, vals: np.ndarray, tmp: Path) -> float:
    vm = ensure_debian_package("victoria-metrics", "victoria-metrics")
    data = tmp / "vm"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [vm, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=100y",
         "-search.latencyOffset=0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{base}/health", 2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("VictoriaMetrics did not start") from None
                time.sleep(0.2)
        buf: list[str] = []
        for chunk in _lines(ts, vals, "{}"):
            buf.append(chunk)
            if len(buf) >= 200:
                req = urllib.request.Request(f"{base}/api/v1/import/prometheus", data="".join(buf).encode(), method="POST")
                _get_req(req)
                buf = []
        if buf:
            _get_req(urllib.request.Request(f"{base}/api/v1/import/prometheus", data="".join(buf).encode(), method="POST"))
        _get(f"{base}/internal/force_flush")
        q = urllib.parse.urlencode({"query": "sum(count_over_time(bench_gauge[30d]))", "time": str(int(ts[-1]) / 1000 + 1)})
        held = 0
        for _ in range(60):
            res = json.loads(_get(f"{base}/api/v1/query?{q}"))["data"]["result"]
            held = int(float(res[0]["value"][1])) if res else 0
            if held == vals.size:
                break
            time.sleep(1)
        if held != vals.size:
            raise SystemExit(f"check failed: VictoriaMetrics holds {held} of {vals.size} samples")
        months = {time.strftime("%Y_%m", time.gmtime(int(t) / 1000)) for t in (ts[0], ts[-1])}
        for m in months:
            _get(f"{base}/internal/force_merge?partition_prefix={m}", 600)
        time.sleep(5)  # force_merge runs in the background; let it settle
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return dir_bytes(data) / vals.size


def _get_req(req: urllib.request.Request) -> None:
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()


def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(runs=1)
    p.add_argument("--no-peers", action="store_true", help="measure ours only")
    args = p.parse_args()
    series, points = (100, 10_000) if args.quick else (1000, 10_000)
    rows = []
    datasets: list[tuple[str, int | None]] = [("3-decimal random walk", 3), ("full-precision random walk", None)]
    for label, decimals in datasets[:1] if args.quick else datasets:  # --quick: the 3-decimal walk only
        o, pr, vm = [], [], []
        for run in range(args.runs):
            ts, vals = dataset(series, points, decimals, seed=run)
            with tempfile.TemporaryDirectory() as d:
                o.append(ours(ts, vals, Path(d)))
                if not args.no_peers:
                    pr.append(prometheus(ts, vals, Path(d)))
                    vm.append(victoria(ts, vals, Path(d)))
        figure = f"B5 bytes/sample, {series}x{points // 1000}k, {label}"
        rows.append(row(figure, o, pr or None, unit="B/sample", peer_name="Prometheus (promtool blocks)",
                        better="lower", target="<= 1.0x", ok=median(o) <= median(pr) if pr else None,
                        note="every sample held by each; ours bit-exact"))
        if vm:
            rows.append(row(figure, o, vm, unit="B/sample", peer_name="VictoriaMetrics (merged)", better="lower",
                            target="<= 1.25x", ok=median(o) <= 1.25 * median(vm)))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
