"""Security audit as tests: every route behind the token, constant-time compare, argv never through a shell,
secrets never in any output, files 0600. (test_security.py covers basic auth, TLS and 413.)"""

from __future__ import annotations

import ast
import asyncio
import gc
import http.server
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import aiohttp
import pytest
import requests
from aiohttp import web

import mlwatch
from mlwatch.config import default_config, load_config
from mlwatch.daemon import Daemon, DaemonOptions
from mlwatch.server import auth
from tests.helpers import DaemonProcess, free_port, start_daemon

OPEN_PATHS = {"/-/healthy", "/-/ready"}  # documented: health checks never need credentials
READ_POSTS = set(auth._READ_POSTS)  # form POSTs that are queries


def _concrete(path: str) -> str:
    """A request path for a route's template ({rest:.*} -> a push group, {id} -> an id ...)."""
    return re.sub(r"\{rest[^}]*\}", "job/authcheck", re.sub(r"\{(\w+)\}", r"x\1", path))


async def _daemon_routes(tmp_path: Path, config_text: str) -> tuple[list[tuple[str, str]], Daemon, asyncio.Task[None]]:
    """Start the real daemon in-process and read the routes of the application it serves (found through the
    garbage collector: no list is kept by hand, so a route added later is checked too)."""
    config = tmp_path / "mlwatch.yaml"
    config.write_text(config_text)
    daemon = Daemon(load_config(config), DaemonOptions(config_path=str(config)))
    before = {id(o) for o in gc.get_objects() if isinstance(o, web.Application)}
    task = asyncio.create_task(daemon.run())
    for _ in range(600):
        if daemon.ready or task.done():
            break
        await asyncio.sleep(0.05)
    assert daemon.ready, task.exception() if task.done() else "daemon not ready"
    gc.unfreeze()  # the daemon moves its start-up objects out of the collector's reach (server/app.py)
    apps = [o for o in gc.get_objects() if isinstance(o, web.Application) and id(o) not in before]
    assert len(apps) == 1
    routes = sorted({(r.method, r.resource.canonical) for r in apps[0].router.routes()
                     if r.resource is not None and r.method != "HEAD"})  # fmt: skip
    assert len(routes) > 20 and ("PUT", "/api/v1/admin/wipe") in routes
    return routes, daemon, task


async def _stop(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.request_stop()
    await asyncio.wait_for(task, 60)


async def _status(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]) -> int:
    data = b"authcheck 1\n" if method in ("PUT", "POST") else None
    async with session.request(method, url, data=data, headers=headers, allow_redirects=False) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("protect_reads", [True, False])
@pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning")  # /federate: a callable object
async def test_every_route_is_behind_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               protect_reads: bool) -> None:  # fmt: skip
    monkeypatch.setenv("MLWATCH_TEST_TOKEN", "s3cr3t-t0ken")
    port = free_port()
    text = (f"storage: {{url: 'sqlite:///{tmp_path}/m.db'}}\nserver:\n  listen: 127.0.0.1:{port}\n"
            f"  bearer_token_env: MLWATCH_TEST_TOKEN\n  protect_reads: {str(protect_reads).lower()}\n"
            "alerting: {staleness_alerts: {enabled: false}}\n")  # fmt: skip
    routes, daemon, task = await _daemon_routes(tmp_path, text)
    base = f"http://127.0.0.1:{port}"
    wrong = {"Authorization": "Bearer s3cr3t-t0kem"}
    good = {"Authorization": "Bearer s3cr3t-t0ken"}
    problems = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            for method, path in routes:
                url = base + _concrete(path)
                write = not (method == "GET" or (method == "POST" and path in READ_POSTS))
                needs = path not in OPEN_PATHS and (write or protect_reads)
                anonymous, bad, ok = [await _status(s, method, url, h) for h in ({}, wrong, good)]
                want = (401, 403) if needs else (None, None)
                if needs and (anonymous, bad) != want:
                    problems.append(f"{method} {path}: without token {anonymous}, wrong token {bad}, want 401/403")
                if not needs and anonymous in (401, 403):
                    problems.append(f"{method} {path}: {anonymous} without a token, but it is an open read")
                if ok in (401, 403):
                    problems.append(f"{method} {path}: {ok} with the right token")
    finally:
        await _stop(daemon, task)
    assert not problems, "\n".join(problems)


def test_the_token_is_compared_in_constant_time() -> None:
    """auth.py compares the token with hmac.compare_digest and never with == (a timing side channel)."""
    tree = ast.parse(inspect.getsource(auth))
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            sides = [ast.unparse(node.left), *map(ast.unparse, node.comparators)]
            assert not any("bearer_token" in s or "password" in s or s == "cred" for s in sides), ast.unparse(node)


def test_the_default_listen_address_is_loopback() -> None:
    assert default_config().server.listen == "127.0.0.1:9091"
    assert default_config().server.bearer_token_env is None  # nothing to leak, nothing to guess


def test_no_code_path_reaches_a_shell() -> None:
    """Commands and exec notifiers are argv lists: no shell=True, os.system, os.popen or create_subprocess_shell."""
    root = Path(mlwatch.__file__).parent
    found = []
    for py in root.rglob("*.py"):
        tree = ast.parse(py.read_text(), str(py))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name.endswith(("os.system", "os.popen", "create_subprocess_shell", "os.execl", "os.spawnl")):
                    found.append(f"{py}:{node.lineno}: {name}")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        found.append(f"{py}:{node.lineno}: shell={ast.unparse(kw.value)}")
    assert not found, found


# ---------------------------------------------------------------- a daemon with secrets, commands and exec

SECRETS = {"MLW_TOKEN": "tok-9f2c1e77", "MLW_SMTP_USER": "user-5b1d", "MLW_SMTP_PASS": "pass-a8e3c0",
           "MLW_HOOK_TOKEN": "hook-3d9e4f"}  # fmt: skip


class _Failing(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that reads the request (with its Authorization header) and answers 500."""

    received: ClassVar[list[str]] = []  # Authorization headers: the token is really sent, so a leak could happen

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Failing.received.append(self.headers.get("Authorization", ""))
        self.send_response(500)
        self.end_headers()
        # (A receiver that echoes the header back gets it stored in the attempt's error: reported, not tested.)
        self.wfile.write(b"receiver down")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def secret_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    tmp = tmp_path_factory.mktemp("secrets")
    dead = free_port()  # nothing listens on the SMTP port: every delivery fails and is retried (and logged)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    pwned = tmp / "pwned"
    exec_argv = [sys.executable, "-c", "import sys; sys.stdin.read()", f"$(touch {pwned})", f"`touch {pwned}`",
                 f"; touch {pwned}"]  # fmt: skip
    command_argv = [sys.executable, "-c", "print(1)", f"$(touch {pwned})", f"| touch {pwned}"]
    text = f"""  bearer_token_env: MLW_TOKEN
evaluation_interval: 1s
alerting: {{staleness_alerts: {{enabled: false}}}}
sources:
  - {{name: cmd, type: command, command: {json.dumps(command_argv)}, interval: 1s, metric: cmd_value}}
rules:
  - alert: AlwaysOn
    expr: vector(1)
    labels: {{severity: page}}
    annotations: {{summary: '{{{{ $labels.alertname }}}} $(touch {pwned}) {{{{ printf "%s" "`id`" }}}}'}}
notifiers:
  - {{name: mail, type: email, smtp: {{host: 127.0.0.1, port: {dead}, username_env: MLW_SMTP_USER, password_env: MLW_SMTP_PASS, timeout: 2s}}, from: a@example.com, to: [b@example.com]}}
  - {{name: hook, type: webhook, url: "{hook}", bearer_token_env: MLW_HOOK_TOKEN, timeout: 2s}}
  - {{name: run, type: exec, command: {json.dumps(exec_argv)}}}
routes:
  - {{notifiers: [mail, hook, run], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
"""
    d = start_daemon(tmp, text, extra_args=["--debug", "--log-format", "json"], env=SECRETS)
    yield d, pwned
    if d.proc.poll() is None:
        d.stop()
    receiver.shutdown()
    receiver.server_close()


def _wait_for_attempts(d: DaemonProcess) -> list[dict[str, object]]:
    auth_header = {"Authorization": f"Bearer {SECRETS['MLW_TOKEN']}"}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = requests.get(f"{d.url}/api/v1/notifications", headers=auth_header, timeout=10)
        doc = r.json()
        items = doc.get("data", doc) if isinstance(doc, dict) else doc
        text = json.dumps(items)
        if all(name in text for name in ("mail", "hook", "run")) and "cmd_value" in requests.get(
                f"{d.url}/metrics", timeout=10).text:  # fmt: skip
            return items  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no attempts for every notifier: {text[:2000]}\n{d.stderr()[-3000:]}")


def test_arguments_are_never_interpreted_by_a_shell(secret_daemon: tuple[DaemonProcess, Path]) -> None:
    d, pwned = secret_daemon
    _wait_for_attempts(d)
    assert 'cmd_value{instance="' in requests.get(f"{d.url}/metrics", timeout=10).text  # the command ran
    assert not pwned.exists(), "a command, exec notifier or template argument went through a shell"


def test_secrets_appear_in_no_output(secret_daemon: tuple[DaemonProcess, Path], tmp_path: Path) -> None:
    d, _ = secret_daemon
    items = _wait_for_attempts(d)
    auth_header = {"Authorization": f"Bearer {SECRETS['MLW_TOKEN']}"}
    seen = {"notifications": json.dumps(items), "stderr (--debug, json)": d.stderr()}
    for path in ("/metrics", "/api/v1/status", "/api/v1/status/buildinfo", "/api/v1/targets", "/api/v1/rules",
                 "/api/v1/alerts", "/api/v1/alerts/history", "/api/v2/silences", "/federate?match[]={job=~\".+\"}"):
        seen[path] = requests.get(d.url + path, headers=auth_header, timeout=10).text
    env = {**os.environ, **SECRETS}
    for args in (["check-config", "-c", str(d.config_path)], ["alerts", "-c", str(d.config_path), "-o", "json"],
                 ["notify", "test", "hook", "-c", str(d.config_path), "--debug"]):
        run = subprocess.run([sys.executable, "-m", "mlwatch.cli", *args], capture_output=True, text=True, env=env,
                             timeout=110, cwd=d.config_path.parent, check=False)  # fmt: skip
        seen[" ".join(args[:2])] = run.stdout + run.stderr
    tui = subprocess.run([sys.executable, "-c", TUI_DUMP, str(d.config_path)], capture_output=True, text=True,
                         env=env, timeout=110, cwd=d.config_path.parent, check=False)  # fmt: skip
    assert tui.returncode == 0, tui.stderr[-2000:]
    seen["TUI data layer"] = tui.stdout
    d.stop()  # the database with everything flushed
    for f in d.db_path.parent.glob("mlwatch.db*"):
        seen[f.name] = f.read_bytes().decode("latin-1")
    leaks = [f"{name} contains ${var}" for name, text in seen.items() for var, value in SECRETS.items() if value in text]
    assert not leaks, leaks
    assert "AlwaysOn" in seen["notifications"] and "hook" in seen["notify test"]  # the outputs are the real ones
    assert f"Bearer {SECRETS['MLW_HOOK_TOKEN']}" in _Failing.received


TUI_DUMP = """
import sys
from mlwatch.readside import open_readside
data = open_readside(sys.argv[1], None)
try:
    parts = [data.daemon(), data.series(), data.alerts(), data.events(0), data.notifications(0), data.sources()]
    print(repr(parts))
finally:
    data.close()
"""


def test_database_lock_and_backup_files_are_private(secret_daemon: tuple[DaemonProcess, Path], tmp_path: Path) -> None:
    d, _ = secret_daemon
    if d.proc.poll() is None:
        _wait_for_attempts(d)
        backup = tmp_path / "backup.db"
        run = subprocess.run([sys.executable, "-m", "mlwatch.cli", "db", "backup", "-c", str(d.config_path),
                              str(backup)], capture_output=True, text=True, timeout=110, check=False,
                             env={**os.environ, **SECRETS}, cwd=d.config_path.parent)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert oct(backup.stat().st_mode & 0o777) == "0o600"
    files = list(d.db_path.parent.glob("mlwatch.db*"))
    assert {f.name for f in files} >= {"mlwatch.db", "mlwatch.db.lock"}
    for f in files:
        assert oct(f.stat().st_mode & 0o777) == "0o600", f


def test_cardinality_and_query_limits(tmp_path: Path) -> None:
    """limits.max_series refuses a push whole (400, nothing stored); query_max_samples and the point limit
    refuse a query with Prometheus' error shapes."""
    d = start_daemon(tmp_path, "limits: {max_series: 20, query_max_samples: 5}\n")
    try:
        assert requests.put(f"{d.url}/metrics/job/ok", data=b"ok_m 1\n", timeout=10).status_code == 200
        many = b"".join(b'card{i="%d"} 1\n' % i for i in range(100))
        r = requests.put(f"{d.url}/metrics/job/card", data=many, timeout=10)
        assert r.status_code == 400 and "max_series" in r.text, r.text
        assert "card{" not in requests.get(f"{d.url}/metrics", timeout=10).text
        now = int(time.time())
        history = b"".join(b"ts_m 1 %d\n" % ((now - 100 + i) * 1000) for i in range(50))  # backfill: 50 samples
        assert requests.put(f"{d.url}/metrics/job/ts", data=history, timeout=10).status_code == 200
        r = requests.get(f"{d.url}/api/v1/query", params={"query": "count_over_time(ts_m[5m])"}, timeout=10)
        assert r.status_code == 422 and r.json()["errorType"] == "execution" and "too many samples" in r.text
        r = requests.get(f"{d.url}/api/v1/query", params={"query": "ok_m"}, timeout=10)
        assert r.status_code == 200 and len(r.json()["data"]["result"]) == 1
        r = requests.get(f"{d.url}/api/v1/query_range", params={"query": "ok_m", "start": "0", "end": "1000000",
                                                                 "step": "1"}, timeout=10)  # fmt: skip
        assert r.status_code == 400 and "11,000 points" in r.json()["error"]
    finally:
        assert d.stop() == 0
