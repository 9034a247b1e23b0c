"""Load for B7 and B9, run as processes of their own so that their CPU is not the measuring process's.

    python benchmarks/_loadtools.py exporter --ports 4001,4002 --series 1000
        Prometheus exporters on 127.0.0.1, one per port, each serving ``--series`` series (half counters,
        half gauges, 10 families) whose values change on every scrape. Prints "ready" when listening.

    python benchmarks/_loadtools.py load --url URL --push-rate 200 --log FILE --log-rate 5000 --seconds 600 --out X.json
        An open-loop load generator: pushes on a fixed schedule (request i is due at t0 + i / rate; its latency
        is measured from that due time, not from when it could be sent, so a slow server cannot hide its
        queueing: no coordinated omission; the service time from the actual start, and how late the
        generator itself started requests, are reported too), each body different; and a JSONL log appended at a fixed rate
        (every 100 ms, the lines then due). Writes the latencies' summary and counts to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

FAMILIES = 10


def exposition(series: int, rng: random.Random, state: list[float]) -> bytes:
    """One target's body: FAMILIES families (even ones counters), ``series`` series in all."""
    per = series // FAMILIES
    out = []
    k = 0
    for f in range(FAMILIES):
        counter = f % 2 == 0
        name = f"bench_c{f}_total" if counter else f"bench_g{f}"
        out.append(f"# HELP {name} Synthetic family {f}.\n# TYPE {name} {'counter' if counter else 'gauge'}\n")
        for i in range(per):
            state[k] = state[k] + rng.random() * 10 if counter else round(rng.gauss(50, 10), 3)
            out.append(f'{name}{{i="{i}",shard="{i % 8}"}} {state[k]:.3f}\n')
            k += 1
    return "".join(out).encode()


async def exporter(ports: list[int], series: int) -> None:
    runners = []
    for port in ports:
        rng = random.Random(port)
        state = [0.0] * series

        async def metrics(_req: web.Request, rng: random.Random = rng, state: list[float] = state) -> web.Response:
            return web.Response(body=exposition(series, rng, state), content_type="text/plain",
                                charset="utf-8", headers={"X-Series": str(series)})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for r in runners:
            await r.cleanup()


MODELS = ("fraud-v1", "fraud-v2", "churn", "ranker")


async def log_writer(path: Path, rate: float, seconds: float, counts: dict[str, int]) -> None:
    rng = random.Random(9)
    t0 = time.monotonic()
    written = 0
    with path.open("a") as f:
        while True:
            now = time.monotonic() - t0
            due = int(min(now, seconds) * rate)
            if due > written:
                lines = []
                for n in range(written, due):
                    lines.append(f'{{"ts": {time.time():.3f}, "model": "{MODELS[n % 4]}", '
                                 f'"latency_ms": {rng.expovariate(1 / 40):.3f}, "pred": {n % 3 == 0:d}, '
                                 f'"label": {n % 5 == 0:d}}}\n')
                f.writelines(lines)
                f.flush()
                written = due
                counts["lines"] = written
            if now >= seconds:
                return
            await asyncio.sleep(0.1)


async def pusher(url: str, rate: float, seconds: float, result: dict[str, object]) -> None:
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)  # from the due time (what a user waiting on schedule sees)
    service = np.full(total, np.nan)  # from the moment the request was actually started
    late = np.full(total, np.nan)  # how late the generator itself started the request
    due_at = np.zeros(total)
    codes: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.monotonic() + 0.2

        async def one(i: int) -> None:
            due = t0 + i / rate
            body = "".join(f'bench_push_value{{model="m{j}"}} {i * 0.5 + j}\n' for j in range(10))
            body += f"bench_push_seq {i}\n"
            started = time.monotonic()
            try:
                async with session.post(f"{url}/metrics/job/load/instance/g{i % 20}", data=body) as resp:
                    await resp.read()
                    key = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                key = type(exc).__name__
            done = time.monotonic()
            latencies[i] = done - due
            service[i] = done - started
            late[i] = started - due
            due_at[i] = due - t0
            codes[key] = codes.get(key, 0) + 1

        tasks = []
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    minutes = []
    for m in range(int(np.ceil(seconds / 60))):
        sel = latencies[(due_at >= 60 * m) & (due_at < 60 * (m + 1))]
        if sel.size:
            minutes.append(float(np.percentile(sel, 99)) * 1000)
    result.update({
        "pushes": total, "codes": codes, "seconds": seconds,
        "p50_ms": float(np.percentile(latencies, 50)) * 1000, "p90_ms": float(np.percentile(latencies, 90)) * 1000,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000, "p999_ms": float(np.percentile(latencies, 99.9)) * 1000,
        "max_ms": float(np.max(latencies)) * 1000, "p99_ms_per_minute": minutes,
        "service_p50_ms": float(np.percentile(service, 50)) * 1000,
        "service_p99_ms": float(np.percentile(service, 99)) * 1000,
        "late_p99_ms": float(np.percentile(late, 99)) * 1000,
    })


async def load(args: argparse.Namespace) -> None:
    result: dict[str, object] = {}
    counts = {"lines": 0}
    await asyncio.gather(pusher(args.url, args.push_rate, args.seconds, result),
                         log_writer(args.log, args.log_rate, args.seconds, counts))
    result["log_lines"] = counts["lines"]
    args.out.write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("exporter")
    e.add_argument("--ports", required=True)
    e.add_argument("--series", type=int, default=1000)
    lo = sub.add_parser("load")
    lo.add_argument("--url", required=True)
    lo.add_argument("--push-rate", type=float, default=200)
    lo.add_argument("--log", type=Path, required=True)
    lo.add_argument("--log-rate", type=float, default=5000)
    lo.add_argument("--seconds", type=float, required=True)
    lo.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        if args.cmd == "exporter":
            asyncio.run(exporter([int(p) for p in args.ports.split(",")], args.series))
        else:
            asyncio.run(load(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
