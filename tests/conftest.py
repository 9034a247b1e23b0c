"""Shared fixtures: a migrated temporary database, a real daemon subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mlwatch.storage.database import make_engine, upgrade
from tests.helpers import DaemonProcess, start_daemon


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'test.db'}"
    upgrade(make_engine(url))
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[object]:
    started: list[DaemonProcess] = []

    def factory(config_text: str = "", **kw: object) -> DaemonProcess:
        d = start_daemon(tmp_path, config_text, **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield factory
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
