"""Fixtures of the TUI tests: a seeded database (real Writer and alert store), its read side, the app."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlwatch.readside import ReadSide
from mlwatch.tui.app import MlwatchApp
from tests.tui.seed import T0, build


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per test process (each xdist worker has its own)."""
    return build(tmp_path_factory.mktemp("tui") / "seeded.db")


@pytest.fixture
def data(seeded_db: Path) -> Iterator[ReadSide]:
    rs = ReadSide(seeded_db, clock=lambda: T0)
    yield rs
    rs.close()


@pytest.fixture
def writable_data(seeded_db: Path, tmp_path: Path) -> Iterator[ReadSide]:
    """A copy of the seeded database, for the one test that writes (a silence)."""
    copy = tmp_path / "copy.db"
    shutil.copy(seeded_db, copy)
    rs = ReadSide(copy, clock=lambda: T0)
    yield rs
    rs.close()


def make_app(data: ReadSide) -> MlwatchApp:
    return MlwatchApp(data, refresh_s=0, tz=dt.UTC, source="seeded.db")


@pytest.fixture
def app(data: ReadSide) -> MlwatchApp:
    return make_app(data)
