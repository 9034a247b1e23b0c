"""``mlwatch demo``: a daemon on a temporary directory fed by a synthetic model whose accuracy drops.

What it runs, all in one process:

- the daemon itself, with a config built here and validated like any file;
- a live synthetic prediction stream (``mlwatch.ml.synthetic``): a binary fraud model written to
  ``fraud.jsonl`` whose ground truth arrives later in ``fraud-labels.jsonl`` (joined by
  ``request_id``), and a 3-class router written with its labels inline to ``router.jsonl``;
- a small JSON endpoint (``/stats``) that an ``http`` source with ``format: json`` scrapes;
- a nightly-eval figure pushed to the daemon's Pushgateway API, as the seed chapter does;
- rules for low accuracy, a sudden drop, high latency and missing predictions.

The fraud model's accuracy drops after about a minute (``--speed`` scales every duration), so
alerts fire within about two minutes; the model recovers after five, and the alerts resolve.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from ruamel.yaml import YAML

from mlwatch.config import Config, parse_config
from mlwatch.daemon import Daemon, DaemonOptions
from mlwatch.ml.synthetic import ModelSpec, Prediction, SyntheticStream

log = logging.getLogger("mlwatch.demo")

DROP_AFTER_S = 60.0  # the fraud model's accuracy drops this long after the start (at speed 1)
RECOVER_AFTER_S = 300.0  # ... and comes back this long after the start


def _dur(seconds: float) -> str:
    """A Prometheus duration of at least 1s."""
    return f"{max(1, round(seconds))}s"


@dataclass(frozen=True)
class DemoPlan:
    directory: Path
    listen: str
    stats_port: int
    speed: float

    def scaled(self, seconds: float) -> str:
        return _dur(seconds / self.speed)


def build_config(plan: DemoPlan) -> str:
    """The demo's config as YAML text (validated by the same loader as a user's file)."""
    d = plan.directory
    s = plan.scaled
    window = s(60)
    cfg: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{d / 'mlwatch.db'}", "retention": "7d"},
        "server": {"listen": plan.listen},
        "evaluation_interval": s(5),
        "push": {"sample_interval": s(5)},
        "sources": [
            {
                "name": "fraud-predictions", "type": "log", "path": str(d / "fraud.jsonl"), "format": "jsonl",
                "interval": s(2), "timestamp": {"field": "ts"},
                "metrics": [
                    {"name": "ai_model_predictions_total", "type": "counter", "labels": {"model": "{model}"},
                     "help": "Predictions logged."},
                    {"name": "ai_model_latency_seconds", "type": "histogram", "field": "latency_ms", "scale": 0.001,
                     "labels": {"model": "{model}"}, "buckets": [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]},
                ],
                "classification": {"prediction": "pred", "label": "label", "score": "score", "positive": "1",
                                   "window": window, "by": ["model"], "prefix": "ai_model"},
            },
            {
                "name": "fraud-labels", "type": "log", "path": str(d / "fraud-labels.jsonl"), "format": "jsonl",
                "interval": s(2), "timestamp": {"field": "ts"},
                "labels_for": {"source": "fraud-predictions", "key": "request_id", "max_delay": s(600)},
            },
            {
                "name": "router-predictions", "type": "log", "path": str(d / "router.jsonl"), "format": "jsonl",
                "interval": s(2), "timestamp": {"field": "ts"},
                "metrics": [
                    {"name": "router_predictions_total", "type": "counter", "labels": {"model": "{model}"}},
                    {"name": "router_latency_seconds", "type": "histogram", "field": "latency_ms", "scale": 0.001,
                     "labels": {"model": "{model}"}, "buckets": [0.05, 0.1, 0.25, 0.5, 1, 2.5]},
                ],
                "classification": {"prediction": "pred", "label": "label", "window": window, "by": ["model"],
                                   "prefix": "router"},
            },
            {
                "name": "model-stats", "type": "http", "format": "json", "interval": s(5),
                "url": f"http://127.0.0.1:{plan.stats_port}/stats",
                "metrics": [
                    {"name": "model_stats_gpu_utilisation", "path": "models[0].gpu", "labels": {"model": "fraud-v2"}},
                    {"name": "model_stats_queue_depth", "path": "models[0].queue", "labels": {"model": "fraud-v2"}},
                ],
            },
        ],
        "rules": [
            {"alert": "AccuracyLow", "expr": 'ai_model_accuracy{model="fraud-v2"} < 0.85', "for": s(20),
             "resolve_expr": 'ai_model_accuracy{model="fraud-v2"} > 0.9',
             "labels": {"severity": "critical"},
             "annotations": {"summary": "accuracy of {{ $labels.model }} is {{ $value | humanizePercentage }}"}},
            {"alert": "AccuracySuddenDrop",
             "drop": {"metric": "ai_model_accuracy", "window": window, "baseline": s(300), "by": "10%"},
             "labels": {"severity": "warning"}},
            {"alert": "LatencyHigh",
             "threshold": {"expr": "histogram_quantile(0.99, sum by (le, model) "
                                   f"(rate(ai_model_latency_seconds_bucket[{window}])))",
                           "above": 0.25, "for": s(20)},
             "labels": {"severity": "warning"}},
            {"alert": "PredictionsMissing", "absent": {"metric": "ai_model_predictions_total", "for": s(60)}},
        ],
    }
    out = StringIO()
    YAML().dump(cfg, out)
    return out.getvalue()


class LiveStream:
    """Writes predictions as they happen and each delayed label when its time comes."""

    def __init__(self, directory: Path, speed: float, seed: int = 7) -> None:
        self.directory = directory
        self.speed = speed
        self.start = time.time()
        # fraud-v2 is healthy, then degraded (wrong more often, and slow), then healthy again.
        self._fraud = ModelSpec("fraud-v2", accuracy=0.96, latency_ms=35.0)
        self._degraded = ModelSpec("fraud-v2", accuracy=0.62, latency_ms=140.0)
        self._router = ModelSpec("router-v1", classes=("billing", "support", "sales"), weights=(0.5, 0.3, 0.2),
                                 accuracy=0.88, latency_ms=120.0, latency_sigma=0.8)
        self._rnd = random.Random(seed)
        self._stream = SyntheticStream(models=(self._fraud,), start_s=self.start, rate_per_s=25.0 * speed,
                                       label_delay_s=8.0 / speed, label_share=0.95, seed=seed)
        self._pending: list[tuple[float, int, bytes]] = []
        self._n = 0
        self.written = 0

    def degraded(self, offset: float) -> bool:
        return DROP_AFTER_S / self.speed <= offset < RECOVER_AFTER_S / self.speed

    def _prediction(self, model: ModelSpec, offset: float) -> Prediction:
        if model is self._fraud and self.degraded(offset):
            model = self._degraded
        self._n += 1
        return self._stream._one(self._rnd, model, offset, self._n)

    def tick(self, now: float, dt: float) -> None:
        """Append the predictions of the last ``dt`` seconds and the labels now due."""
        offset = now - self.start
        fraud, router = [], []
        for _ in range(self._poisson(25.0 * self.speed * dt)):
            p = self._prediction(self._fraud, offset)
            fraud.append(orjson.dumps(p.line()) + b"\n")
            lab = p.label_line()
            if lab is not None:
                self._n += 1
                heapq.heappush(self._pending, (lab["ts"], self._n, orjson.dumps(lab) + b"\n"))
        for _ in range(self._poisson(10.0 * self.speed * dt)):
            p = self._prediction(self._router, offset)
            router.append(orjson.dumps(p.line(with_label=True)) + b"\n")
        labels = []
        while self._pending and self._pending[0][0] <= now:
            labels.append(heapq.heappop(self._pending)[2])
        for name, lines in (("fraud.jsonl", fraud), ("router.jsonl", router), ("fraud-labels.jsonl", labels)):
            with open(self.directory / name, "ab") as f:
                f.writelines(lines)
        self.written += len(fraud) + len(router)

    def _poisson(self, lam: float) -> int:
        # Knuth for small means, a normal approximation above: enough for a demo's arrivals.
        if lam > 50:
            return max(0, round(self._rnd.gauss(lam, lam**0.5)))
        limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
        while True:
            p *= self._rnd.random()
            if p <= limit:
                return k
            k += 1


async def _stats_server(port: int, stream: LiveStream) -> web.AppRunner:
    async def stats(_request: web.Request) -> web.Response:
        offset = time.time() - stream.start
        busy = 0.55 + 0.3 * stream.degraded(offset) + 0.05 * stream._rnd.random()
        doc = {"models": [{"name": "fraud-v2", "gpu": round(busy, 3), "queue": stream._rnd.randint(0, 12)}]}
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _feed(daemon: Daemon, plan: DemoPlan, stream: LiveStream) -> None:
    """Write the logs and push the nightly-eval figure until the daemon stops."""
    push_url = f"http://{plan.listen}/metrics/job/nightly-eval/model/fraud-v2"
    last = time.time()
    next_push = 0.0
    async with aiohttp.ClientSession() as http:
        while not daemon.stopping:
            now = time.time()
            await asyncio.to_thread(stream.tick, now, now - last)
            last = now
            if now >= next_push and daemon.ready:
                acc = 0.71 if stream.degraded(now - stream.start) else 0.95
                body = ("# HELP nightly_eval_accuracy Accuracy on the nightly evaluation set.\n"
                        "# TYPE nightly_eval_accuracy gauge\n"
                        f"nightly_eval_accuracy {acc}\n")
                try:
                    async with http.put(push_url, data=body.encode()) as resp:
                        if resp.status != 200:
                            log.warning("nightly-eval push answered %s", resp.status)
                except aiohttp.ClientError as exc:
                    log.warning("nightly-eval push failed: %s", exc)
                next_push = now + 60.0 / plan.speed
            await asyncio.sleep(min(1.0, 2.0 / plan.speed))


async def run_demo(plan: DemoPlan, config: Config, announce: Any) -> None:
    stream = LiveStream(plan.directory, plan.speed)
    stream.tick(time.time(), 1.0)  # the files exist before the sources start
    stats = await _stats_server(plan.stats_port, stream)
    daemon = Daemon(config, DaemonOptions())
    feeder = asyncio.create_task(_feed(daemon, plan, stream))
    announce()
    try:
        await daemon.run()
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await stats.cleanup()


def make_plan(directory: str | None, listen: str, stats_port: int, speed: float) -> DemoPlan:
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mlwatch-demo-"))
    path.mkdir(parents=True, exist_ok=True)
    return DemoPlan(path.resolve(), listen, stats_port, speed)


def demo_config(plan: DemoPlan) -> Config:
    text = build_config(plan)
    (plan.directory / "mlwatch.yaml").write_text(text)
    return parse_config(text, str(plan.directory / "mlwatch.yaml"))
