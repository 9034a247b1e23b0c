"""Opening the database: engines with the right pragmas, migrations, and the single-daemon lock."""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from mlwatch.errors import DatabaseLocked, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

# sqlite3 error texts that mean "try again later", not "your data is wrong".
_TRANSIENT = ("locked", "readonly", "read-only", "disk is full", "disk i/o", "unable to open", "busy")
# The kind of a storage fault, from the (translated) error text: the `reason` label of
# mlwatch_storage_unavailable_total. First match wins ("read-only" before the I/O error it explains).
_REASONS = (
    ("readonly", ("readonly", "read-only")),
    ("full", ("disk is full",)),
    ("locked", ("locked", "busy")),
    ("io", ("disk i/o",)),
    ("cannot_open", ("unable to open",)),
)


def is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (sqlite3.OperationalError, OperationalError, DBAPIError)) and any(
        t in text for t in _TRANSIENT
    )


def translate(exc: BaseException, action: str, url: object = None) -> StorageError:
    """Map a driver error to StorageUnavailable (transient) or StorageError.

    With the database's ``url``, an I/O error says which of its files cannot be written (a file made
    read-only or immutable, a file system remounted read-only): SQLite reports those as plain
    "disk I/O error" on a connection that is already open.
    """
    detail = str(getattr(exc, "orig", exc)).strip()
    if is_transient(exc):
        if url is not None and "disk i/o" in detail.lower():
            path = sqlite_path(str(url))
            why = unwritable(path) if path is not None else None
            if why:
                detail = f"{detail} ({why})"
        return StorageUnavailable(f"cannot {action}: {detail}")
    return StorageError(f"cannot {action}: {detail}")


def unwritable(db_path: Path) -> str | None:
    """Which of the database file and its WAL cannot be written now (read-only, immutable...), or None.

    Checked with access(2), never by opening the file: closing any descriptor of a SQLite file
    drops the process' POSIX locks on it.
    """
    for p in (db_path, db_path.with_name(db_path.name + "-wal")):
        if p.exists() and not os.access(p, os.W_OK):
            return f"{p} is not writable: a read-only or immutable file, or a read-only file system"
    return None


def fault_reason(message: str) -> str:
    """``locked``, ``readonly``, ``full``, ``io`` or ``cannot_open`` for a StorageUnavailable's message."""
    text = message.lower()
    for reason, needles in _REASONS:
        if any(n in text for n in needles):
            return reason
    return "other"


@dataclass
class StorageStatus:
    """Whether the database takes writes, and since when it does not (the writer updates it).

    Shown on /metrics (``mlwatch_storage_writable``, ``mlwatch_storage_unavailable_total{reason}``);
    the start and the end of an outage are logged once each.
    """

    writable: bool = True
    reason: str = ""  # of the current outage, or of the last one
    message: str = ""
    since: float = 0.0  # time.time() when the current outage began
    unavailable: collections.Counter[str] = field(default_factory=collections.Counter)

    def failed(self, err: BaseException) -> None:
        """A write transaction failed; only StorageUnavailable (transient) makes storage unwritable."""
        if not isinstance(err, StorageUnavailable):
            return
        self.reason = fault_reason(str(err))
        self.message = str(err)
        self.unavailable[self.reason] += 1
        if self.writable:
            self.writable = False
            self.since = time.time()
            log.error(
                "storage unwritable (%s): %s; pushes get 503, log sources pause at their committed offsets, "
                "scrapes wait in memory (limits.scrape_buffer_samples); retrying", self.reason, err,
            )

    def succeeded(self) -> None:
        """A write transaction committed: an outage, if any, is over."""
        if not self.writable:
            self.writable = True
            log.warning("storage writable again after %.1fs unwritable (%s)", time.time() - self.since, self.reason)

    def outage_seconds(self) -> float:
        return 0.0 if self.writable else max(0.0, time.time() - self.since)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other engines and in-memory databases."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    db = u.database
    if db.startswith("file:"):
        db = db[5:].split("?", 1)[0]
    return Path(db)


def _on_connect(readonly: bool, synchronous: str) -> Any:
    def setup(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            cur.execute(f"PRAGMA synchronous = {synchronous}")
        cur.close()

    return setup


def make_engine(url: str, *, readonly: bool = False, synchronous: str = "FULL") -> Engine:
    """An engine for ``url``; read-only engines open SQLite files with ``mode=ro``."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite"):
        raise StorageError(f"unsupported storage url {url!r}: only sqlite:/// is supported today")
    path = sqlite_path(url)
    if readonly and path is not None:
        if not path.exists():
            raise StorageError(f"database {path} does not exist (start `mlwatch daemon` or run `mlwatch db upgrade`)")
        eng = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool,
            connect_args={"check_same_thread": False},
        )
    else:
        if path is not None and path.parent and not path.parent.exists():
            raise StorageError(f"cannot create database {path}: directory {path.parent} does not exist")
        eng = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})
    event.listen(eng, "connect", _on_connect(readonly, synchronous))
    return eng


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("mlwatch.migrations")))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``engine``'s database."""
    cfg = _alembic_config()
    path = sqlite_path(str(engine.url))
    if path is not None and not path.exists():
        # Created 0600 before SQLite opens it (its -wal/-shm copy these permissions): never world-readable.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot create the database {path}: {exc.strerror}") from exc
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    except (OperationalError, DBAPIError, sqlite3.Error) as exc:
        raise translate(exc, "migrate the database") from exc
    if path is not None and path.exists():
        os.chmod(path, 0o600)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


@dataclass
class DaemonLock:
    """An exclusive lock next to the database file; holds the owner's pid and listen address."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, db_path: Path, listen: str) -> DaemonLock:
        lock_path = db_path.with_name(db_path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = read_lock_owner(db_path)
            os.close(fd)
            who = f"pid {owner['pid']}, listening on {owner.get('listen')}" if owner else "another process"
            raise DatabaseLocked(f"another mlwatch daemon ({who}) already uses {db_path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "listen": listen}).encode())
        return cls(lock_path, fd)

    def update(self, listen: str) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "listen": listen}).encode(), 0)

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def read_lock_owner(db_path: Path) -> dict[str, Any] | None:
    """The running daemon that holds ``db_path`` ({pid, listen}), or None when no daemon does."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.pread(fd, 4096, 0)
            try:
                owner = json.loads(data)
            except ValueError:
                return {"pid": None, "listen": None}
            return owner if isinstance(owner, dict) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
