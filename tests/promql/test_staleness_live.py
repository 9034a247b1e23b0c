"""Staleness, against a live Prometheus: staleness markers cannot be backfilled, so Prometheus scrapes a
fixture exporter whose series come and go; mlwatch stores the same scraped samples plus the staleness
markers Prometheus' scrape loop writes (at the first scrape that misses a series), and every query, at
many instants and as range queries, must answer the same.

(When mlwatch scrapes HTTP targets itself, the mlwatch half should scrape the exporter too.)
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from mlwatch.errors import QueryError
from mlwatch.model import STALE_NAN, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.promql.engine import Engine, EngineOptions
from mlwatch.promql.errors import error_type
from mlwatch.promql.jsonfmt import error_body, success_body
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer
from tests.helpers import free_port, wait_http
from tests.promql.difftools import compare, have_prometheus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_prometheus(), reason="needs Debian's prometheus"),
]

SCRAPES = 12


class _Exporter(BaseHTTPRequestHandler):
    scrapes = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            n = _Exporter.scrapes
            _Exporter.scrapes += 1
        lines = ["# TYPE steady_total counter", f"steady_total {n * 3}"]
        if (n // 3) % 2 == 0:
            lines.append(f'flap{{id="1"}} {n}')
        if n % 4 != 0:
            lines.append(f'flap{{id="2"}} {n * 10}')
        if n >= 5:
            lines.append(f'flap{{id="3"}} {-n}')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("live")
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    th = threading.Thread(target=exporter.serve_forever, daemon=True)
    th.start()
    port = free_port()
    cfg = work / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        f"scrape_configs:\n  - job_name: fixture\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.server_address[1]}']\n"
    )
    url = f"http://127.0.0.1:{port}"

    def start(config: Path) -> subprocess.Popen[bytes]:
        with (work / "prometheus.log").open("ab") as log:
            p = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_http(f"{url}/-/ready", timeout=60, proc=p)
        return p

    proc = start(cfg)
    try:
        deadline = time.monotonic() + 60
        while _Exporter.scrapes < SCRAPES and time.monotonic() < deadline:
            time.sleep(0.2)
        # Stop scraping without a target change (which would write markers of its own): restart Prometheus
        # on the same data with no scrape config; the head comes back from the WAL.
        proc.terminate()
        proc.wait(10)
        idle = work / "idle.yml"
        idle.write_text("global:\n  scrape_interval: 1s\n")
        proc = start(idle)
        now = time.time()
        raw = requests.get(f"{url}/api/v1/query", params={"query": '{job="fixture"}[10m]', "time": now},
                           timeout=10).json()["data"]["result"]
        db = work / "m.db"
        engine = make_engine(f"sqlite:///{db}")
        upgrade(engine)
        samples = _with_staleness_markers(raw)
        assert sum(1 for x in samples if x.value != x.value) >= 3  # series did go stale between scrapes
        writer = Writer(engine)
        writer.start()
        meta = {"steady_total": MetricMeta(MetricType.COUNTER), "flap": MetricMeta(MetricType.GAUGE)}
        writer.write_sync(WriteBatch(samples=samples, meta=meta, backfill=True))
        writer.stop()
        ups = sorted(float(t) for t, _ in next(r for r in raw if r["metric"]["__name__"] == "up")["values"])
        yield {"url": url, "engine": Engine(Reader(engine), EngineOptions()), "scrapes": ups}
    finally:
        proc.terminate()
        proc.wait(10)
        exporter.shutdown()
        exporter.server_close()


def _with_staleness_markers(raw: list[dict[str, Any]]) -> list[Sample]:
    """The scraped samples plus a marker wherever a series was missing from the scrape after one it was in."""
    scrape_ts = sorted({round(float(t) * 1000) for r in raw if r["metric"]["__name__"] == "up" for t, _ in r["values"]})
    out = []
    for r in raw:
        labels = dict(r["metric"])
        key = SeriesKey.of(labels.pop("__name__"), labels)
        seen = {round(float(t) * 1000): float(v) for t, v in r["values"]}
        for t, v in seen.items():
            out.append(Sample(key, t, v))
        for prev, cur in itertools.pairwise(scrape_ts):
            if prev in seen and cur not in seen:
                out.append(Sample(key, cur, STALE_NAN))
    return out


QUERIES = [
    "flap", 'flap{id="1"}', "count(flap)", "sum by (id) (flap)", "flap offset 2s", "last_over_time(flap[3s])",
    "timestamp(flap)", 'absent(flap{id="1"})', "rate(steady_total[4s])", "count_over_time(flap[5s])",
    "flap > 5", "flap * on(id) flap", "max_over_time(flap[2s:500ms])", "changes(flap[10s])", "up",
    "flap unless flap offset 1s", "sum(flap) + count(flap)",
]


def _ours(eng: Engine, expr: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        if "time" in params:
            res = eng.instant(expr, round(params["time"] * 1000))
        else:
            res = eng.range(expr, round(params["start"] * 1000), round(params["end"] * 1000),
                            round(params["step"] * 1000))
        return json.loads(success_body(res))  # type: ignore[no-any-return]
    except QueryError as exc:
        return json.loads(error_body(error_type(exc)[0], str(exc)))  # type: ignore[no-any-return]


def test_scraped_series_that_come_and_go(live: dict[str, Any]) -> None:
    first, last = live["scrapes"][0], live["scrapes"][-1]
    assert len(live["scrapes"]) >= SCRAPES - 2
    instants = [first + k * 0.25 for k in range(int((last - first) / 0.25) + 1)] + [last + 30, last + 299]
    problems = []
    for expr in QUERIES:
        cases: list[tuple[str, dict[str, Any]]] = [("query", {"time": round(t, 3)}) for t in instants]
        cases.append(("query_range", {"start": round(first, 3), "end": round(last + 60, 3), "step": 0.5}))
        for path, params in cases:
            theirs = requests.post(f"{live['url']}/api/v1/{path}", data={"query": expr, **params}, timeout=10).json()
            diff = compare(expr, _ours(live["engine"], expr, params), theirs)
            if diff:
                problems.append(f"{expr!r} {path} {params}: {diff}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])



