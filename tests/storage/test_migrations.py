"""Migration 0002 (chunked storage) goes up from 0001 and back down, and matches schema.py."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mlwatch.storage.database import _alembic_config, current_revision, head_revision, make_engine, upgrade
from mlwatch.storage.schema import metadata


def test_up_down_up(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(eng, "0001")
    assert current_revision(eng) == "0001"
    upgrade(eng)
    assert current_revision(eng) == head_revision()
    cfg = _alembic_config()
    with eng.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        conn.commit()
    assert current_revision(eng) == "0001"
    with eng.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "samples" in tables and "chunks" not in tables
    upgrade(eng)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 8192
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one() == 2  # incremental
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    eng.dispose()
