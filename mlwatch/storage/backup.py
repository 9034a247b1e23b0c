"""``mlwatch db backup FILE``: a consistent copy of a live database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from mlwatch.errors import StorageError
from mlwatch.storage.database import sqlite_path, translate


def backup(engine_or_url: Engine | str, dest_path: str | os.PathLike[str]) -> Path:
    """Copy the database to ``dest_path`` with SQLite's online backup API; returns the path.

    The copy is one snapshot (a single read transaction, so the daemon keeps writing meanwhile)
    of every table, the uncompacted log included; it is written to a temporary file, checked with
    ``PRAGMA quick_check`` and renamed into place, so ``dest_path`` is never a half-written file.
    """
    url = str(engine_or_url.url) if isinstance(engine_or_url, Engine) else engine_or_url
    src_path = sqlite_path(url)
    if src_path is None:
        raise StorageError(f"cannot back up {url!r}: only SQLite database files can be backed up")
    if not src_path.exists():
        raise StorageError(f"cannot back up {src_path}: no such database")
    dest = Path(dest_path)
    if dest.resolve() == src_path.resolve():
        raise StorageError("the backup file must differ from the database file")
    if not dest.parent.exists():
        raise StorageError(f"cannot write {dest}: directory {dest.parent} does not exist")
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        try:
            src.execute("PRAGMA busy_timeout = 5000")
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # pages=-1: the whole file in one step, from one snapshot
                (ok,) = dst.execute("PRAGMA quick_check").fetchone()
                if ok != "ok":
                    raise StorageError(f"the backup copy failed its check: {ok}")
                dst.execute("PRAGMA journal_mode = WAL")
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise translate(exc, f"back up the database to {dest}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
