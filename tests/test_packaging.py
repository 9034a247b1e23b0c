"""Migrations ship inside the wheel under the package and run from there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_migrations_under_the_package(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("mlwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mlwatch/migrations/env.py" in names
    assert "mlwatch/migrations/script.py.mako" in names
    assert "mlwatch/migrations/versions/0001_initial.py" in names
    assert not any(n.startswith("migrations/") for n in names)
    assert "mlwatch/py.typed" in names


def test_db_upgrade_and_current_cli(tmp_path: Path) -> None:
    db = tmp_path / "x.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlwatch.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)

    up = run("db", "upgrade", "--db", f"sqlite:///{db}")
    assert up.returncode == 0, up.stderr
    cur = run("db", "current", "--db", f"sqlite:///{db}")
    assert cur.returncode == 0 and "up to date" in cur.stdout
    import sqlite3

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA page_size").fetchone() == (8192,)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    missing = run("db", "current", "--db", f"sqlite:///{tmp_path / 'nope.db'}")
    assert missing.returncode == 1 and missing.stderr.startswith("mlwatch: error: database")
    assert "Traceback" not in missing.stderr


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "mlwatch.cli", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("mlwatch ")
