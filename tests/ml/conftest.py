"""Fixtures for ML tests: the source tests' fake clock and real writer/reader over a migrated temp SQLite."""

from __future__ import annotations

from tests.sources.conftest import FakeClock, clock, reader, store_url, stored, writer

__all__ = ["FakeClock", "clock", "reader", "store_url", "stored", "writer"]
