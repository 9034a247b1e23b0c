"""Reader.read_many reads many series at once (one chunk statement, one vectorised log lookup): each
series' samples must be exactly those a plain model holds in the range, whatever mix of chunks, log
parts, overlaps, missing series and range edges."""

from __future__ import annotations

import numpy as np
import pytest

from mlwatch.model import Matcher, Sample
from mlwatch.storage.head import LogIndex, LogRecord
from mlwatch.storage.reader import Reader, _log_ranges
from mlwatch.storage.writer import WriteBatch, Writer
from tests.storage._util import FakeClock, fresh_db, key


def test_log_lookup_for_many_series_matches_one_by_one() -> None:
    rng = np.random.default_rng(1)
    index = LogIndex()
    for rid in range(1, 15):  # several parts, folded once
        n = int(rng.integers(1, 300))
        sids = rng.integers(1, 40, n).astype(np.int32)
        ts = rng.integers(0, 5000, n).astype(np.int64)
        index.add([LogRecord(rid, sids, ts, rng.integers(-(2**40), 2**40, n).astype(np.int64))])
        view = index.view()
        for _ in range(5):
            ids = np.unique(rng.integers(0, 45, int(rng.integers(1, 45))).astype(np.int64))  # some never written
            lo = int(rng.integers(-100, 5000))
            hi = lo + int(rng.integers(0, 3000))
            got = _log_ranges(view, ids, lo, hi)
            for sid in ids.tolist():
                ts_all, bits_all = view.series(sid)
                keep = (ts_all >= lo) & (ts_all <= hi)
                if not keep.any():
                    assert sid not in got
                    continue
                assert got[sid][0].tolist() == ts_all[keep].tolist()
                assert got[sid][1].tolist() == bits_all[keep].tolist()


@pytest.mark.usefixtures("small_chunks")
def test_read_many_over_chunks_and_log_matches_a_model() -> None:
    rng = np.random.default_rng(2)
    model: list[dict[int, float]] = [{} for _ in range(12)]
    with fresh_db() as (_, engine):
        writer = Writer(engine, out_of_order_window_ms=10**9, clock=FakeClock(), compact_threshold=10**9)
        writer.start()
        reader = Reader(engine)
        try:
            for round_ in range(4):
                samples = []
                for i in range(10):  # series 10 and 11 are never written
                    start = int(rng.integers(0, 3000))
                    for k in range(int(rng.integers(0, 400))):
                        t, v = start + 7 * k, float(np.round(rng.normal(0, 100), 3))
                        samples.append(Sample(key(i), t, v))
                        model[i][t] = v
                writer.write_sync(WriteBatch(samples, backfill=True), 30)
                if round_ % 2 == 0:  # some rounds stay in the log, over chunks of earlier rounds
                    writer.compact().result(30)
                infos = {int(dict(s.key.labels)["i"]): s.id for s in reader.series([Matcher.make("__name__", "=", "m")])}
                ids = [*infos.values(), 10_000]  # and an id no series has
                for lo, hi in ((-(2**62), 2**62), (500, 1800), (2999, 3000), (10**6, 10**7)):
                    got = reader.read_many(ids, lo, hi)
                    assert len(got[10_000][0]) == 0
                    for i, sid in infos.items():
                        want = sorted((t, v) for t, v in model[i].items() if lo <= t <= hi)
                        ts, vals = got[sid]
                        assert ts.tolist() == [t for t, _ in want]
                        assert vals.tolist() == [v for _, v in want]
                        one_ts, one_vals = reader.read_range(sid, lo, hi)
                        assert one_ts.tolist() == ts.tolist() and one_vals.tolist() == vals.tolist()
        finally:
            writer.stop()
            reader.close()
