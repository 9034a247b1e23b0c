"""Staleness, live: a real Prometheus and a real ``mlwatch daemon`` scrape the same fixture exporter (every
500 ms, both) while its series appear, disappear and the target fails; then the same instant and range
queries go to both HTTP APIs and must answer the same. Staleness markers cannot be backfilled, so this is
the half of the differential that the backfilled one (test_differential.py) cannot cover.

The exporter's content is a function of wall-clock time: phase ``k`` runs from ``B_k = T0 + k * PHASE_S``
to ``B_{k+1}`` (see ``PHASES``). The two scrapers tick independently, so they see a phase change at
different scrapes: each at its first scrape after ``B_k``, somewhere in ``[B_k - EPS, B_k + INTERVAL +
EPS]`` (EPS covers the time between a scrape's timestamp and the exporter answering, and scheduler
jitter). That is the only freedom the comparison allows:

- *Presence* of every series of the plain selectors and ``absent()`` is compared over the whole run
  (range queries at a 100 ms step): both must appear and disappear the same number of times in the
  same order, each transition of ours within one scrape interval (+ EPS) of Prometheus' and inside a
  phase change's window above.
- *Everything else* (series, labels and values of every query) is compared exactly (1e-9 relative) at
  evaluation times whose look-back ``[t - range, t]`` touches no phase change's window, instant and
  range queries alike; ``count_over_time`` may differ by one sample, since a window of ``w`` holds
  ``w / INTERVAL`` or one more samples depending on where the scrapes fall.
- *Counters* grow linearly with wall time (``RATE`` per second), so a sample's value depends on when it
  was taken. ``rate``/``increase`` over a window whose two ends are settled (the series exists from the
  window's start to a scrape later, and from a scrape before its end to its end, with no phase change
  in between) extrapolate to the same ``RATE * range`` on both sides, up to the milliseconds between a
  scrape's timestamp and the exporter computing the value: 5 % relative is allowed (50 ms over a sampled
  span of 1 s); an engine that did not extrapolate, or mishandled the gap, would be off by 10 % or more.
  A raw counter value may differ by ``RATE * (INTERVAL + EPS)`` (the two last samples lie up to a
  scrape interval apart).
  Windows that span the gaps (series absent for a phase, target down) are included on purpose.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import DaemonProcess, start_daemon
from tests.integration.peers import Prometheus, run_prometheus

pytestmark = pytest.mark.integration

INTERVAL = 0.5
EPS = 0.25
PHASE_S = 3.0
RATE = 10.0
BASE = 1000.0  # counters start far from zero, so rate's zero-clamp never applies

# Series per phase: name -> labels; values are fixed per phase except counters (linear in time).
A, B_ = ("fx_requests_total", 'path="/a"'), ("fx_requests_total", 'path="/b"')
X, Y, LATE = ("fx_temp", 'room="x"'), ("fx_temp", 'room="y"'), ("fx_late", "")
PHASES: list[tuple[int, set[tuple[str, str]]]] = [
    (200, {A, B_, X}),  # 0
    (200, {A, B_, X, Y}),  # 1: y appears
    (200, {A, X, LATE}),  # 2: b and y disappear, late appears
    (500, set()),  # 3: the target fails
    (200, {A, B_, X, LATE}),  # 4: back; b returns after its gap
]


class _Fixture:
    def __init__(self) -> None:
        self.t0 = math.inf
        self.agents: dict[str, int] = {}
        self.lock = threading.Lock()

    def phase(self, now: float) -> int:
        return max(0, min(len(PHASES) - 1, int((now - self.t0) // PHASE_S))) if now >= self.t0 else 0

    def body(self, now: float) -> tuple[int, str]:
        k = self.phase(now)
        status, present = PHASES[k]
        if status != 200:
            return status, "down\n"
        lines = ["# TYPE fx_requests_total counter", "# TYPE fx_temp gauge", "# TYPE fx_late gauge"]
        for name, labels in sorted(present):
            sel = f"{name}{{{labels}}}" if labels else name
            if name == "fx_requests_total":
                value = BASE + RATE * (now - min(self.t0, now))
            elif name == "fx_temp":
                value = 10 * (k + 1) + (labels == 'room="y"')
            else:
                value = 7.0
            lines.append(f"{sel} {value!r}")
        return 200, "\n".join(lines) + "\n"


@pytest.fixture
def exporter() -> Iterator[tuple[str, _Fixture]]:
    fx = _Fixture()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            now = time.time()
            agent = self.headers.get("User-Agent", "").split("/")[0]
            with fx.lock:
                fx.agents[agent] = fx.agents.get(agent, 0) + 1
            status, text = fx.body(now)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", fx
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Q:
    expr: str
    window: float = 0.0  # how far back the result at t looks (range + offset)
    kind: str = "exact"  # exact | count (+-1 sample) | counter_value | counter_rate
    series: tuple[tuple[str, str], ...] = ()  # for counter_rate: the exporter series behind the result


QUERIES = [
    Q("fx_temp"),
    Q('fx_temp{room="y"}'),
    Q("fx_late"),
    Q('up{job="fx"}'),
    Q("count(fx_temp)"),
    Q('count({job="fx", __name__=~"fx_.*"})'),
    Q("sum by (room) (fx_temp)"),
    Q('absent(fx_temp{room="y"})'),
    Q("absent(fx_late)"),
    Q("absent(nonexistent)"),
    Q("last_over_time(fx_temp[1s])", 1.0),
    Q("max_over_time(fx_temp[1500ms])", 1.5),
    Q("count_over_time(fx_temp[1s])", 1.0, "count"),
    Q("fx_temp offset 1s", 1.0),
    Q("fx_temp * on(room) group_left fx_temp", 0.0),
    Q("fx_temp > 25"),
    Q("fx_late unless fx_temp"),
    Q("fx_requests_total", 0.0, "counter_value"),
    Q("rate(fx_requests_total[1500ms])", 1.5, "counter_rate", (A, B_)),
    Q("increase(fx_requests_total[1500ms])", 1.5, "counter_rate", (A, B_)),
    Q('increase(fx_requests_total{path="/b"}[10s])', 10.0, "counter_rate", (B_,)),  # over b's gap
    Q("rate(fx_requests_total[10s])", 10.0, "counter_rate", (A, B_)),  # over the target's outage
    Q("sum(rate(fx_requests_total[1500ms]))", 1.5, "counter_rate", (A, B_)),
]
PRESENCE = ["fx_temp", "fx_late", "fx_requests_total", 'up{job="fx"} == 1', 'absent(fx_temp{room="y"})']


@dataclass
class Run:
    prom: Prometheus
    daemon: DaemonProcess
    t0: float

    def boundaries(self) -> list[float]:
        return [self.t0 + k * PHASE_S for k in range(1, len(PHASES))]

    def end(self) -> float:
        return self.t0 + len(PHASES) * PHASE_S

    def settled(self, lo: float, hi: float) -> bool:
        """No phase change can have reached either scraper's samples within [lo, hi]."""
        return all(hi < b - EPS or lo > b + INTERVAL + EPS for b in self.boundaries())

    def present(self, series: tuple[str, str], t: float) -> bool:
        return t >= self.t0 and series in PHASES[min(len(PHASES) - 1, int((t - self.t0) // PHASE_S))][1]


def _ask(url: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{url}/api/v1/{path}", data=params, timeout=10)
    body: dict[str, Any] = r.json()
    assert body["status"] == "success", (url, path, params, body)
    return body["data"]  # type: ignore[no-any-return]


def _points(data: dict[str, Any]) -> dict[tuple[tuple[str, str], ...], dict[float, float]]:
    """Result as {labels: {t: value}} for vectors and matrices alike."""
    out: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
    for r in data["result"]:
        pts = r["values"] if "values" in r else [r["value"]]
        out[tuple(sorted(r["metric"].items()))] = {round(float(t), 3): float(v) for t, v in pts}
    return out


@pytest.fixture
def run(exporter: tuple[str, _Fixture], tmp_path: Path) -> Iterator[Run]:
    addr, fx = exporter
    prom_dir, ml_dir = tmp_path / "prom", tmp_path / "ml"
    prom_dir.mkdir()
    ml_dir.mkdir()
    scrape = [{"job_name": "fx", "scrape_interval": "500ms", "scrape_timeout": "400ms",
               "static_configs": [{"targets": [addr]}]}]  # fmt: skip
    with run_prometheus(prom_dir, scrape) as prom:
        daemon = start_daemon(
            ml_dir,
            "sources:\n  - name: fx\n    type: http\n"
            f"    targets: ['{addr}']\n    interval: 500ms\n    timeout: 400ms\n",
        )
        try:
            deadline = time.monotonic() + 20
            while not {"Prometheus", "mlwatch"} <= {a for a, n in fx.agents.items() if n >= 2}:
                assert time.monotonic() < deadline, f"scrapers never arrived: {fx.agents}"
                time.sleep(0.1)
            fx.t0 = time.time() + 2 * INTERVAL  # both are scraping phase 0 well before it starts
            r = Run(prom, daemon, fx.t0)
            time.sleep(max(0.0, r.end() - time.time()) + 1.0)  # the last scrapes are written
            yield r
        finally:
            daemon.stop()


def test_scraped_series_that_come_and_go(run: Run) -> None:
    problems: list[str] = []
    start, end = run.t0 + 2.0, run.end() - EPS
    instants = [round(run.t0 + k * PHASE_S + f, 3) for k in range(len(PHASES)) for f in (2.5, 2.75)]
    instants += [round(run.t0 + 5 * PHASE_S - 0.2, 3)]
    checked = 0
    for q in QUERIES:
        asks = [("query", {"time": t}) for t in instants]
        asks.append(("query_range", {"start": round(start, 3), "end": round(end, 3), "step": 0.25}))
        for path, params in asks:
            body = {"query": q.expr, **params}
            ours, theirs = _points(_ask(run.daemon.url, path, body)), _points(_ask(run.prom.url, path, body))
            if path == "query":
                times = [params["time"]]
            else:
                times = [round(start + k * 0.25, 3) for k in range(int((end - start) / 0.25) + 1)]
            for t in times:
                if q.kind == "counter_rate":
                    # Both scrapers have a sample of each series within a scrape of both window edges.
                    edges = [(t - q.window, t - q.window + INTERVAL + EPS), (t - INTERVAL - EPS, t)]
                    if not all(run.settled(lo, hi) for lo, hi in edges):
                        continue
                    if not all(run.present(s, x) for s in q.series for edge in edges for x in edge):
                        continue
                elif not run.settled(t - q.window, t):
                    continue
                checked += 1
                o = {k: v[t] for k, v in ours.items() if t in v}
                p = {k: v[t] for k, v in theirs.items() if t in v}
                if set(o) != set(p):
                    problems.append(
                        f"{q.expr} {path} at t0+{t - run.t0:.2f}: series ours {sorted(o)}, Prometheus {sorted(p)}"
                    )
                    continue
                for k, pv in p.items():
                    if not _close(q.kind, o[k], pv):
                        problems.append(
                            f"{q.expr} {path} at t0+{t - run.t0:.2f} {dict(k)}: ours {o[k]}, Prometheus {pv}"
                        )
    assert checked > 300, checked
    problems += _presence_problems(run)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def _close(kind: str, ours: float, theirs: float) -> bool:
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    diff = abs(ours - theirs)
    if kind == "count":
        return diff <= 1
    if kind == "counter_value":
        return diff <= RATE * (INTERVAL + EPS)
    if kind == "counter_rate":
        return diff <= 0.05 * max(abs(ours), abs(theirs))
    return diff <= 1e-9 * max(abs(ours), abs(theirs))


def _transitions(pts: dict[float, float], grid: list[float]) -> list[tuple[float, bool]]:
    out: list[tuple[float, bool]] = []
    was = grid[0] in pts
    for t in grid:
        now = t in pts
        if now != was:
            out.append((t, now))
        was = now
    return out


def _presence_problems(run: Run) -> list[str]:
    """Every series of the presence queries appears and disappears the same way on both, within a scrape."""
    step, start, end = 0.1, run.t0 - 0.5, run.end() - EPS
    grid = [round(start + k * step, 3) for k in range(int((end - start) / step) + 1)]
    windows = [(b - EPS, b + INTERVAL + EPS + step) for b in run.boundaries()]
    problems = []
    for expr in PRESENCE:
        params = {"query": expr, "start": grid[0], "end": grid[-1], "step": step}
        ours, theirs = (
            _points(_ask(run.daemon.url, "query_range", params)),
            _points(_ask(run.prom.url, "query_range", params)),
        )
        if set(ours) != set(theirs):
            problems.append(f"presence {expr}: series ours {sorted(ours)}, Prometheus {sorted(theirs)}")
            continue
        for k in theirs:
            to, tp = _transitions(ours[k], grid), _transitions(theirs[k], grid)
            ok = len(to) == len(tp) and all(
                a[1] == b[1]
                and abs(a[0] - b[0]) <= INTERVAL + EPS
                and all(any(lo <= x <= hi for lo, hi in windows) for x in (a[0], b[0]))
                for a, b in zip(to, tp, strict=False)
            )
            if not ok:
                problems.append(f"presence {expr} {dict(k)}: ours {_rel(to, run.t0)}, Prometheus {_rel(tp, run.t0)}")
    return problems


def _rel(transitions: list[tuple[float, bool]], t0: float) -> list[tuple[float, bool]]:
    return [(round(t - t0, 2), present) for t, present in transitions]
