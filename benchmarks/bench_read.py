"""Range read of one series' 40k points into numpy: chunks (+ log) vs a row-per-sample table.

Ours: 40k points (15 s apart, 3-decimal random walk) written through the Writer, compacted, then
``Reader.read_range`` over the whole range (a fresh connection and read transaction per read, as
every read does). The peer, in the same run: the same points in a row-per-sample table
(PRIMARY KEY (series_id, ts) WITHOUT ROWID, values as IEEE-754 bits), SELECT ... ORDER BY ts into
numpy. Each run takes the median of 50 reads; the target is an absolute one (<= 5 ms).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, median, parser, row

from mlwatch.model import Matcher, Sample, SeriesKey
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer

POINTS = 40_000
READS = 50
T0 = 1_700_000_000_000


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    rng = np.random.default_rng(5)
    ts = T0 + 15_000 * np.arange(POINTS)
    vals = np.round(100 + np.cumsum(rng.normal(0, 1, POINTS)), 3)
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'ours.db'}"
        eng = make_engine(url)
        upgrade(eng)
        w = Writer(eng)
        w.start()
        others = [SeriesKey.of("other", {"i": str(i)}) for i in range(99)]  # the table holds other series too
        key = SeriesKey.of("target")
        for lo in range(0, POINTS, 1000):
            batch = [Sample(key, int(t), float(v)) for t, v in zip(ts[lo : lo + 1000], vals[lo : lo + 1000], strict=True)]
            batch += [Sample(k, int(t), 1.0) for k in others for t in ts[lo : lo + 1000 : 10]]
            w.write_sync(WriteBatch(batch))
        w.compact().result()
        w.stop()
        reader = Reader(eng)
        (info,) = reader.series([Matcher.make("__name__", "=", "target")])

        raw = sqlite3.connect(Path(d) / "rows.db")
        raw.execute("PRAGMA page_size = 8192")
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("CREATE TABLE samples (series_id INTEGER, ts INTEGER, value INTEGER, PRIMARY KEY (series_id, ts)) WITHOUT ROWID")
        raw.executemany("INSERT INTO samples VALUES (?, ?, ?)",
                        [(i, int(t), 0) for i in range(1, 100) for t in ts[::10]])
        raw.executemany("INSERT INTO samples VALUES (?, ?, ?)",
                        zip([0] * POINTS, ts.tolist(), vals.view(np.int64).tolist(), strict=True))
        raw.commit()
        raw.close()

        def ours_once() -> tuple[np.ndarray, np.ndarray]:
            return reader.read_range(info.id, T0, T0 + 15_000 * POINTS)

        def peer_once() -> tuple[np.ndarray, np.ndarray]:
            c = sqlite3.connect(Path(d) / "rows.db")
            rows = c.execute("SELECT ts, value FROM samples WHERE series_id = 0 AND ts >= ? AND ts <= ? ORDER BY ts",
                             (T0, T0 + 15_000 * POINTS)).fetchall()
            c.close()
            a = np.array(rows, np.int64)
            return a[:, 0].copy(), a[:, 1].copy().view(np.float64)

        for fn in (ours_once, peer_once):  # check before timing: the same points, bit-exact
            got_t, got_v = fn()
            if got_t.tolist() != ts.tolist() or got_v.view(np.int64).tolist() != vals.view(np.int64).tolist():
                raise SystemExit(f"check failed: {fn.__name__} did not read back the {POINTS} points bit-exact")

        def per_run(fn: object) -> float:
            times = []
            for _ in range(READS):
                t = time.perf_counter()
                fn()  # type: ignore[operator]
                times.append(time.perf_counter() - t)
            return median(times) * 1000

        per_run(ours_once), per_run(peer_once)  # warm-up
        ours, peer = [], []
        for _ in range(args.runs):
            ours.append(per_run(ours_once))
            peer.append(per_run(peer_once))
        eng.dispose()
    emit([row("B6 range read, 1 series x 40k points into numpy (ms)", ours, peer, unit="ms",
              peer_name="row per sample, PK(series,ts) WITHOUT ROWID", better="lower", target="<= 5 ms",
              ok=median(ours) <= 5)], args.json)


if __name__ == "__main__":
    main()
