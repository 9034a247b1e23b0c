"""Differential test: a live Prometheus and mlwatch scrape the same small exporter while its series
appear, disappear and the target goes down; both must store the same series, values and staleness."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from mlwatch.config import parse_config
from mlwatch.model import Matcher, is_stale_nan
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.integration.peers import run_prometheus

pytestmark = pytest.mark.integration


class _State:
    body = ""
    status = 200


def _exporter() -> tuple[ThreadingHTTPServer, _State]:
    state = _State()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = state.body.encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


@pytest.fixture
def exporter() -> Iterator[tuple[str, _State]]:
    server, state = _exporter()
    yield f"127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _runs(values: list[float]) -> list[float | str]:
    """Consecutive distinct values, with staleness markers shown as 'stale'."""
    out: list[float | str] = []
    for v in values:
        item: float | str = "stale" if is_stale_nan(v) else v
        if not out or out[-1] != item:
            out.append(item)
    return out


PHASES = [
    ('# TYPE a gauge\na 1\nb{x="1"} 5\n', 200),
    ("# TYPE a gauge\na 2\n", 200),  # b disappears
    ("oops\n", 500),  # the target fails
    ("# TYPE a gauge\na 3\n", 200),  # back
]


def test_same_series_values_and_staleness_as_prometheus(exporter: tuple[str, _State], tmp_path: Path,
                                                         writer: Writer, reader: Reader) -> None:  # fmt: skip
    addr, state = exporter
    state.body, state.status = PHASES[0]
    scrape = [{"job_name": "fx", "scrape_interval": "500ms", "scrape_timeout": "400ms",
               "static_configs": [{"targets": [addr]}]}]  # fmt: skip
    cfg = parse_config(f"sources: [{{name: fx, type: http, targets: ['{addr}'], interval: 500ms, timeout: 400ms}}]")
    manager = SourceManager(cfg.sources, writer, reader)
    with run_prometheus(tmp_path, scrape) as prom:
        prom.wait_for('up{job="fx"} == 1')
        prom_phase_ends: list[float] = []

        async def drive() -> None:
            await manager.start(None)
            for body, status in PHASES:
                state.body, state.status = body, status
                end = time.monotonic() + 2.5
                while time.monotonic() < end:
                    await manager.run_once()
                    await asyncio.sleep(0.5)
                prom_phase_ends.append(time.time())
            await manager.stop()

        asyncio.run(drive())
        # What Prometheus stored, sample by sample (its range queries hide staleness markers, so the
        # markers are checked through instant queries: a series is absent right after its marker).
        raw = requests.get(f"{prom.url}/api/v1/query", params={"query": '{job="fx"}[1h]'}, timeout=5).json()
        prom_series = {
            (r["metric"]["__name__"], tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__"))):
                _runs([float(v) for _, v in r["values"]])
            for r in raw["data"]["result"]
        }  # fmt: skip

        def present_at(expr: str, t: float) -> bool:
            res = requests.get(f"{prom.url}/api/v1/query", params={"query": expr, "time": str(t)}, timeout=5).json()
            return bool(res["data"]["result"])

        b_absent_after_phase_1 = not present_at('b{job="fx"}', prom_phase_ends[1] - 0.1)
        a_absent_while_down = not present_at('a{job="fx"}', prom_phase_ends[2] - 0.1)

    ours: dict[tuple[str, tuple[tuple[str, str], ...]], list[float | str]] = {}
    for info in reader.series([Matcher.make("job", "=", "fx")]):
        _, values = reader.read_range(info.id, 0, 2**62)
        ours[(info.key.name, info.key.labels)] = _runs(values.tolist())
    common = {"a", "b", "up", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling"}
    prom_view = {k: v for k, v in prom_series.items() if k[0] in common}
    ours_view = {k: [x for x in v if x != "stale"] for k, v in ours.items() if k[0] in common}
    assert set(ours_view) == set(prom_view)  # the same series, with the same labels
    for key in ("a", "b", "up"):
        k = next(k for k in prom_view if k[0] == key)
        assert ours_view[k] == prom_view[k], key
    # Staleness as Prometheus writes it: b ends when it disappears, a while the target is down.
    assert b_absent_after_phase_1 and a_absent_while_down
    a_ours = next(v for k, v in ours.items() if k[0] == "a")
    b_ours = next(v for k, v in ours.items() if k[0] == "b")
    assert a_ours == [1.0, 2.0, "stale", 3.0]
    assert b_ours == [5.0, "stale"]
