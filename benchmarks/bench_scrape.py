"""B4: scrape parse + store, samples/s, from a 100k-line exposition body, against prometheus_client's parser.

Ours: what a scrape does after the body has arrived: parse (mlwatch.sources.textparse), attach target
labels, build samples and staleness bookkeeping (ScrapeTarget), then commit them to a real SQLite store
and wait for the commit. The peer: prometheus_client's ``text_string_to_metric_families`` over the same
body, parse only (every sample materialised). Both sample counts are checked before speeds are reported.

    /work/venv/bin/python benchmarks/bench_scrape.py [--runs 5] [--lines 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, row


def make_body(lines: int) -> tuple[str, int]:
    rng = random.Random(3)
    out = []
    samples = 0
    families = max(1, lines // 100)
    per = lines // families
    for f in range(families):
        name = f"app_metric_{f}_total" if f % 2 else f"app_gauge_{f}"
        out.append(f"# HELP {name} Synthetic metric {f}.")
        out.append(f"# TYPE {name} {'counter' if f % 2 else 'gauge'}")
        for i in range(per - 2):
            out.append(f'{name}{{instance_id="i-{i % 50}",path="/api/v{i % 3}/{i}",method="GET"}} {rng.random() * 1000:.3f}')
            samples += 1
    return "\n".join(out) + "\n", samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="3 runs")
    p.add_argument("--json", type=Path, help="append the rows as JSON lines to this file")
    args = p.parse_args()
    if args.quick and "--runs" not in sys.argv:
        args.runs = 3

    from prometheus_client.parser import text_string_to_metric_families

    from mlwatch.config import parse_config
    from mlwatch.sources.http import ScrapeTarget
    from mlwatch.storage.database import make_engine, upgrade
    from mlwatch.storage.writer import WriteBatch, Writer

    body, n_samples = make_body(args.lines)
    data = body.encode()
    with tempfile.TemporaryDirectory(prefix="mlwatch-bench-scrape-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'scrape.db'}"
        upgrade(make_engine(url))
        writer = Writer(make_engine(url), out_of_order_window_ms=10**12)
        writer.start()
        cfg = parse_config("sources: [{name: bench, type: http, targets: ['127.0.0.1:1']}]").sources[0]
        target = ScrapeTarget(cfg, "http://127.0.0.1:1/metrics", "127.0.0.1:1", lambda: None)  # type: ignore[arg-type,return-value]

        async def ours_once(ts: int) -> tuple[float, int]:
            started = time.perf_counter()
            families = await target._parse(data, "text/plain; version=0.0.4")
            col = target._build(families, ts)
            result = await writer.write(WriteBatch(samples=col.samples, meta=col.meta))
            col.commit()
            return time.perf_counter() - started, result.appended

        def peer_once() -> tuple[float, int]:
            started = time.perf_counter()
            count = sum(len(fam.samples) for fam in text_string_to_metric_families(body))
            return time.perf_counter() - started, count

        ours: list[float] = []
        peer: list[float] = []
        ratios: list[float] = []
        for i in range(args.runs + 1):  # the first run is the warm-up (it also creates the series)
            t_ours, stored = asyncio.run(ours_once(1_700_000_000_000 + i * 15_000))
            t_peer, parsed = peer_once()
            if stored != n_samples or parsed != n_samples:
                print(f"wrong counts: stored {stored}, prometheus_client parsed {parsed}, expected {n_samples}",
                      file=sys.stderr)  # fmt: skip
                return 1
            if i:
                ours.append(n_samples / t_ours)
                peer.append(n_samples / t_peer)
                ratios.append(t_peer / t_ours)
        writer.stop()
    emit([row(f"B4 scrape parse+store samples/s, {n_samples:,}-sample body", ours, peer, unit="samples/s",
              peer_name="prometheus_client text parser (parse only)", ratios=ratios, target=">= 10x",
              ok=statistics.median(ratios) >= 10, note="sample counts checked on both sides")], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
