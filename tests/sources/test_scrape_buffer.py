"""The scrape buffer while storage is unavailable: bounded, in order, and every result stored or counted.

A real Writer on a real SQLite file; ``GatedWriter`` only decides when a write may reach it (down:
StorageUnavailable at once, as a locked database gives after its busy timeout; gate closed: the write
waits, as a slow commit does), so the tests can hold results in flight while more arrive.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from mlwatch.config import parse_config
from mlwatch.errors import StorageUnavailable
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer, WriteResult
from tests.sources.conftest import FakeClock, Stored

PER_RESULT = 5  # the command's value and the 4 report series


class GatedWriter:
    def __init__(self, real: Writer) -> None:
        self.real = real
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, batch: WriteBatch) -> WriteResult:
        if self.down:
            raise StorageUnavailable("cannot write to the database: database is locked")
        await self.gate.wait()
        if self.down:
            raise StorageUnavailable("cannot write to the database: database is locked")
        return await self.real.write(batch)


def _manager(w: GatedWriter, reader: Reader, clock: FakeClock, bound: int) -> SourceManager:
    cmd = json.dumps(sys.executable)
    text = f"sources:\n  - {{name: a, type: command, command: [{cmd}, -c, 'print(7)'], metric: a_value}}\n"
    return SourceManager(parse_config(text).sources, w, reader, clock=clock, max_buffered_samples=bound)


def _exposition(m: SourceManager) -> str:
    r = CollectorRegistry()
    r.register(m.collector)
    return generate_latest(r).decode()


async def test_results_being_written_are_never_dropped_nor_counted_twice(
    writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    w = GatedWriter(writer)
    m = _manager(w, reader, clock, bound=2 * PER_RESULT)
    await m.start(None)
    key = next(iter(m._runners))
    w.down = True
    await m.run_once()  # result 1 waits in memory
    w.down = False
    w.gate.clear()  # storage is back, but slow: the flush of results 1 and 2 stays in flight
    clock.advance(15)
    await m.tick(key)
    assert m.buffered_samples == 2 * PER_RESULT
    for _ in range(2):  # results 3 and 4 arrive meanwhile: over the bound, and only they can go
        clock.advance(15)
        await m.tick(key)
    assert m.buffered_samples <= 2 * PER_RESULT
    w.gate.set()
    await m.wait_flushed()
    values = stored("a_value", job="a", instance=Path(sys.executable).name)
    dropped = m.healths()[0].dropped_samples
    assert len(values) == 2 and dropped == 2 * PER_RESULT  # 4 collected: 2 stored, 2 dropped and counted
    assert m.buffered_samples == 0
    assert 'mlwatch_source_dropped_samples_total{job="a"} 10.0' in _exposition(m)
    await m.stop()


async def test_a_failed_flush_keeps_the_order_and_the_bound(
    writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    w = GatedWriter(writer)
    m = _manager(w, reader, clock, bound=3 * PER_RESULT)
    await m.start(None)
    w.down = True
    times = []
    for _ in range(5):  # 5 results, room for 3: the 2 oldest are dropped
        times.append(int(clock() * 1000))
        await m.run_once()
        clock.advance(15)
    assert m.buffered_samples == 3 * PER_RESULT
    assert 'mlwatch_source_buffered_samples 15.0' in _exposition(m)
    assert m.healths()[0].errors_total["storage"] >= 5
    w.down = False
    times.append(int(clock() * 1000))
    await m.run_once()
    got = stored("a_value", job="a", instance=Path(sys.executable).name)
    # The new result queued behind the full buffer (pushing out the oldest), then all were written in order.
    assert [ts for ts, _ in got] == times[3:]
    assert m.healths()[0].dropped_samples == 3 * PER_RESULT  # 6 collected: 3 stored, 3 dropped and counted
    await m.stop()


async def test_results_left_at_stop_are_written_or_counted(
    writer: Writer, reader: Reader, stored: Stored, clock: FakeClock
) -> None:
    w = GatedWriter(writer)
    m = _manager(w, reader, clock, bound=100)
    await m.start(None)
    runner = next(iter(m._runners.values()))
    w.down = True
    await m.run_once()
    clock.advance(15)
    await m.run_once()
    await m.stop()  # storage is still down: both results are dropped, and counted
    assert runner.health.dropped_samples == 2 * PER_RESULT
    assert stored("a_value", job="a", instance=Path(sys.executable).name) == []
