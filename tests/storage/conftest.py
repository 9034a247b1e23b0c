"""Storage fixtures: a fake clock, small chunks."""

from __future__ import annotations

import pytest

from tests.storage._util import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of about one block, so that a few hundred samples span several chunks."""
    monkeypatch.setattr("mlwatch.storage.chunks.CHUNK_BUDGET", 400)
