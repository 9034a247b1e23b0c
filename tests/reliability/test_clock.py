"""Clock jumps and timestamps from the future or the far past (CONTRACT §7 "Time order").

A series takes samples up to ``storage.out_of_order_window`` older than its newest one, a sample with the
same timestamp replaces the stored one, older ones are refused and counted. A sample stamped more than
10 minutes ahead of the daemon's clock is refused as well (pushes: 400; log lines: skipped and counted as
``future_timestamp``; scrapes: dropped and counted): stored, it would make every later sample of its
series "out of order" until the clock caught up with it -- the same bound Mimir's creation grace period
sets. Debian's faketime is not installed, so host clock jumps are fed as timestamps: a log whose clock
is set back two hours, a pusher whose clock runs a year ahead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from sqlalchemy import Engine

from mlwatch.model import Sample, SeriesKey
from mlwatch.storage.writer import FUTURE_TOLERANCE_MS, WriteBatch, Writer
from tests.helpers import DaemonProcess

DaemonFactory = Callable[..., DaemonProcess]


def _metrics(d: DaemonProcess) -> dict[str, float]:
    """``/metrics`` as ``{series: value}`` (comments dropped)."""
    out = {}
    for line in requests.get(f"{d.url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def _until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stored(d: DaemonProcess, selector: str, t0: float, at: float, window: str = "5h") -> list[tuple[int, float]]:
    """The raw samples of one series in the ``window`` before ``t0 + at``, as (seconds from ``t0``, value)."""
    body = requests.get(
        f"{d.url}/api/v1/query", params={"query": f"{selector}[{window}]", "time": f"{t0 + at:.3f}"}, timeout=10
    ).json()
    result = body["data"]["result"]
    assert len(result) <= 1, result
    return [(round(float(t) - t0), float(v)) for t, v in result[0]["values"]] if result else []


# ---------------------------------------------------------------------------- the writer's bound
def test_writer_refuses_samples_from_the_future_and_counts_them(engine: Engine) -> None:
    now = [1_800_000_000.0]
    w = Writer(engine, clock=lambda: now[0], future_tolerance_ms=FUTURE_TOLERANCE_MS)
    w.start()
    try:
        key, t = SeriesKey.of("x", {}), int(now[0] * 1000)
        tol = FUTURE_TOLERANCE_MS
        res = w.write_sync(WriteBatch(samples=[Sample(key, t, 1.0), Sample(key, t + 365 * 86_400_000, 2.0)]))
        assert (res.appended, res.out_of_order, res.future) == (1, 0, 1)
        res = w.write_sync(WriteBatch(samples=[Sample(key, t + tol + 1, 3.0)]))
        assert (res.appended, res.future) == (0, 1)
        res = w.write_sync(WriteBatch(samples=[Sample(key, t + tol, 4.0)]))  # exactly at the bound: taken
        assert (res.appended, res.future) == (1, 0)
        res = w.write_sync(WriteBatch(samples=[Sample(key, t + 1000, 5.0)]))  # later samples are not "old"
        assert (res.appended, res.out_of_order) == (1, 0)
        now[0] += 3600  # the clock moves on: what was too far ahead is fine now
        res = w.write_sync(WriteBatch(samples=[Sample(key, t + 3600_000 + tol, 6.0)]))
        assert (res.appended, res.future) == (1, 0)
        assert (w.stats.future, w.stats.out_of_order) == (2, 0)
        # Backfill (``mlwatch import``, which reports what it stored) is exempt, as from the window; a push
        # with explicit timestamps is refused whole before it gets here (see the push test below).
        res = w.write_sync(WriteBatch(samples=[Sample(SeriesKey.of("y", {}), t + 86_400_000, 7.0)], backfill=True))
        assert (res.appended, res.future) == (1, 0)
    finally:
        w.stop()


def test_without_the_bound_one_future_sample_poisons_its_series(engine: Engine) -> None:
    """Why the bound exists: with none, every later sample of the series is refused as out of order."""
    w = Writer(engine, clock=lambda: 1_800_000_000.0)  # future_tolerance_ms=0: unbounded, as ``mlwatch import``
    w.start()
    try:
        key, t = SeriesKey.of("x", {}), 1_800_000_000_000
        w.write_sync(WriteBatch(samples=[Sample(key, t + 365 * 86_400_000, 1.0)]))
        res = w.write_sync(WriteBatch(samples=[Sample(key, t, 2.0)]))
        assert (res.appended, res.out_of_order) == (0, 1)
    finally:
        w.stop()


# ---------------------------------------------------------------------------- logs
def test_log_timestamps_from_the_future_the_past_and_a_clock_set_back(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    log = tmp_path / "events.jsonl"
    log.touch()
    d = daemon_factory(f"""
sources:
  - name: events
    type: log
    path: {log}
    interval: 100ms
    timestamp: {{field: ts}}
    metrics:
      - {{name: ev_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: ev_value, type: gauge, field: v, labels: {{model: "{{model}}"}}}}
""")
    t0 = time.time()
    read = [0]

    def lines(*docs: tuple[float, float]) -> dict[str, float]:
        with log.open("ab") as f:
            f.writelines(orjson.dumps({"ts": round(t0 + at, 3), "model": "a", "v": v}) + b"\n" for at, v in docs)
        read[0] += len(docs)
        lines_total = f'mlwatch_log_lines_total{{instance="{log}",job="events"}}'
        got: dict[str, float] = _until(lambda: (m := _metrics(d)).get(lines_total, 0) >= read[0] and m, "lines read")
        return got

    def errors(m: dict[str, float], reason: str) -> float:
        return m.get(f'mlwatch_source_errors_total{{job="events",reason="{reason}"}}', 0.0)

    ev_value = 'ev_value{job="events",model="a"}'
    ev_total = 'ev_total{job="events",model="a"}'
    lines((-600, 1))  # one read each: a read stamps a series once, at its newest event
    lines((-590, 2))
    assert _stored(d, ev_value, t0, 60) == [(-600, 1), (-590, 2)]

    # a line from a year ahead (a producer's clock off by a year): skipped, counted, nothing stored
    m = lines((365 * 86400, 99))
    assert errors(m, "future_timestamp") == 1
    assert m["mlwatch_storage_future_samples_total"] == 0  # refused at the source, before storage
    m = lines((-580, 3))  # ... and the series goes on: nothing later became "old"
    assert _stored(d, ev_value, t0, 60)[-1] == (-580, 3) and m["mlwatch_storage_out_of_order_samples_total"] == 0
    assert _stored(d, ev_total, t0, 60)[-1] == (-580, 3)  # the skipped line is not counted

    # the log's clock is set back two hours (beyond the 1h window), then a line from 1970
    m = lines((-580 - 7200, 4))
    assert m["mlwatch_storage_out_of_order_samples_total"] == 2  # ev_value and ev_total at that time
    m = lines((1000 - t0, 5))
    assert m["mlwatch_storage_out_of_order_samples_total"] == 4
    assert [at for at, _ in _stored(d, ev_value, t0, 60)] == [-600, -590, -580]

    # older than the newest sample but within the window: stored in place
    lines((-1000, 6))
    assert _stored(d, ev_value, t0, 60)[0] == (-1000, 6)
    # two lines with one timestamp, read one after the other: the later replaces the earlier, both count
    lines((-570, 7))
    assert _stored(d, ev_value, t0, 60)[-1] == (-570, 7)
    lines((-570, 8))
    assert _stored(d, ev_value, t0, 60)[-1] == (-570, 8)
    assert _stored(d, ev_total, t0, 60)[-1] == (-570, 8)  # six lines (the future one skipped) + 2
    assert [at for at, _ in _stored(d, ev_value, t0, 60)].count(-570) == 1

    m = _metrics(d)
    assert m[f'up{{instance="{log}",job="events"}}'] == 1 and d.proc.poll() is None
    assert errors(m, "future_timestamp") == 1 and m["mlwatch_storage_future_samples_total"] == 0


# ---------------------------------------------------------------------------- pushes
def test_pushed_timestamps_from_the_future_fail_the_push(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    d = daemon_factory("")
    t0 = time.time()

    def push(value: float, at: float | None) -> requests.Response:
        stamp = "" if at is None else f" {round((t0 + at) * 1000)}"
        return requests.post(f"{d.url}/metrics/job/clk", data=f"bf {value}{stamp}\n", timeout=10)

    assert push(1, -3 * 3600).status_code == 200  # backfill: stored at its time, window or not
    assert _stored(d, 'bf{job="clk"}', t0, 60) == [(-10800, 1)]

    r = push(2, 365 * 86400)  # a pusher whose clock runs a year ahead
    assert r.status_code == 400
    assert 'sample bf{job="clk"} has timestamp' in r.text and "ahead of the server's clock" in r.text
    assert "at most 600s" in r.text
    failed = _metrics(d)['push_failure_time_seconds{instance="",job="clk"}']
    assert t0 - 1 <= failed <= time.time() + 1  # the group records the failure, as for any refused push
    assert _stored(d, 'bf{job="clk"}', t0, 400 * 86400, "401d") == [(-10800, 1)]  # nothing of it stored

    assert push(3, -60).status_code == 200  # the series is not poisoned
    assert push(4, -60).status_code == 200  # same timestamp: replaces
    assert _stored(d, 'bf{job="clk"}', t0, 60) == [(-10800, 1), (-60, 4)]

    assert push(5, 540).status_code == 200  # 9 minutes ahead: within the tolerance, stored
    assert _stored(d, 'bf{job="clk"}', t0, 600)[-1] == (540, 5)
    assert push(6, 660).status_code == 400  # 11 minutes ahead: refused
    assert _metrics(d)["mlwatch_storage_future_samples_total"] == 0  # refused by the push, before storage


# ---------------------------------------------------------------------------- scrapes
@pytest.fixture
def target() -> Iterator[dict[str, Any]]:
    """A Prometheus-format target on loopback serving ``state["body"]``."""
    state: dict[str, Any] = {"body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state["body"]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["address"] = f"127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_scraped_timestamps_from_the_future_are_dropped_and_counted(
    tmp_path: Path, daemon_factory: DaemonFactory, target: dict[str, Any]
) -> None:
    t0 = time.time()
    ahead = round((t0 + 365 * 86400) * 1000)
    target["body"] = f"skewed 1 {ahead}\nsteady 1\n".encode()
    d = daemon_factory(f"""
sources:
  - {{name: app, type: http, targets: ["{target["address"]}"], interval: 250ms, timeout: 250ms}}
""")
    inst = target["address"]
    _until(lambda: _metrics(d).get("mlwatch_storage_future_samples_total", 0) >= 2, "future samples counted")
    m = _metrics(d)
    assert m[f'up{{instance="{inst}",job="app"}}'] == 1  # the target itself is fine
    assert _stored(d, 'steady{job="app"}', time.time(), 1) != []
    assert _stored(d, 'skewed{job="app"}', t0, 400 * 86400, "401d") == []

    # the exporter's clock is fixed: its samples are stored from then on
    fixed = time.time()
    target["body"] = f"skewed 2 {round(fixed * 1000)}\nsteady 1\n".encode()
    _until(lambda: _stored(d, 'skewed{job="app"}', fixed, 1) == [(0, 2)], "the fixed sample stored")
