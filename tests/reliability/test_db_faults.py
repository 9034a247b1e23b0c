"""A database that is locked, read-only or full (CONTRACT §6), with a real daemon subprocess.

Each test runs a real ``mlwatch daemon`` with a Prometheus-format scrape target (a real HTTP server on
loopback whose counter is the number of the scrape, so every scrape result is identifiable), a log
source on a real file, and pushes; then it injects one storage fault from outside the daemon:

- locked: another process holds ``BEGIN IMMEDIATE`` on the same file for 30 s, then lets go by itself;
- read-only: the database file and its WAL made immutable (``chattr +i``), which stops writes even
  for root, the way a file system remounted read-only stops them for a process that has them open;
- full: the database lives on a small tmpfs that another file fills up, then is deleted.

During the fault: pushes get 503 with Retry-After, and any push answered 2xx is in the database;
the log source's committed offsets do not move, nor does what the daemon reports for it; scrape
results wait in memory (``limits.scrape_buffer_samples``), the oldest dropped and counted; /metrics
and the daemon's log say that storage is unwritable and why. When the fault clears, the daemon
recovers by itself: every log line is counted exactly once, and every scrape result is either
stored or counted in ``mlwatch_source_dropped_samples_total``. Nothing else is lost.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlwatch.model import Matcher
from mlwatch.storage.database import make_engine
from mlwatch.storage.reader import Reader
from tests.helpers import DaemonProcess, free_port, start_daemon

LOCK_SECONDS = 30  # issue 9: the database write-locked by another process for 30 s
SCRAPE_BATCH = 5  # samples per successful scrape result: fault_scrapes_total and the 4 report series
BUFFER_SAMPLES = 2 * SCRAPE_BATCH  # limits.scrape_buffer_samples: two scrape results
PUSH_SERIES = 20  # series per push, so that pushes grow the database


# ---------------------------------------------------------------------------- the scrape target
class _Target(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.served: list[int] = []
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Target

    def do_GET(self) -> None:
        with self.server.lock:
            n = len(self.server.served) + 1
            self.server.served.append(n)
        body = f"# TYPE fault_scrapes counter\nfault_scrapes_total {n}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


# ---------------------------------------------------------------------------- the rig
@dataclass
class Rig:
    tmp: Path
    db: Path
    target: _Target
    log: Path
    daemon: DaemonProcess | None = None
    lines: int = 0
    pushes: list[tuple[str, int, int]] = field(default_factory=list)  # (job, value, HTTP status)

    def start(self) -> DaemonProcess:
        port = free_port()
        (self.tmp / "mlwatch.yaml").write_text(
            f"storage:\n  url: sqlite:///{self.db}\n"
            f"server:\n  listen: 127.0.0.1:{port}\n"
            "evaluation_interval: 1s\n"
            f"limits:\n  scrape_buffer_samples: {BUFFER_SAMPLES}\n"
            "sources:\n"
            f"  - {{name: scrape, type: http, interval: 2s, timeout: 2s, targets: ['{self.instance}']}}\n"
            f"  - {{name: applog, type: log, path: '{self.log}',\n"
            "      metrics: [{name: app_lines_total, type: counter}]}\n"
        )
        self.daemon = start_daemon(self.tmp, port=port)
        return self.daemon

    @property
    def instance(self) -> str:
        """The scrape target's address, its ``instance`` label."""
        return f"127.0.0.1:{self.target.server_port}"

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.url

    def stderr(self) -> str:
        assert self.daemon is not None
        return self.daemon.stderr()

    def append_lines(self, n: int) -> None:
        with self.log.open("a") as f:
            for _ in range(n):
                self.lines += 1
                f.write(json.dumps({"n": self.lines}) + "\n")

    def push(self, job: str, value: int) -> requests.Response:
        body = "".join(f'fault_push_value{{k="{k}"}} {value}\n' for k in range(PUSH_SERIES))
        r = requests.post(f"{self.url}/metrics/job/{job}", data=body.encode(), timeout=60)
        self.pushes.append((job, value, r.status_code))
        assert r.status_code in (200, 503), (r.status_code, r.text)
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) > 0
            assert "nothing stored" in r.text
        return r

    def committed_lines(self) -> int:
        """The log source's line count as committed with its offsets (what a restart continues from)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT value FROM source_state WHERE key = 'log/applog'").fetchone()
        finally:
            conn.close()
        return int(json.loads(row[0])["lines"]) if row else 0

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(f"{self.url}/metrics", timeout=30).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.2)


@pytest.fixture
def target() -> Iterator[_Target]:
    t = _Target()
    thread = threading.Thread(target=t.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield t
    t.shutdown()
    t.server_close()


def make_rig(tmp_path: Path, target: _Target, db_dir: Path | None = None) -> Rig:
    log = tmp_path / "app.jsonl"
    log.touch()
    return Rig(tmp_path, (db_dir or tmp_path) / "mlwatch.db", target, log)


@contextlib.contextmanager
def stopped_at_end(rig: Rig) -> Iterator[None]:
    try:
        yield
    finally:
        if rig.daemon is not None and rig.daemon.proc.poll() is None:
            rig.daemon.proc.kill()
            rig.daemon.proc.wait(10)


# ---------------------------------------------------------------------------- the scenario
def exercise(rig: Rig, inject: Callable[[], None], clear: Callable[[], None], reason: str) -> None:
    """Run the daemon through one fault and check everything the contract promises (see the module doc)."""
    rig.start()
    rig.append_lines(40)
    wait_until("the first 40 log lines are committed", lambda: rig.committed_lines() == 40)
    wait_until("a scrape succeeds", lambda: rig.metric("up", job="scrape", instance=rig.instance) == 1)
    assert rig.push("before", 1).status_code == 200

    inject()
    # Pushes during the fault: 503 with Retry-After, or (full disk: while the WAL still had room) a 2xx
    # that must turn out durable. Stop at the first refusal.
    deadline = time.monotonic() + 40
    i = 0
    while rig.push(f"during{i}", 100 + i).status_code != 503:
        assert time.monotonic() < deadline, "no push was refused during the fault"
        i += 1
    rig.append_lines(25)  # written while storage is unwritable: the file is the buffer
    job_scrape = {"job": "scrape", "instance": rig.instance}

    def fault_shows() -> bool:
        m = rig.metrics()
        return (
            m.get(("mlwatch_storage_writable", ()), 1) == 0
            and m.get(("mlwatch_storage_unavailable_total", (("reason", reason),)), 0) > 0
            and m.get(("mlwatch_storage_unwritable_seconds", ()), 0) > 0
            and m.get(("mlwatch_source_errors_total", (("job", "applog"), ("reason", "storage"))), 0) > 0
            and m.get(("mlwatch_source_buffered_samples", ()), 0) > 0
        )

    wait_until(f"/metrics shows storage unwritable ({reason}), the log paused and scrapes buffered", fault_shows)
    assert f"storage unwritable ({reason})" in rig.stderr()
    # The log source neither committed nor reports lines beyond what was committed before the fault.
    assert rig.committed_lines() == 40
    assert rig.metric("mlwatch_log_lines_total", job="applog", instance=str(rig.log)) == 40
    assert rig.metric("mlwatch_source_buffered_samples") <= BUFFER_SAMPLES

    clear()
    wait_until("storage recovers by itself", lambda: rig.metric("mlwatch_storage_writable") == 1)
    wait_until("the lines written during the fault are committed", lambda: rig.committed_lines() == 65)
    wait_until("the scrape buffer is written", lambda: rig.metric("mlwatch_source_buffered_samples") == 0)
    assert rig.push("after", 2).status_code == 200
    rig.append_lines(15)
    wait_until("the log source goes on after the fault", lambda: rig.committed_lines() == 80)
    assert "storage writable again" in rig.stderr()
    m = rig.metrics()
    dropped = m.get(("mlwatch_source_dropped_samples_total", (("job", "scrape"),)), 0.0)
    scrape_errors = {dict(k[1])["reason"]: v for k, v in m.items()
                     if k[0] == "mlwatch_source_errors_total" and dict(k[1]).get("job") == "scrape"}  # fmt: skip
    assert rig.daemon is not None and rig.daemon.stop() == 0
    served = list(rig.target.served)
    check_database(rig, served, dropped, scrape_errors, job_scrape)


def check_database(rig: Rig, served: list[int], dropped: float, scrape_errors: dict[str, float],
                   job_scrape: dict[str, str]) -> None:  # fmt: skip
    reader = Reader(make_engine(f"sqlite:///{rig.db}", readonly=True))
    try:

        def values(name: str, **labels: str) -> list[float]:
            sel = [Matcher.make("__name__", "=", name)] + [Matcher.make(k, "=", v) for k, v in labels.items()]
            out: list[float] = []
            for info in reader.series(sel):
                out += reader.read_range(info.id, 0, 2**62)[1].tolist()
            return out

        # Pushes: every 2xx is stored (all its series), nothing of a 503 is.
        assert any(code == 503 for _, _, code in rig.pushes)
        for job, value, code in rig.pushes:
            got = values("fault_push_value", job=job)
            if code == 200:
                sel = [Matcher.make("__name__", "=", "fault_push_value"), Matcher.make("job", "=", job)]
                assert len(reader.series(sel)) == PUSH_SERIES
                assert set(got) == {float(value)}, (job, got)
            else:
                assert got == [], f"push {job} got 503 but is stored"
        # Log: every line counted exactly once, across the fault.
        counts = values("app_lines_total", job="applog")
        assert counts == sorted(counts) and counts[-1] == 80, counts
        assert max(values("mlwatch_log_lines_total", job="applog")) == 80
        # Scrapes: each served result is stored or counted as dropped; none is lost silently.
        stored = {int(v) for v in values("fault_scrapes_total", **job_scrape)}
        assert stored <= set(served)
        missing = set(served) - stored
        failed = sum(n for r, n in scrape_errors.items() if r != "storage")  # timeouts under heavy load
        if not failed:
            assert dropped == SCRAPE_BATCH * len(missing), (dropped, sorted(missing))
        else:  # a failed scrape stores no value, and its result (4 or 5 samples) may itself be dropped
            assert SCRAPE_BATCH * len(missing) - SCRAPE_BATCH * failed <= dropped <= SCRAPE_BATCH * len(missing)
    finally:
        reader.close()
    conn = sqlite3.connect(rig.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the faults
def test_locked_for_30s_by_another_process(tmp_path: Path, target: _Target) -> None:
    rig = make_rig(tmp_path, target)
    blocker: subprocess.Popen[str] | None = None
    script = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(rig.db)!r}, timeout=30, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({LOCK_SECONDS})\n"
        "c.execute('ROLLBACK')\n"
    )

    def inject() -> None:
        nonlocal blocker
        blocker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert blocker.stdout is not None and blocker.stdout.readline().strip() == "locked"

    def clear() -> None:
        assert blocker is not None
        # The lock outlasts the writer's busy timeout several times: scrapes overflow the buffer meanwhile.
        wait_until("scrape results are dropped and counted",
                   lambda: rig.metric("mlwatch_source_dropped_samples_total", job="scrape") > 0)
        assert blocker.wait(LOCK_SECONDS + 30) == 0  # the other process lets go by itself

    try:
        with stopped_at_end(rig):
            exercise(rig, inject, clear, "locked")
    finally:
        if blocker is not None:
            if blocker.poll() is None:
                blocker.kill()
                blocker.wait(10)
            assert blocker.stdout is not None
            blocker.stdout.close()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True)


def _chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return _run("chattr", flag, *map(str, paths))


def test_read_only_database(tmp_path: Path, target: _Target) -> None:
    probe = tmp_path / "probe"
    probe.touch()
    try:
        out = _chattr("+i", probe)
    except FileNotFoundError:
        pytest.skip("chattr is not installed (Debian: e2fsprogs)")
    if out.returncode != 0:
        pytest.skip(f"cannot make a file immutable here (needs root, and a file system with the flag): {out.stderr}")
    _chattr("-i", probe)
    rig = make_rig(tmp_path, target)
    # The database file and its WAL, not the -shm index: SQLite maps that one into memory, and a mapped
    # file that cannot be written kills the process with SIGBUS, which is not a read-only database.
    files = (rig.db, rig.db.with_name(rig.db.name + "-wal"))
    try:
        with stopped_at_end(rig):
            exercise(rig, lambda: _check(_chattr("+i", *files)), lambda: _check(_chattr("-i", *files)), "readonly")
    finally:
        _chattr("-i", *files)
    assert "is not writable" in rig.stderr()  # the log names the file that cannot be written


def _check(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stderr


def test_full_disk(tmp_path: Path, target: _Target) -> None:
    fs = tmp_path / "fs"
    fs.mkdir()
    out = _run("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(fs))
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): {out.stderr.strip()}")
    rig = make_rig(tmp_path, target, db_dir=fs)
    filler = fs / "filler"

    def fill() -> None:
        # Start the WAL afresh (a checkpoint any SQLite client may run), so that the daemon's next writes
        # need new space in the WAL rather than reusing room it already had; then take all the space.
        conn = sqlite3.connect(rig.db, timeout=30)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)

    try:
        with stopped_at_end(rig):
            exercise(rig, fill, filler.unlink, "full")
    finally:
        if rig.daemon is not None and rig.daemon.proc.poll() is None:
            rig.daemon.proc.send_signal(signal.SIGKILL)
            rig.daemon.proc.wait(10)
        if _run("umount", str(fs)).returncode != 0:
            _run("umount", "-l", str(fs))
