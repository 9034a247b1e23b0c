"""The daemon as a user runs it: signals, reload, locking, durability, errors, logs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from mlwatch.model import Matcher
from mlwatch.storage.database import make_engine
from mlwatch.storage.reader import Reader
from tests.helpers import DaemonProcess, free_port, start_daemon


def mlwatch(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlwatch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def push(d: DaemonProcess, job: str, body: str, method: str = "POST", **kw: object) -> requests.Response:
    return requests.request(method, f"{d.url}/metrics/job/{job}", data=body.encode(), timeout=10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(daemon_factory: object, sig: int) -> None:
    d = daemon_factory()  # type: ignore[operator]
    assert push(d, "j", "m 1\n").status_code == 200
    started = time.monotonic()
    assert d.stop(sig, timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in d.stderr()


def test_second_daemon_on_same_database_refuses(daemon_factory: object, tmp_path: Path) -> None:
    d = daemon_factory()  # type: ignore[operator]
    cfg = tmp_path / "second.yaml"
    cfg.write_text(f"storage:\n  url: sqlite:///{d.db_path}\nserver:\n  listen: 127.0.0.1:{free_port()}\n")
    out = mlwatch("daemon", "-c", str(cfg), timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("mlwatch: error: another mlwatch daemon")
    assert f"pid {d.proc.pid}" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_one_clear_line(daemon_factory: object, tmp_path: Path) -> None:
    d = daemon_factory()  # type: ignore[operator]
    other = tmp_path / "other"
    other.mkdir()
    cfg = other / "c.yaml"
    cfg.write_text(f"storage:\n  url: sqlite:///{other / 'x.db'}\nserver:\n  listen: 127.0.0.1:{d.port}\n")
    out = mlwatch("daemon", "-c", str(cfg), timeout=30)
    assert out.returncode == 1
    assert f"mlwatch: error: cannot listen on 127.0.0.1:{d.port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_exits_2_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  lisen: 127.0.0.1:1\nstorage:\n  retention: forever\n")
    out = mlwatch("daemon", "-c", str(cfg))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert any(line.startswith(f"{cfg}:2:") and "listen" in line for line in lines), out.stderr
    assert any(line.startswith(f"{cfg}:4:") for line in lines), out.stderr
    assert "Traceback" not in out.stderr
    check = mlwatch("check-config", str(cfg))
    assert check.returncode == 2 and check.stderr == out.stderr


def test_acknowledged_pushes_survive_kill_9(daemon_factory: object) -> None:
    d = daemon_factory()  # type: ignore[operator]
    acked: list[int] = []
    for i in range(40):
        r = push(d, f"job{i % 4}", f"kill_test_value {i}\n")
        assert r.status_code == 200, r.text
        acked.append(i)
    d.proc.kill()  # right after the last 2xx
    d.proc.wait(10)
    reader = Reader(make_engine(f"sqlite:///{d.db_path}", readonly=True))
    found: set[float] = set()
    for s in reader.series([Matcher.make("__name__", "=", "kill_test_value")]):
        _, values = reader.read_range(s.id, 0, 2**62)
        found.update(values.tolist())
    assert set(map(float, acked)) <= found
    ok = sqlite3.connect(d.db_path).execute("PRAGMA integrity_check").fetchone()
    assert ok == ("ok",)


def test_unwritable_database_gives_503_with_retry_after(daemon_factory: object) -> None:
    d = daemon_factory()  # type: ignore[operator]
    assert push(d, "j", "m 1\n").status_code == 200
    blocker = sqlite3.connect(d.db_path, timeout=1, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock past the writer's busy timeout
    try:
        r = push(d, "j", "m 2\n")
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # It recovers by itself once the lock is gone.
    assert push(d, "j", "m 3\n").status_code == 200


def test_reload_applies_good_config_and_keeps_old_on_bad(daemon_factory: object) -> None:
    d = daemon_factory()  # type: ignore[operator]
    base = d.config_path.read_text()
    assert push(d, "j", "m 1\n").status_code == 200
    # A good config that adds a bearer token: writes now need it.
    d.config_path.write_text(base + "  bearer_token_env: TEST_TOKEN\n")
    r = requests.post(f"{d.url}/-/reload", timeout=10)
    # TEST_TOKEN is not set in the daemon's environment: a config error, old config kept.
    assert r.status_code == 500 and "TEST_TOKEN" in r.text
    assert push(d, "j", "m 2\n").status_code == 200
    d.config_path.write_text(base + "push:\n  accept_timestamps: false\n")
    assert requests.post(f"{d.url}/-/reload", timeout=10).status_code == 200
    assert push(d, "j", "m 3 1700000000000\n").status_code == 400
    # SIGHUP with a broken file: rejected, logged, daemon keeps running on the previous config.
    d.config_path.write_text("server: [unclosed\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload rejected" not in d.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload rejected" in d.stderr()
    assert push(d, "j", "m 4\n").status_code == 200
    assert d.stop() == 0


def test_bearer_token_protects_writes_only(tmp_path: Path) -> None:
    # The token line continues the server: section that start_daemon writes last.
    d = start_daemon(tmp_path, "  bearer_token_env: TEST_TOKEN\n", env={"TEST_TOKEN": "s3cret"})
    try:
        assert push(d, "j", "m 1\n").status_code == 401
        assert push(d, "j", "m 1\n", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert push(d, "j", "m 1\n", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert requests.get(f"{d.url}/metrics", timeout=5).status_code == 200
        assert "s3cret" not in d.stderr()
    finally:
        assert d.stop() == 0


def test_own_metrics_recorded_into_store_and_json_logs(daemon_factory: object) -> None:
    d = daemon_factory("evaluation_interval: 1s\n", extra_args=["--log-format", "json"])  # type: ignore[operator]
    reader = Reader(make_engine(f"sqlite:///{d.db_path}", readonly=True))
    deadline = time.monotonic() + 15
    found = []
    while not found and time.monotonic() < deadline:
        found = reader.latest([Matcher.make("__name__", "=", "mlwatch_storage_series")], int(time.time() * 1000), 300_000)
        time.sleep(0.2)
    assert found and found[0].series.key.label_dict()["job"] == "mlwatch"
    assert d.stop() == 0
    lines = [line for line in d.stderr().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] in {"info", "warning", "error", "debug"} for line in lines)


def test_concurrent_pushes_share_commits(daemon_factory: object) -> None:
    d = daemon_factory()  # type: ignore[operator]
    codes: list[int] = []

    def worker(n: int) -> None:
        with requests.Session() as s:
            for i in range(25):
                codes.append(s.post(f"{d.url}/metrics/job/w{n}", data=f"cc {i}\n", timeout=10).status_code)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 200
    metrics = requests.get(f"{d.url}/metrics", timeout=5).text
    commits = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("mlwatch_storage_commits_total"))
    batches = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("mlwatch_storage_write_batches_total"))
    assert batches >= 200 and commits <= batches


def test_push_group_is_resampled_and_delete_ends_it_with_staleness(daemon_factory: object) -> None:
    from mlwatch.model import is_stale_nan

    d = daemon_factory("push:\n  sample_interval: 1s\n")  # type: ignore[operator]
    assert push(d, "nightly", "nightly_accuracy 0.91\n").status_code == 200
    reader = Reader(make_engine(f"sqlite:///{d.db_path}", readonly=True))
    sel = [Matcher.make("__name__", "=", "nightly_accuracy")]
    deadline = time.monotonic() + 15
    values: list[float] = []
    while len(values) < 3 and time.monotonic() < deadline:
        (info,) = reader.series(sel)
        values = reader.read_range(info.id, 0, 2**62)[1].tolist()
        time.sleep(0.2)
    assert len(values) >= 3 and set(values) == {0.91}  # the push, then one sample per interval
    assert requests.delete(f"{d.url}/metrics/job/nightly", timeout=5).status_code == 202
    (info,) = reader.series(sel)
    ts, vals = reader.read_range(info.id, 0, 2**62)
    assert is_stale_nan(vals[-1])
    assert reader.latest(sel, int(time.time() * 1000) + 1, 300_000) == []


def test_db_backup_of_a_live_database_is_queryable(daemon_factory: object, tmp_path: Path) -> None:
    d = daemon_factory()  # type: ignore[operator]
    assert push(d, "bk", "backup_metric 42\n").status_code == 200
    dest = tmp_path / "copy.db"
    out = mlwatch("db", "backup", str(dest), "--db", f"sqlite:///{d.db_path}")
    assert out.returncode == 0, out.stderr
    q = mlwatch("query", "backup_metric", "-o", "json", "--db", f"sqlite:///{dest}")
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout)["data"]["result"][0]["value"][1] == "42"
    assert sqlite3.connect(dest).execute("PRAGMA integrity_check").fetchone() == ("ok",)
