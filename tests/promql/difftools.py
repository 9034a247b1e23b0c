"""Shared pieces of the differential tests against a real Prometheus: the data set, a Prometheus
started on a backfilled data dir, and the comparison of API bodies."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import requests

from tests.helpers import free_port, wait_http

STEP_S = 15
SPAN_S = 3 * 3600


def base_time(now: float | None = None) -> int:
    """Start of the data, in seconds: a day back (promtool will not backfill the last 3 hours)."""
    now = time.time() if now is None else now
    return int((now - 26 * 3600) // 7200 * 7200)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _series(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    esc = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                   for k, v in sorted(labels.items()))
    return f"{name}{{{esc}}}"


def generate(base: int, seed: int = 6) -> Iterator[str]:
    """OpenMetrics text: counters with resets, gauges with gaps and ends, histograms, odd labels, combos."""
    rnd = random.Random(seed)
    n = SPAN_S // STEP_S

    def times(every: int = 1, start: int = 0, stop: int = n) -> range:
        return range(start, stop, every)

    yield "# TYPE req counter"
    yield "# HELP req Requests served."
    for inst in range(4):
        for method in ("get", "post"):
            v = 0.0
            reset_at = {rnd.randrange(50, n - 50) for _ in range(inst % 3)}
            for k in times():
                v = 1.0 + rnd.random() * 5 if k in reset_at else v + rnd.randrange(0, 20) + rnd.random()
                labels = {"job": "api", "instance": f"i{inst}", "method": method}
                yield f"{_series('req_total', labels)} {_fmt(round(v, 3))} {base + k * STEP_S}"
    yield "# TYPE temp gauge"
    for room in ("kitchen", "hall", "lab"):
        for floor in range(4):
            v = rnd.uniform(-5, 30)
            start, stop = 0, n
            if room == "lab" and floor == 0:
                stop = 400  # ends at 100 min
            if room == "lab" and floor == 1:
                start = 440  # starts at 110 min
            for k in times(2, start, stop):
                if room == "hall" and floor == 3 and 300 <= k < 360:
                    continue  # a 15-minute gap
                v += rnd.gauss(0, 1)
                yield f"{_series('temp', {'room': room, 'floor': str(floor)})} {_fmt(round(v, 4))} {base + k * STEP_S}"
    yield "# TYPE lat_seconds histogram"
    bounds = ["0.1", "0.5", "1", "+Inf"]
    for svc in ("a", "b"):
        counts = [0.0] * 4
        total = 0.0
        for k in times():
            for _ in range(rnd.randrange(0, 8)):
                x = rnd.expovariate(3.0)
                total += x
                for i, b in enumerate(bounds):
                    if b == "+Inf" or x <= float(b):
                        counts[i] += 1
            for i, b in enumerate(bounds):
                yield f"{_series('lat_seconds_bucket', {'svc': svc, 'le': b})} {_fmt(counts[i])} {base + k * STEP_S}"
            yield f"{_series('lat_seconds_sum', {'svc': svc})} {_fmt(round(total, 6))} {base + k * STEP_S}"
            yield f"{_series('lat_seconds_count', {'svc': svc})} {_fmt(counts[3])} {base + k * STEP_S}"
    yield "# TYPE odd gauge"
    for labels in ({"path": "/a b", "q": 'x"y', "u": "é✓", "bs": "c:\\d"}, {"path": "plain"}):
        for k in times(4):
            yield f"{_series('odd', labels)} {_fmt(float(k % 7))} {base + k * STEP_S}"
    yield "# TYPE nan_g gauge"
    for k in times(4):
        v = math.nan if k % 12 == 0 else (math.inf if k == 482 else float(k % 5) - 2)
        yield f"{_series('nan_g', {'k': '1'})} {_fmt(v)} {base + k * STEP_S}"
        yield f"{_series('nan_g', {'k': '2'})} {_fmt(float(k % 3))} {base + k * STEP_S}"
    for name in ("dup_a", "dup_b"):
        yield f"# TYPE {name} gauge"
        for k in times(4):
            yield f"{_series(name, {'x': '1'})} {_fmt(float(k % 4 + (name == 'dup_b')))} {base + k * STEP_S}"
    yield "# TYPE up gauge"
    for inst in range(4):
        for k in times(2):
            v = 0.0 if (inst == 2 and 200 < k < 260) else 1.0
            yield f"{_series('up', {'job': 'api', 'instance': f'i{inst}'})} {_fmt(v)} {base + k * STEP_S}"
    yield "# TYPE build_info gauge"
    for inst in range(3):
        for k in times(4):
            labels = {"job": "api", "instance": f"i{inst}", "version": f"v{inst % 2}"}
            yield f"{_series('build_info', labels)} 1.0 {base + k * STEP_S}"
    yield "# TYPE combo gauge"
    for a in range(5):
        for b in range(5):
            v = rnd.uniform(0, 100)
            for k in times(4):
                v += rnd.uniform(-1, 1)
                yield f"{_series('combo', {'a': str(a), 'b': str(b)})} {_fmt(round(v, 5))} {base + k * STEP_S}"
    yield "# EOF"


@dataclass
class PrometheusServer:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_prometheus(workdir: Path, openmetrics: Path) -> PrometheusServer:
    data = workdir / "prom-data"
    data.mkdir()
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data)],
                   check=True, capture_output=True, timeout=120)
    cfg = workdir / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n")
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=10y", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=log, cwd=workdir,
    )
    log.close()
    server = PrometheusServer(proc, port, data)
    try:
        wait_http(f"{server.url}/-/ready", timeout=60, proc=proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready can come before the blocks are loaded
            r = requests.get(f"{server.url}/api/v1/series", params={"match[]": "req_total"}, timeout=5)
            if r.json()["data"]:
                break
            time.sleep(0.2)
    except Exception:
        server.stop()
        raise
    return server


def have_prometheus() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


# ------------------------------------------------------------------ comparison
def _close(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if x == y:
        return True
    return abs(x - y) <= 1e-9 * max(abs(x), abs(y)) or abs(x - y) <= 1e-12


def _top_is_sort(expr: str) -> bool:
    node = promql_parser.parse(expr)
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    return isinstance(node, promql_parser.Call) and node.func.name in ("sort", "sort_desc")


def compare(expr: str, ours: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """None when the two API bodies agree; else a description of the first difference."""
    if theirs["status"] == "error" or ours["status"] == "error":
        if theirs["status"] != ours["status"]:
            return f"status: ours {ours.get('status')} {ours.get('error', '')!r}, Prometheus {theirs.get('error', 'ok')!r}"
        if theirs["errorType"] != ours["errorType"]:
            return f"error type: ours {ours['errorType']} ({ours['error']}), Prometheus {theirs['errorType']} " \
                   f"({theirs['error']})"
        return None
    od, td = ours["data"], theirs["data"]
    if od["resultType"] != td["resultType"]:
        return f"result type: ours {od['resultType']}, Prometheus {td['resultType']}"
    kind = od["resultType"]
    if kind in ("scalar", "string"):
        if od["result"][0] != td["result"][0]:
            return f"timestamp {od['result']} vs {td['result']}"
        ok = _close(od["result"][1], td["result"][1]) if kind == "scalar" else od["result"][1] == td["result"][1]
        return None if ok else f"value: ours {od['result']}, Prometheus {td['result']}"
    key = "value" if kind == "vector" else "values"

    def index(result: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], Any]:
        return {tuple(sorted(r["metric"].items())): r[key] for r in result}

    oi, ti = index(od["result"]), index(td["result"])
    if set(oi) != set(ti):
        return f"series: only ours {sorted(set(oi) - set(ti))[:3]}, only Prometheus {sorted(set(ti) - set(oi))[:3]}"
    if kind == "vector" and _top_is_sort(expr):
        ol = [tuple(sorted(r["metric"].items())) for r in od["result"]]
        tl = [tuple(sorted(r["metric"].items())) for r in td["result"]]
        ov = [r["value"][1] for r in td["result"]]
        if ol != tl and len(set(ov)) == len(ov):  # ties may come in any order
            return f"order: ours {ol}, Prometheus {tl}"
    for lab, tv in ti.items():
        ov = oi[lab]
        pts_o = [ov] if kind == "vector" else ov
        pts_t = [tv] if kind == "vector" else tv
        if [p[0] for p in pts_o] != [p[0] for p in pts_t]:
            return f"{dict(lab)}: timestamps ours {[p[0] for p in pts_o][:8]}, Prometheus {[p[0] for p in pts_t][:8]}"
        for po, pt in zip(pts_o, pts_t, strict=True):
            if not _close(po[1], pt[1]):
                return f"{dict(lab)} at {pt[0]}: ours {po[1]}, Prometheus {pt[1]}"
    return None
