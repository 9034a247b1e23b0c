"""Fixtures for source tests: a fake clock, a real writer/reader over a migrated temp SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlwatch.model import Matcher, SeriesKey
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer


class FakeClock:
    """A clock tests move by hand (seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'push.db'}"
    upgrade(make_engine(url))
    return url


@pytest.fixture
def writer(store_url: str, clock: FakeClock) -> Iterator[Writer]:
    engine = make_engine(store_url)
    w = Writer(engine, clock=clock)
    w.start()
    yield w
    w.stop()
    engine.dispose()


@pytest.fixture
def reader(store_url: str) -> Iterator[Reader]:
    engine = make_engine(store_url)
    yield Reader(engine)
    engine.dispose()


Stored = Callable[..., list[tuple[int, float]]]


@pytest.fixture
def stored(reader: Reader) -> Stored:
    """``stored(name, **labels)``: every stored (ts, value) of exactly that series, in time order."""

    def read(name: str, **labels: str) -> list[tuple[int, float]]:
        want = SeriesKey.of(name, labels)
        for info in reader.series([Matcher.make("__name__", "=", name)]):
            if info.key == want:
                ts, values = reader.read_range(info.id, 0, 2**62)
                return list(zip(ts.tolist(), values.tolist(), strict=True))
        return []

    return read
