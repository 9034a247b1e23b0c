"""Helpers for the storage tests: fresh migrated databases, bit patterns, series keys, a fake clock."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from mlwatch.model import SeriesKey
from mlwatch.storage.database import make_engine, upgrade

_Q = struct.Struct("<q")
_D = struct.Struct("<d")


def bits(value: float) -> int:
    return _Q.unpack(_D.pack(value))[0]


def from_bits(b: int) -> float:
    return _D.unpack(_Q.pack(b))[0]


def key(i: int, name: str = "m") -> SeriesKey:
    return SeriesKey.of(name, {"i": str(i)})


_TEMPLATE: dict[str, bytes] = {}


def _template() -> bytes:
    """The bytes of a freshly migrated database, made once per process (migrating takes ~0.1 s)."""
    if "db" not in _TEMPLATE:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "template.db"
            eng = make_engine(f"sqlite:///{path}")
            upgrade(eng)
            eng.dispose()
            _TEMPLATE["db"] = path.read_bytes()
    return _TEMPLATE["db"]


@contextmanager
def fresh_db() -> Iterator[tuple[str, Engine]]:
    """A migrated database in its own temporary directory (hypothesis examples cannot use tmp_path)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db.sqlite"
        path.write_bytes(_template())
        url = f"sqlite:///{path}"
        eng = make_engine(url)
        try:
            yield url, eng
        finally:
            eng.dispose()


def integrity_ok(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
