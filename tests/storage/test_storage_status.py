"""Storage faults as the writer reports them: the reason, the read-only file, /metrics and the log."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mlwatch.errors import StorageError, StorageUnavailable
from mlwatch.model import Sample, SeriesKey
from mlwatch.selfmetrics import OwnMetrics
from mlwatch.storage.database import StorageStatus, fault_reason, translate
from mlwatch.storage.writer import WriteBatch, Writer


@pytest.mark.parametrize(("message", "reason"), [
    ("cannot write to the database: database is locked", "locked"),
    ("cannot write to the database: attempt to write a readonly database", "readonly"),
    ("cannot write to the database: disk I/O error (/x/m.db is not writable: a read-only ...)", "readonly"),
    ("cannot write to the database: database or disk is full", "full"),
    ("cannot write to the database: disk I/O error", "io"),
    ("cannot write to the database: unable to open database file", "cannot_open"),
])  # fmt: skip
def test_fault_reason(message: str, reason: str) -> None:
    assert fault_reason(message) == reason


def test_status_logs_the_start_and_the_end_of_an_outage_once(caplog: pytest.LogCaptureFixture) -> None:
    status = StorageStatus()
    status.failed(StorageError("a batch-specific error"))  # not an outage
    assert status.writable
    with caplog.at_level(logging.WARNING, logger="mlwatch.storage.database"):
        for _ in range(3):
            status.failed(StorageUnavailable("cannot write to the database: database is locked"))
        assert not status.writable and status.outage_seconds() >= 0
        status.succeeded()
        status.succeeded()
    assert status.writable and status.unavailable == {"locked": 3}
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 2
    assert texts[0].startswith("storage unwritable (locked): cannot write to the database: database is locked")
    assert texts[1].startswith("storage writable again after") and texts[1].endswith("(locked)")


def test_an_io_error_names_the_file_that_cannot_be_written(db_url: str, tmp_path: Path) -> None:
    db = tmp_path / "test.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
    wal = db.with_name(db.name + "-wal")
    out = subprocess.run(["chattr", "+i", str(wal)], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        conn.close()
        pytest.skip(f"cannot make a file immutable here (needs root, and a file system with the flag): {out.stderr}")
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute("INSERT INTO probe VALUES (1)")
        err = translate(info.value, "write to the database", db_url)  # while the file is still immutable
        plain = translate(info.value, "write to the database")
    finally:
        subprocess.run(["chattr", "-i", str(wal)], check=True)
        conn.close()
    assert isinstance(err, StorageUnavailable)
    assert f"{wal} is not writable" in str(err) and fault_reason(str(err)) == "readonly"
    assert str(plain) == "cannot write to the database: disk I/O error"  # without the url: SQLite's text


def test_writer_reports_a_locked_database_on_metrics_and_recovers(engine: Engine, db_url: str) -> None:
    writer = Writer(engine)
    writer.start()
    own = OwnMetrics(writer_stats=lambda: writer.stats, queue_depth=lambda: writer.queue_depth, db_path=None)
    batch = WriteBatch(samples=[Sample(SeriesKey.of("m", {}), 1_000, 1.0)])
    blocker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable, match="database is locked"):
            writer.write_sync(batch, timeout=60)
        text = own.exposition().decode()
        assert "mlwatch_storage_writable 0.0" in text
        assert 'mlwatch_storage_unavailable_total{reason="locked"} 1.0' in text
        blocker.execute("ROLLBACK")
        writer.write_sync(batch, timeout=60)
        text = own.exposition().decode()
        assert "mlwatch_storage_writable 1.0" in text and "mlwatch_storage_unwritable_seconds 0.0" in text
    finally:
        blocker.close()
        writer.stop()
