"""Whatever goes in comes out, bit-exact: across compaction, restarts, out-of-order and duplicate
timestamps, backfill and retention, checked against a plain dict model after every step."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch.model import STALE_NAN, STALE_NAN_BITS, Matcher, Sample
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer
from tests.storage._util import FakeClock, fresh_db, from_bits, integrity_ok, key

WINDOW = 1000
N_SERIES = 3

value_bits = st.one_of(
    st.sampled_from([STALE_NAN_BITS, 0x7FF8000000000000, -(2**63), 0]),
    st.integers(-(10**6), 10**6).map(lambda m: int(np.float64(m / 1000).view(np.int64))),
    st.floats(allow_nan=True).map(lambda v: int(np.float64(v).view(np.int64))),
)
sample = st.tuples(st.integers(0, N_SERIES - 1), st.integers(0, 6000), value_bits)
op = st.one_of(
    st.tuples(st.just("write"), st.lists(sample, max_size=40), st.booleans()),
    st.tuples(st.just("run"), st.integers(0, N_SERIES - 1), st.integers(0, 6000), st.integers(1, 700)),
    st.just(("compact",)),
    st.just(("restart",)),
    st.tuples(st.just("retention"), st.integers(0, 6000)),
)


class Model:
    def __init__(self) -> None:
        self.data: list[dict[int, int]] = [{} for _ in range(N_SERIES)]
        self.last: list[int | None] = [None] * N_SERIES

    def write(self, samples: list[tuple[int, int, int]], backfill: bool) -> tuple[int, int]:
        ok = bad = 0
        for i, ts, b in samples:
            last = self.last[i]
            if not backfill and last is not None and ts < last - WINDOW:
                bad += 1
                continue
            self.data[i][ts] = b
            self.last[i] = ts if last is None else max(last, ts)
            ok += 1
        return ok, bad

    def restarted(self) -> None:
        self.last = [max(d) if d else None for d in self.data]


def check(reader: Reader, model: Model) -> None:
    for i in range(N_SERIES):
        found = reader.series([Matcher.make("__name__", "=", "m"), Matcher.make("i", "=", str(i))])
        if not model.data[i]:
            if found:
                ts, _ = reader.read_range(found[0].id, -(2**62), 2**62)
                assert len(ts) == 0
            continue
        ts, vals = reader.read_range(found[0].id, -(2**62), 2**62)
        want = sorted(model.data[i].items())
        assert ts.tolist() == [t for t, _ in want]
        assert vals.view(np.int64).tolist() == [b for _, b in want]
        # a sub-range is the same slice
        lo, hi = want[len(want) // 3][0], want[2 * len(want) // 3][0]
        ts2, vals2 = reader.read_range(found[0].id, lo, hi)
        assert ts2.tolist() == [t for t, _ in want if lo <= t <= hi]
        assert vals2.view(np.int64).tolist() == [b for t, b in want if lo <= t <= hi]
    assert reader.count_samples() == sum(len(d) for d in model.data)
    ids = [info.id for info in reader.series([Matcher.make("__name__", "=", "m")])]
    for sid, (ts, vals) in reader.read_many(ids, -(2**62), 2**62).items():
        one_ts, one_vals = reader.read_range(sid, -(2**62), 2**62)
        assert ts.tolist() == one_ts.tolist() and vals.view(np.int64).tolist() == one_vals.view(np.int64).tolist()


@pytest.mark.usefixtures("small_chunks")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, min_size=1, max_size=12), st.integers(5, 200), st.sampled_from([0, 10**9]))
def test_roundtrip(ops: list[tuple[object, ...]], threshold: int, carry_limit: int) -> None:
    model = Model()
    with fresh_db() as (_, engine):
        clock = FakeClock()

        def new_writer() -> Writer:
            w = Writer(
                engine, out_of_order_window_ms=WINDOW, clock=clock, compact_threshold=threshold,
                carry_limit=carry_limit,
            )
            w.start()
            return w

        writer = new_writer()
        reader = Reader(engine)
        try:
            for o in ops:
                if o[0] == "write":
                    samples, backfill = o[1], o[2]
                    assert isinstance(samples, list) and isinstance(backfill, bool)
                    batch = WriteBatch([Sample(key(i), ts, from_bits(b)) for i, ts, b in samples], backfill=backfill)
                    res = writer.write_sync(batch, 30)
                    assert (res.appended, res.out_of_order) == model.write(samples, backfill)
                elif o[0] == "run":  # an in-order run, long enough to span chunks
                    i, start, n = o[1], o[2], o[3]
                    assert isinstance(i, int) and isinstance(start, int) and isinstance(n, int)
                    vals = np.round(np.cumsum(np.random.default_rng(n).normal(0, 1, n)), 3)
                    run = [(i, start + 10 * k, int(np.float64(vals[k]).view(np.int64))) for k in range(n)]
                    batch = WriteBatch([Sample(key(i), ts, from_bits(b)) for i, ts, b in run], backfill=True)
                    res = writer.write_sync(batch, 30)
                    assert (res.appended, res.out_of_order) == model.write(run, True)
                elif o[0] == "compact":
                    writer.compact().result(30)
                    assert writer.stats.head_samples == 0
                elif o[0] == "restart":
                    writer.stop()
                    writer = new_writer()
                    model.restarted()
                elif o[0] == "retention":
                    cutoff = o[1]
                    assert isinstance(cutoff, int)
                    writer.delete_before(cutoff).result(30)
                    for i in range(N_SERIES):
                        found = reader.series([Matcher.make("i", "=", str(i))])
                        if not found:
                            continue
                        ts, vals = reader.read_range(found[0].id, -(2**62), 2**62)
                        got = dict(zip(ts.tolist(), vals.view(np.int64).tolist(), strict=True))
                        assert all(got.get(t) == b for t, b in model.data[i].items() if t >= cutoff)
                        assert all(model.data[i].get(t) == b for t, b in got.items())
                        model.data[i] = got
                check(reader, model)
        finally:
            writer.stop()
        integrity_ok(engine)


def test_staleness_marker_and_latest(engine, clock) -> None:  # type: ignore[no-untyped-def]
    w = Writer(engine, clock=clock)
    w.start()
    try:
        w.write_sync(WriteBatch([Sample(key(0), 1000, 1.5), Sample(key(1), 1000, 2.5)]))
        w.write_sync(WriteBatch([Sample(key(0), 2000, STALE_NAN)]))
        w.compact().result()
        w.write_sync(WriteBatch([Sample(key(1), 3000, 3.5)]))
        r = Reader(engine)
        (sid0,) = r.series([Matcher.make("i", "=", "0")])
        _, vals = r.read_range(sid0.id, 0, 10_000)
        assert vals.view(np.int64).tolist()[-1] == STALE_NAN_BITS
        latest = {s.series.key: (s.ts, s.value) for s in r.latest([Matcher.make("__name__", "=", "m")], 2500, 5000)}
        assert latest == {key(1): (1000, 2.5)}  # key(0) is stale
        latest = {s.series.key: (s.ts, s.value) for s in r.latest([Matcher.make("__name__", "=", "m")], 9000, 7000)}
        assert latest == {key(1): (3000, 3.5)}
        latest = {s.series.key: (s.ts, s.value) for s in r.latest([Matcher.make("__name__", "=", "m")], 1500, 5000)}
        assert latest == {key(0): (1000, 1.5), key(1): (1000, 2.5)}
    finally:
        w.stop()


def test_state_commits_with_samples_and_survives_compaction(engine, clock) -> None:  # type: ignore[no-untyped-def]
    w = Writer(engine, clock=clock, compact_threshold=1)
    w.start()
    try:
        w.write_sync(WriteBatch([Sample(key(0), 1000, 1.0)], state={"src:offset": b"42"}))
        w.compact().result()
        assert Reader(engine).state("src:offset") == b"42"
    finally:
        w.stop()


def test_readers_never_miss_samples_while_compaction_runs(engine, clock) -> None:  # type: ignore[no-untyped-def]
    """Chunks and log are read from one snapshot: a compaction between them cannot hide samples."""
    w = Writer(engine, clock=clock, compact_threshold=200)
    w.start()
    reader = Reader(engine)
    seen: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                found = reader.series([Matcher.make("i", "=", "0")])
                if found:
                    seen.append(len(reader.read_range(found[0].id, 0, 2**62)[0]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    try:
        for k in range(300):
            w.write_sync(WriteBatch([Sample(key(i), 1000 * k, float(k)) for i in range(5)]))
    finally:
        stop.set()
        t.join()
        w.stop()
    assert not errors
    assert seen == sorted(seen)  # never goes back
    assert w.stats.compactions > 0
    found = reader.series([Matcher.make("i", "=", "0")])
    assert len(reader.read_range(found[0].id, 0, 2**62)[0]) == 300
