"""Retention (with per-series overrides), the size cap, rollups, incremental vacuum and backup."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from mlwatch.model import STALE_NAN, Matcher, Sample, SeriesKey
from mlwatch.storage.backup import backup
from mlwatch.storage.database import make_engine, sqlite_path
from mlwatch.storage.reader import Reader
from mlwatch.storage.retention import RetentionPolicy
from mlwatch.storage.writer import WriteBatch, Writer
from tests.storage._util import FakeClock, integrity_ok

DAY = 86400_000
T0 = 1_700_000_000_000


def _fill(w: Writer, keys: list[SeriesKey], start: int, end: int, step: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for t0 in range(start, end, step * 500):
        samples = [
            Sample(k, t, round(float(v), 3))
            for t in range(t0, min(end, t0 + step * 500), step)
            for k, v in zip(keys, rng.normal(0, 10, len(keys)), strict=True)
        ]
        w.write_sync(WriteBatch(samples, backfill=True))
    w.compact().result()


def _oldest(r: Reader, m: str) -> int:
    (info,) = r.series([Matcher.make("__name__", "=", m)])
    ts, _ = r.read_range(info.id, 0, 2**62)
    return int(ts[0])


def test_retention_with_overrides(engine: Engine, clock: FakeClock) -> None:
    clock.t = (T0 + 10 * DAY) / 1000
    w = Writer(engine, clock=clock)
    w.start()
    try:
        keys = [SeriesKey.of("keep_me"), SeriesKey.of("debug_x"), SeriesKey.of("long_y")]
        _fill(w, keys, T0, T0 + 10 * DAY, 60_000)
        policy = RetentionPolicy(
            retention_ms=5 * DAY,
            overrides=[([Matcher.make("__name__", "=~", "debug_.*")], 2 * DAY), ([Matcher.make("__name__", "=", "long_y")], 30 * DAY)],
        )
        report = w.maintain(policy).result()
        assert report.deleted_chunks > 0
        r = Reader(engine)
        now = T0 + 10 * DAY
        # whole chunks go: what is left starts at most one chunk (<= 1 day + a block) before the cutoff
        assert now - 5 * DAY - DAY * 1.1 < _oldest(r, "keep_me") <= now - 5 * DAY
        assert now - 2 * DAY - DAY * 1.1 < _oldest(r, "debug_x") <= now - 2 * DAY
        assert _oldest(r, "long_y") == T0
    finally:
        w.stop()
    integrity_ok(engine)


def test_size_cap_drops_oldest_and_file_stops_growing(engine: Engine, clock: FakeClock) -> None:
    path = sqlite_path(str(engine.url))
    assert path is not None
    keys = [SeriesKey.of("m", {"i": str(i)}) for i in range(20)]
    w = Writer(engine, clock=clock)
    w.start()
    sizes = []
    dropped = 0
    try:
        # The schema's own pages (every table and index, whoever adds them) are outside the data budget.
        with engine.connect() as conn:
            base = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one()) * int(
                conn.exec_driver_sql("PRAGMA page_size").scalar_one())
        cap = 220_000 + base
        for day in range(6):
            start = T0 + day * DAY // 4
            _fill(w, keys, start, start + DAY // 4, 15_000, seed=day)
            report = w.maintain(RetentionPolicy(retention_ms=365 * DAY, max_size_bytes=cap)).result()
            assert report.size_bytes <= cap
            dropped += report.deleted_for_size
            sizes.append(os.path.getsize(path))
        assert dropped > 0
        # steady state: the file no longer grows past the cap
        assert max(sizes) <= cap * 1.1
        r = Reader(engine)
        (info,) = r.series([Matcher.make("i", "=", "0")])
        ts, _ = r.read_range(info.id, 0, 2**62)
        assert ts[-1] == T0 + 5 * DAY // 4 + DAY // 4 - 15_000  # the newest data stays
        assert ts[0] > T0  # the oldest went
    finally:
        w.stop()
    integrity_ok(engine)


def test_rollups_min_max_sum_count_last(engine: Engine, clock: FakeClock) -> None:
    clock.t = (T0 + 30 * DAY) / 1000
    w = Writer(engine, clock=clock)
    w.start()
    try:
        k = SeriesKey.of("g")
        rng = np.random.default_rng(3)
        ts = np.arange(T0, T0 + 3 * DAY, 15_000)
        vals = np.round(rng.normal(0, 5, len(ts)), 3)
        samples = [Sample(k, int(t), float(v)) for t, v in zip(ts, vals, strict=True)]
        samples.append(Sample(k, int(ts[-1]) + 15_000, STALE_NAN))  # not a value: skipped by rollups
        w.write_sync(WriteBatch(samples, backfill=True))
        report = w.maintain(RetentionPolicy(retention_ms=365 * DAY, downsample=[(2 * DAY, 300_000)])).result()
        assert report.rollup_rows > 0
        again = w.maintain(RetentionPolicy(retention_ms=365 * DAY, downsample=[(2 * DAY, 300_000)])).result()
        assert again.rollup_rows == 0  # idempotent
        r = Reader(engine)
        (info,) = r.series([Matcher.make("__name__", "=", "g")])
        bts, cols = r.read_rollup(info.id, 300_000, 0, 2**62)
        assert len(bts) > 0
        for j in (0, len(bts) // 2, len(bts) - 1):
            sel = (ts >= bts[j]) & (ts < bts[j] + 300_000)
            assert cols["min"][j] == vals[sel].min() and cols["max"][j] == vals[sel].max()
            assert cols["count"][j] == sel.sum() and cols["last"][j] == vals[sel][-1]
            assert cols["sum"][j] == pytest.approx(vals[sel].sum(), rel=1e-12)
    finally:
        w.stop()


def test_backup_of_a_live_database(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    w = Writer(engine, clock=clock, compact_threshold=500)
    w.start()
    stop = threading.Event()

    def keep_writing() -> None:
        k = 0
        while not stop.is_set():
            w.write_sync(WriteBatch([Sample(SeriesKey.of("m", {"i": str(i)}), k * 1000, k) for i in range(10)]))
            k += 1

    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        while w.stats.compactions < 2:
            stop.wait(0.01)
        dest = backup(engine, tmp_path / "copy.db")
    finally:
        stop.set()
        t.join()
        w.stop()
    copy = make_engine(f"sqlite:///{dest}", readonly=True)
    integrity_ok(copy)
    r = Reader(copy)
    counts = {len(r.read_range(s.id, 0, 2**62)[0]) for s in r.series([Matcher.make("__name__", "=", "m")])}
    assert len(counts) == 1 and counts.pop() > 0  # one consistent snapshot: every series equally long
    assert not (tmp_path / "copy.db.partial").exists()
    copy.dispose()
