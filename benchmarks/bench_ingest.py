"""B1: sustained storage ingest through the Writer vs raw sqlite3.executemany into a plain table.

1000 series interleaved (each batch is one "scrape": one sample of every series), submitted
concurrently so the writer group-commits; the clock stops only after the final compaction has put
every sample into chunks and trimmed the log, so compaction is counted. The peer, in the same run
and with the same pragmas (WAL, synchronous=FULL), inserts the same rows into a plain table
(series_id, ts, value) with executemany, 100k rows per transaction.
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, median, parser, row

from mlwatch.model import Sample, SeriesKey
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer, WriteResult

SERIES = 1000
T0 = 1_700_000_000_000


def make_batches(n_scrapes: int) -> list[WriteBatch]:
    rng = np.random.default_rng(1)
    keys = [SeriesKey.of("bench_metric", {"instance": f"host{i % 50}", "id": str(i)}) for i in range(SERIES)]
    walk = np.round(np.cumsum(rng.normal(0, 1, (n_scrapes, SERIES)), axis=0), 3)
    return [
        WriteBatch([Sample(k, T0 + 15_000 * s, v) for k, v in zip(keys, walk[s].tolist(), strict=True)])
        for s in range(n_scrapes)
    ]


def run_ours(
    batches: list[WriteBatch], tmp: Path, threshold: int, in_flight: int = 0
) -> tuple[float, dict[str, float]]:
    """Samples/s; ``in_flight``: at most this many batches waiting (0: all submitted at once)."""
    url = f"sqlite:///{tmp / 'ours.db'}"
    eng = make_engine(url)
    upgrade(eng)
    w = Writer(eng, compact_threshold=threshold)
    w.start()
    waits: list[float] = []
    t = time.perf_counter()
    if in_flight:
        window: collections.deque[Future[WriteResult]] = collections.deque()
        for b in batches:
            if len(window) >= in_flight:
                window.popleft().result()
            sent = time.perf_counter()
            fut = w.submit(b)
            fut.add_done_callback(lambda _f, sent=sent: waits.append(time.perf_counter() - sent))
            window.append(fut)
        for f in window:
            f.result()
    else:
        for f in [w.submit(b) for b in batches]:
            f.result()
    w.compact().result()
    elapsed = time.perf_counter() - t
    stats = w.stats
    w.stop()
    n = sum(len(b.samples) for b in batches)
    counted = Reader(eng).count_samples()
    # every sample stored, and all of them put into chunks within the timed span (compaction counted)
    if counted != n or stats.head_samples or stats.compacted_samples < n or not stats.compactions:
        raise SystemExit(f"check failed: {counted} of {n} samples stored, {stats.head_samples} left in the log, "
                         f"{stats.compacted_samples} compacted in {stats.compactions} compactions")
    eng.dispose()
    p99 = float(np.percentile(waits, 99)) * 1000 if waits else 0.0
    return n / elapsed, {"compactions": stats.compactions, "commits": stats.commits,
                         "compaction_share": stats.compaction_seconds / elapsed, "p99_ms": p99}


def run_raw(batches: list[WriteBatch], tmp: Path, rows: list[tuple[int, int, float]]) -> float:
    conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA page_size = 8192")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE samples (series_id INTEGER, ts INTEGER, value REAL)")
    t = time.perf_counter()
    for i in range(0, len(rows), 100_000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows[i : i + 100_000])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    (count,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
    conn.close()
    if count != len(rows):
        raise SystemExit(f"check failed: raw table has {count} of {len(rows)} rows")
    return len(rows) / elapsed


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n_scrapes = 600 if args.quick else 3000
    batches = make_batches(n_scrapes)
    rows = [(i, s.ts, s.value) for b in batches for i, s in enumerate(b.samples)]
    threshold = 100_000 if args.quick else 1_000_000
    out = []
    for label, in_flight in (("all batches queued", 0), ("16 producers, each awaiting its commit", 16)):
        ours, raw, ratios, extra = [], [], [], []
        for run in range(args.runs + 1):  # the first is the warm-up
            with tempfile.TemporaryDirectory() as d:
                o, info = run_ours(batches, Path(d), threshold, in_flight)
                r = run_raw(batches, Path(d), rows)
            if run:
                ours.append(o)
                raw.append(r)
                ratios.append(o / r)
                extra.append(info)
        note = (f"{len(rows):,} samples/run; {median([e['compactions'] for e in extra]):.0f} compactions/run, "
                f"compaction {100 * median([e['compaction_share'] for e in extra]):.0f}% of the time, "
                f"{median([e['commits'] for e in extra]):.0f} commits"
                + (f", p99 wait for a commit {median([e['p99_ms'] for e in extra]):.0f} ms" if in_flight else ""))
        out.append(row(f"B1 ingest, 1000 series, {label} (samples/s)", ours, raw, unit="samples/s",
                       peer_name="raw sqlite3.executemany, plain table", note=note, ratios=ratios,
                       target=">= 0.5x", ok=median(ratios) >= 0.5))
    emit(out, args.json)


if __name__ == "__main__":
    main()
