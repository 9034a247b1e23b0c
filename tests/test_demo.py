"""`mlwatch demo` shows every part working: data flows, accuracy drops, alerts fire and resolve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port, wait_http


def _alerts(db: Path, *extra: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "mlwatch.cli", "alerts", "-o", "json", "--db", f"sqlite:///{db}", *extra],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_demo_fires_and_resolves_accuracy_alerts(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mlwatch.cli", "demo", "--speed", "10", "--dir", str(work),
                                 "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
        db = work / "mlwatch.db"
        assert f"mlwatch tui --db sqlite:///{db}" in log.read_text()
        firing: set[str] = set()
        deadline = time.monotonic() + 60
        while "AccuracyLow" not in firing and time.monotonic() < deadline:
            firing = {a["labels"]["alertname"] for a in _alerts(db) if a["state"] == "firing"}  # type: ignore[index]
            time.sleep(1)
        assert "AccuracyLow" in firing, log.read_text()[-2000:]
        resolved: set[str] = set()
        deadline = time.monotonic() + 60
        while "AccuracyLow" not in resolved and time.monotonic() < deadline:
            resolved = {a["labels"]["alertname"] for a in _alerts(db, "--history")  # type: ignore[index]
                        if a["state"] == "resolved"}
            time.sleep(1)
        assert "AccuracyLow" in resolved
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
