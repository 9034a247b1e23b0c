"""Source faults against a real daemon (CONTRACT §6): HTTP targets that hang, reset the connection in the
middle of the body, send more than ``body_size_limit`` (with and without a Content-Length) or garbage
(binary, HTML, a truncated exposition); log files that are deleted, replaced by a directory, recreated
unreadable by a rotation, or truncated. Each faulty source is down (``up`` 0) with its reason counted in
``mlwatch_source_errors_total{job,reason}`` and said in ``lastError``, its series go stale, every other
source goes on as before, and each recovers by itself once its fault clears.

tests/sources/ covers these one collection at a time in-process (hang/refused/garbage bodies, rotation,
truncation, vanish-and-reappear); this runs them all at once in one daemon, for many intervals, with
recovery. The unreadable file needs the daemon without root's override of file permissions: as root it
runs under ``setpriv`` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (still uid 0, so it can use
the virtualenv and temp dirs wherever CI put them, but a mode-000 file is refused as for any user).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import DaemonProcess, free_port, wait_http

HANG_S = 5.0
LIMIT = 64 * 1024

FAULTS = {  # path -> the reason the source's failed scrapes are counted under
    "hang": "timeout",
    "reset": "connection",
    "huge": "body_size_limit",
    "huge_chunked": "body_size_limit",
    "binary": "parse",
    "html": "parse",
    "truncated": "parse",
}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the faults' own broken pipes and resets


class Targets:
    """Prometheus-format targets on one loopback port: ``/ok`` is always fine; the others serve their
    fault while ``broken`` is set, else a valid body (``<path>_value 1``)."""

    def __init__(self) -> None:
        self.broken = threading.Event()
        targets = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                name = self.path.strip("/").split("/")[0]
                if name in FAULTS and targets.broken.is_set():
                    getattr(targets, name)(self)
                else:
                    targets.send(self, f"# TYPE {name}_value gauge\n{name}_value 1\n".encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def send(h: BaseHTTPRequestHandler, body: bytes, content_type: str = "text/plain; version=0.0.4") -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def hang(self, h: BaseHTTPRequestHandler) -> None:
        time.sleep(HANG_S)  # longer than the source's timeout
        self.send(h, b"hang_value 1\n")

    def reset(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; version=0.0.4")
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(b'# TYPE reset_value gauge\nreset_value 1\nreset_other{a="')
        h.wfile.flush()
        # an RST, not a FIN: the connection is reset in the middle of the body
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
        h.close_connection = True

    def huge(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, b"".join(b'huge_value{i="%d"} 1\n' % i for i in range(8000)))  # ~190 KiB > 64 KiB

    def huge_chunked(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; version=0.0.4")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for i in range(50):  # no Content-Length: the limit must stop the read as the body grows
                chunk = b"".join(b'huge_chunked_value{i="%d"} 1\n' % (i * 1000 + j) for j in range(1000))
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the scraper stopped reading at its limit
        h.close_connection = True

    def binary(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, bytes(range(256)) * 4)

    def html(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, b"<!DOCTYPE html>\n<html><body><h1>Sign in</h1></body></html>\n", "text/html; charset=utf-8")

    def truncated(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, b'# TYPE truncated_value gauge\ntruncated_value 1\ntruncated_value{code="2')

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def targets() -> Iterator[Targets]:
    t = Targets()
    yield t
    t.close()


def _no_dac_override() -> list[str]:
    """The command prefix that makes file permissions apply to the daemon (see the module docstring)."""
    if os.geteuid() != 0:
        return []  # an ordinary user: permissions already apply
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): an unreadable file cannot be made unreadable")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.fixture
def daemon(tmp_path: Path, targets: Targets) -> Iterator[tuple[DaemonProcess, Path]]:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("other", "deleted", "dir", "locked", "trunc"):
        (logs / f"{name}.log").write_text('{"i": 1}\n{"i": 2}\n')
    http = "\n".join(
        f"  - {{name: {name}, type: http, url: http://{targets.address}/{name}, interval: 500ms, timeout: 500ms,"
        f" body_size_limit: {LIMIT}}}"
        for name in FAULTS
    )
    log_sources = "\n".join(
        f"  - {{name: log_{name}, type: log, path: {logs}/{name}.log, interval: 100ms}}"
        for name in ("other", "deleted", "dir", "locked", "trunc")
    )
    port = free_port()
    db = tmp_path / "mlwatch.db"
    config = tmp_path / "mlwatch.yaml"
    config.write_text(
        f"storage: {{url: 'sqlite:///{db}'}}\nserver: {{listen: '127.0.0.1:{port}'}}\n"
        "alerting: {staleness_alerts: {enabled: false}}\n"
        f"sources:\n  - {{name: ok, type: http, url: http://{targets.address}/ok, interval: 2s, timeout: 2s}}\n"
        f"{http}\n{log_sources}\n"
    )
    stderr = tmp_path / "daemon.log"
    cmd = [*_no_dac_override(), sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(config)]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    d = DaemonProcess(proc, port, db, config, stderr)
    try:
        wait_http(f"{d.url}/-/ready", timeout=30, proc=proc)
        yield d, logs
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# ---------------------------------------------------------------------------- reading the daemon
class View:
    def __init__(self, d: DaemonProcess, targets: Targets, logs: Path) -> None:
        self.d, self.address, self.logs = d, targets.address, logs

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in requests.get(f"{self.d.url}/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def instance(self, job: str) -> str:
        return f"{self.logs}/{job.removeprefix('log_')}.log" if job.startswith("log_") else self.address

    def up(self, m: dict[str, float], job: str) -> float | None:
        return m.get(f'up{{instance="{self.instance(job)}",job="{job}"}}')

    def lines(self, m: dict[str, float], job: str) -> float:
        return m.get(f'mlwatch_log_lines_total{{instance="{self.instance(job)}",job="{job}"}}', 0.0)

    @staticmethod
    def errors(m: dict[str, float], job: str) -> dict[str, float]:
        prefix = f'mlwatch_source_errors_total{{job="{job}",reason="'
        return {k[len(prefix) : -2]: v for k, v in m.items() if k.startswith(prefix)}

    def last_errors(self) -> dict[str, str]:
        body = requests.get(f"{self.d.url}/api/v1/targets", timeout=10).json()
        return {t["labels"]["job"]: t["lastError"] for t in body["data"]["activeTargets"]}

    def current(self) -> set[str]:
        """Names of the ``*_value`` series that have a current (non-stale) value."""
        body = requests.get(f"{self.d.url}/api/v1/query", params={"query": '{__name__=~".+_value"}'}, timeout=10)
        return {r["metric"]["__name__"] for r in body.json()["data"]["result"]}

    def until(self, cond: Callable[[dict[str, float]], bool], what: str, timeout: float = 45.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.d.proc.poll() is None, f"the daemon exited:\n{self.d.stderr()}"
            m = self.metrics()
            if cond(m):
                return m
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; metrics: {self.metrics()}")


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_faulty_sources_are_down_with_a_reason_others_go_on_and_all_recover(
    daemon: tuple[DaemonProcess, Path], targets: Targets
) -> None:
    d, logs = daemon
    v = View(d, targets, logs)
    http_jobs = ["ok", *FAULTS]
    log_jobs = ["log_other", "log_deleted", "log_dir", "log_locked", "log_trunc"]
    # Everything is up and read first, the target series current.
    v.until(
        lambda m: (
            all(v.up(m, j) == 1 for j in http_jobs) and all(v.up(m, j) == 1 and v.lines(m, j) == 2 for j in log_jobs)
        ),
        "every source up",
    )
    assert v.current() == {f"{j}_value" for j in http_jobs}

    # ---- the faults
    targets.broken.set()
    (logs / "deleted.log").unlink()
    (logs / "dir.log").unlink()
    (logs / "dir.log").mkdir()
    (logs / "locked.log").rename(logs / "locked.log.1")  # rotated; the new file is created unreadable
    (logs / "locked.log").write_text('{"i": 3}\n')
    (logs / "locked.log").chmod(0)
    with (logs / "trunc.log").open("r+") as f:  # truncated in place, no copy
        f.truncate(0)
    _append(logs / "trunc.log", '{"i": 3}\n')

    def faulty(m: dict[str, float]) -> bool:
        down = [*FAULTS, "log_deleted", "log_dir", "log_locked"]
        return all(v.up(m, j) == 0 for j in down) and all(
            v.errors(m, j).get(r, 0) >= 2
            for j, r in FAULTS.items()  # retried every interval, counted each time
        )

    m = v.until(faulty, "every faulty source down")
    assert v.errors(m, "log_deleted").get("not_found", 0) >= 1
    assert v.errors(m, "log_dir").get("not_a_file", 0) >= 1
    assert v.errors(m, "log_locked").get("permission_denied", 0) >= 1
    assert v.lines(m, "log_locked") == 2  # the rotated-away file had been read to its end; the new one cannot be
    assert v.errors(m, "log_trunc") == {"truncated": 1} and v.up(m, "log_trunc") == 1  # counted, not down
    assert v.lines(m, "log_trunc") == 3

    errors = v.last_errors()
    assert errors["hang"].startswith("context deadline exceeded")
    assert errors["huge"] == f"body size limit exceeded (182890 > {LIMIT} bytes)"  # said by Content-Length
    assert errors["huge_chunked"] == f"body size limit exceeded (more than {LIMIT} bytes)"  # found reading
    assert "Connection reset by peer" in errors["reset"]  # mid-body (or, racing the headers, before them)
    assert errors["binary"] == "parse error: line 2: invalid UTF-8"
    assert errors["html"] == "parse error: line 1: invalid metric name in '<!DOCTYPE html>'"
    assert errors["truncated"] == "parse error: line 3: unexpected end of label value '2'"
    assert errors["log_deleted"] == f"{logs}/deleted.log: no such file"
    assert errors["log_dir"] == f"{logs}/dir.log is a directory; a log source reads regular files"
    assert errors["log_locked"] == f"cannot open {logs}/locked.log: Permission denied"
    assert errors["ok"] == "" and errors["log_other"] == ""

    # The faulty targets' series went stale; the others go on, untouched, while the faults last.
    assert v.current() == {"ok_value"}
    for i in range(3):
        _append(logs / "other.log", f'{{"x": {i}}}\n')
    m = v.until(lambda m: v.lines(m, "log_other") == 5, "the healthy log read on")
    assert v.up(m, "ok") == 1 and v.up(m, "log_other") == 1
    assert v.errors(m, "ok") == {} and v.errors(m, "log_other") == {}

    # ---- the faults clear: each source recovers by itself
    targets.broken.clear()
    (logs / "deleted.log").write_text('{"i": 3}\n')  # a new file: read from its beginning
    (logs / "dir.log").rmdir()
    (logs / "dir.log").write_text('{"i": 3}\n')
    (logs / "locked.log").chmod(0o644)
    m = v.until(
        lambda m: (
            all(v.up(m, j) == 1 for j in [*http_jobs, *log_jobs])
            and all(v.lines(m, j) == 3 for j in ("log_deleted", "log_dir", "log_locked"))
        ),
        "every source recovered",
        timeout=HANG_S + 45,  # a hung scrape in flight runs out first
    )
    _until_current = time.monotonic() + 30
    while v.current() != {f"{j}_value" for j in http_jobs} and time.monotonic() < _until_current:
        time.sleep(0.1)
    assert v.current() == {f"{j}_value" for j in http_jobs}
    assert v.errors(m, "ok") == {} and v.errors(m, "log_other") == {}
    assert all(e == "" for e in v.last_errors().values())
    assert d.proc.poll() is None


RESTART_UNREADABLE = """
import json, os, sys
from mlwatch.sources.tail import Tailer, TailState

path = sys.argv[1]
t = Tailer(path)
r = t.read()
t.commit(r.state)
saved = json.dumps(t.state.to_json())
t.close()
os.chmod(path, 0)  # unreadable across a restart of the daemon
t = Tailer(path)
t.restore(TailState.from_json(json.loads(saved)))
down = t.read()
t.commit(down.state)
os.chmod(path, 0o644)
with open(path, "a") as f:
    f.write("c\\n")
up = t.read()
print(json.dumps({"first": [l.decode() for l, _ in r.lines], "down": [l.decode() for l, _ in down.lines],
                  "problems": down.problems, "kept": [f["offset"] for f in down.state.to_json()["files"]],
                  "after": [l.decode() for l, _ in up.lines], "after_problems": up.problems}))
"""


def test_a_file_unreadable_across_a_restart_keeps_its_offset(tmp_path: Path) -> None:
    """Unreadable when the daemon restarts: the source is down, the committed offset is kept, and once the
    file is readable again only the new lines are read (none counted twice)."""
    import json

    log = tmp_path / "a.log"
    log.write_text("a\nb\n")
    out = subprocess.run(
        [*_no_dac_override(), sys.executable, "-c", RESTART_UNREADABLE, str(log)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got["first"] == ["a", "b"]
    assert got["down"] == [] and got["problems"] == [["permission_denied", f"cannot open {log}: Permission denied"]]
    assert got["kept"] == [4]
    assert got["after"] == ["c"] and got["after_problems"] == []
