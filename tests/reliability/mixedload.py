"""Mixed load against a real daemon, ``kill -9`` at random moments, and checks that nothing acknowledged is lost.

:class:`MixedLoad` runs a real ``mlwatch daemon`` subprocess (config file and SQLite database in a work
directory) under every kind of load at once:

- pushes: threads PUT/POST ``mix_push_value{pusher="k"}`` to ``/metrics/job/mixpush/pusher/k``, every
  value unique; each 2xx is recorded as an :class:`Ack` (value, send and reply time). Every fourth push
  also creates a new series ``mix_push_series{seq="<value>"}``; with ``bulk`` every push also carries that
  many ``mix_push_bulk{i}`` series;
- an http scrape source: a small exporter on a free 127.0.0.1 port (``mix_exporter_scrapes_total`` and a
  gauge ``mix_flap`` that toggles every ``flap_period_s``);
- a log source tailing a JSONL file that a writer thread appends to continuously (``{"seq": n}``, n = 1, 2,
  ...), with the counters ``mix_log_lines_total`` (lines) and ``mix_log_seq_total`` (sum of ``seq``);
- alert rules evaluated every second: ``MixSteady`` (log lines > 0, ``for: 2s``) and ``MixPushed``
  (``for: 1s``) fire once and must stay firing; ``MixSlow`` (``for: 15s``) is still pending at the first
  kills; ``MixFlap`` fires and resolves with the exporter's gauge, so notifications flow all the time;
  a recording rule;
- a webhook notifier: a receiver on loopback records every delivery with its idempotency key;
- with ``history``: before each restart, that many samples written offline with mlwatch's Writer (as an
  import while the daemon is down), so the restarted daemon's head passes its compaction threshold and
  compactions run while the next kill lands.

:meth:`MixedLoad.kill_and_restart` lets the load run for a random time, kills the daemon with SIGKILL
(sometimes while it is still starting), checks the database offline, restarts the daemon on the same
database and checks that it continues. :meth:`MixedLoad.finish` stops the load, lets the daemon catch
up, stops it cleanly and checks everything once more. What the checks find goes into :class:`Findings`:

- pushes (offline, through mlwatch's Reader on a read-only connection): every acknowledged value is
  stored *exactly once* at its receive time. A push writes its value at the receive time ``t`` together
  with ``push_time_seconds = t`` (resampling writes the value again later, with the older push time), so
  "exactly once" means: the series' timestamps are strictly increasing (no two samples at one time),
  exactly one sample holds the value at a timestamp equal to ``push_time_seconds * 1000`` at that
  timestamp, and that timestamp lies between the push's send and reply times. Pushes that failed (the
  daemon was killed under them) may be stored or not, but at most once. After each restart the same is
  checked for the ``mix_push_value`` series through the daemon's PromQL API (a ``[1d]`` range selector);
- log lines: the committed offset (``source_state``) covers n complete lines of the file, and the
  stored counters say exactly n lines and 1 + ... + n for ``seq`` (each line counted once); offsets never
  go back; after the final catch-up n is every line written;
- ``PRAGMA integrity_check`` is ``ok`` after every kill (read-only connection, before the restart) and
  at the end;
- alerts: after each restart ``MixSteady`` and ``MixPushed`` are still firing with their original
  ``activeAt`` (persisted state, no trip back to pending); ``MixSlow`` keeps its ``activeAt`` and is
  pending only while its ``for`` has not elapsed at the first evaluation after the restart (persisted
  for-timers); in the history no alert goes firing -> pending or firing -> firing, the steady ones and
  ``MixSlow`` have exactly pending, firing, and ``MixSlow`` fired no sooner than its ``for``;
- history (with ``history``): every sample written offline is stored exactly once (three random series
  after each kill, all at the end);
- the outbox (CONTRACT §6, at-least-once): every stored notification is delivered, the receiver got
  nothing that is not in the outbox, and a key delivered twice is reported as a duplicate — allowed
  only if a kill fell between the two deliveries (the crash-between-accept-and-update window); the
  last notification of each alert group tells the final state (``MixFlap`` resolved, the others firing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import numpy as np
import orjson
import requests

from mlwatch.model import Matcher, Sample, SeriesKey
from mlwatch.storage import alertstore
from mlwatch.storage.database import make_engine
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import WriteBatch, Writer
from tests.helpers import DaemonProcess, free_port, start_daemon, wait_http

LOG_SOURCE = "mixlog"
PUSH_JOB = "mixpush"
STEADY_ALERTS = ("MixSteady", "MixPushed")
SLOW_ALERT = "MixSlow"  # pending across the first kills: its for-timer must survive them
SLOW_FOR_S = 15.0
FLAP_ALERT = "MixFlap"
NEW_SERIES_EVERY = 4  # every fourth push also creates a new series
MAX_PROBLEMS = 60  # messages kept in Findings.problems
HISTORY_SERIES = 50
HISTORY_BATCH = 10_000  # samples per series and batch


# ---------------------------------------------------------------------------------------------- findings


@dataclass
class Findings:
    """What the checks found. The loss counters must stay 0; ``notification_dupes`` is reported (allowed
    when a kill fell between the deliveries, counted in ``dupes_without_crash`` otherwise)."""

    kills: int = 0
    startup_kills: int = 0
    acked_pushes: int = 0
    failed_pushes: int = 0
    failed_pushes_stored: int = 0
    lines_written: int = 0
    lines_committed: int = 0
    notifications: int = 0
    deliveries: int = 0
    notification_dupes: int = 0
    compactions: int = 0  # completed compaction cycles, as the daemon reported them just before each kill
    compaction_failures: int = 0
    chunks: int = 0  # compressed chunks in the database at the last offline check
    history_samples: int = 0
    flap_firings: int = 0  # MixFlap firing events in the alert history
    pending_kills: int = 0  # kills before MixSlow's for had elapsed: its for-timer had to survive them
    # losses and corruptions: any non-zero value is a failure
    missing_pushes: int = 0
    duplicate_pushes: int = 0
    misplaced_pushes: int = 0
    duplicate_timestamps: int = 0
    log_mismatches: int = 0
    log_offset_regressions: int = 0
    integrity_failures: int = 0
    alert_resets: int = 0
    notifications_undelivered: int = 0
    unknown_deliveries: int = 0
    dupes_without_crash: int = 0
    final_state_wrong: int = 0
    restart_failures: int = 0
    history_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    LOSSES = (
        "missing_pushes", "duplicate_pushes", "misplaced_pushes", "duplicate_timestamps", "log_mismatches",
        "log_offset_regressions", "integrity_failures", "alert_resets", "notifications_undelivered",
        "unknown_deliveries", "dupes_without_crash", "final_state_wrong", "restart_failures", "history_mismatches",
    )  # fmt: skip

    def problem(self, counter: str, message: str, n: int = 1) -> None:
        setattr(self, counter, getattr(self, counter) + n)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{counter}: {message}")

    @property
    def failed(self) -> bool:
        return any(getattr(self, name) for name in self.LOSSES)

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


# ---------------------------------------------------------------------------------------------- peers


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the daemon, by the harness) is expected: no traceback for that."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


class _Server:
    """A ThreadingHTTPServer on a free loopback port, served by a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"peer-{self.port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class Exporter:
    """The scrape target: a counter of scrapes and a gauge that toggles every ``flap_period_s``
    (or stays at ``frozen`` once set)."""

    def __init__(self, flap_period_s: float) -> None:
        self.flap_period_s = flap_period_s
        self.frozen: int | None = None
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(Handler)
        self.url = f"http://127.0.0.1:{self.server.port}/metrics"

    def flap(self) -> int:
        if self.frozen is not None:
            return self.frozen
        return int(time.time() / self.flap_period_s) % 2

    def exposition(self) -> str:
        self.scrapes += 1
        return (
            "# TYPE mix_exporter_scrapes_total counter\n"
            f"mix_exporter_scrapes_total {self.scrapes}\n"
            "# TYPE mix_flap gauge\n"
            f"mix_flap {self.flap()}\n"
        )


@dataclass(frozen=True)
class Delivery:
    key: str
    at: float
    status: str
    alertname: str


class WebhookReceiver:
    """Records every webhook delivery (idempotency key from the header and the payload) and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.mismatched_keys = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                key = str(body.get("mlwatch", {}).get("idempotencyKey", ""))
                names = sorted({a["labels"].get("alertname", "") for a in body.get("alerts", [])})
                with outer.lock:
                    if self.headers.get("Idempotency-Key") != key:
                        outer.mismatched_keys += 1
                    outer.deliveries.append(Delivery(key, time.time(), str(body.get("status")), ",".join(names)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(Handler)
        self.url = f"http://127.0.0.1:{self.server.port}/hook"

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


# ---------------------------------------------------------------------------------------------- load


class LogWriter(threading.Thread):
    """Appends complete JSONL lines ``{"seq": n}`` (n = 1, 2, ...) in small bursts until stopped."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        super().__init__(name="mix-log-writer", daemon=True)
        self.path = path
        self.rng = rng
        self.written = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        with self.path.open("ab") as f:
            while not self.stop_event.is_set():
                burst = self.rng.randint(1, 20)
                chunk = b"".join(b'{"seq": %d, "model": "m%d"}\n' % (self.written + i + 1, i % 3) for i in range(burst))
                f.write(chunk)
                f.flush()
                self.written += burst
                self.stop_event.wait(self.rng.uniform(0.005, 0.025))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


@dataclass(frozen=True)
class Ack:
    pusher: int
    value: int
    sent: float
    acked: float


class Pusher(threading.Thread):
    """Pushes unique values to its own group, PUT or POST at random; records 2xx replies as acks and every
    other outcome as a failed push (its value is never reused)."""

    def __init__(self, index: int, base_url: str, rng: random.Random, bulk: int = 0) -> None:
        super().__init__(name=f"mix-pusher-{index}", daemon=True)
        self.index = index
        self.bulk = bulk
        self.url = f"{base_url}/metrics/job/{PUSH_JOB}/pusher/{index}"
        self.rng = rng
        self.acks: list[Ack] = []
        self.failed: list[int] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def body(self, value: int) -> bytes:
        text = f"# TYPE mix_push_value gauge\nmix_push_value {value}\n"
        if value % NEW_SERIES_EVERY == 0:
            text += f'# TYPE mix_push_series gauge\nmix_push_series{{seq="{value}"}} {value}\n'
        if self.bulk:
            text += "# TYPE mix_push_bulk gauge\n" + "".join(
                f'mix_push_bulk{{i="{i}"}} {value}\n' for i in range(self.bulk)
            )
        return text.encode()

    def run(self) -> None:
        value = 0
        last_ack = 0.0
        with requests.Session() as session:
            while not self.stop_event.is_set():
                value += 1
                # Two pushes of one group never share a millisecond: the later would replace the earlier.
                while time.time() < last_ack + 0.002:
                    time.sleep(0.001)
                sent = time.time()
                try:
                    r = session.request(self.rng.choice(("PUT", "POST")), self.url, data=self.body(value), timeout=60)
                    ok = 200 <= r.status_code < 300
                except requests.RequestException:
                    ok = False
                acked = time.time()
                with self.lock:
                    if ok:
                        self.acks.append(Ack(self.index, value, sent, acked))
                        last_ack = acked
                    else:
                        self.failed.append(value)
                if not ok:
                    self.stop_event.wait(0.05)  # the daemon is down or busy: try again shortly
                else:
                    self.stop_event.wait(self.rng.uniform(0.0, 0.02))

    def snapshot(self) -> tuple[list[Ack], list[int]]:
        with self.lock:
            return list(self.acks), list(self.failed)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(90)


# ---------------------------------------------------------------------------------------------- the harness


def config_text(log_path: Path, scrape_url: str, hook_url: str) -> str:
    """Everything after the ``storage`` and ``server`` sections that :func:`tests.helpers.start_daemon` writes."""
    return f"""evaluation_interval: 1s
push: {{sample_interval: 2s}}
sources:
  - name: mixscrape
    type: http
    url: {scrape_url}
    interval: 1s
  - name: {LOG_SOURCE}
    type: log
    path: {log_path}
    interval: 200ms
    metrics:
      - {{name: mix_log_lines_total, type: counter}}
      - {{name: mix_log_seq_total, type: counter, field: seq}}
rules:
  - alert: MixSteady
    expr: mix_log_lines_total > 0
    for: 2s
  - alert: MixPushed
    expr: mix_push_value > 0
    for: 1s
  - alert: {SLOW_ALERT}
    expr: mix_log_lines_total > 0
    for: {SLOW_FOR_S:g}s
  - alert: {FLAP_ALERT}
    expr: mix_flap > 0
  - record: mix:push_value:sum
    expr: sum(mix_push_value)
alerting:
  staleness_alerts: {{enabled: false}}
notifiers:
  - {{name: hook, type: webhook, url: {hook_url}}}
routes:
  - {{notifiers: [hook], group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
"""


def integrity(db_path: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


@contextlib.contextmanager
def _reader(db_path: Path) -> Iterator[Reader]:
    engine = make_engine(f"sqlite:///{db_path}", readonly=True)
    try:
        yield Reader(engine)
    finally:
        engine.dispose()


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


class MixedLoad:
    """The harness: ``start()``, then ``kill_and_restart()`` as often as wanted, then ``finish()``.
    Use it as a context manager so every process and thread it started is stopped."""

    def __init__(
        self,
        workdir: Path,
        *,
        seed: int = 0,
        pushers: int = 3,
        bulk: int = 0,
        history: int = 0,
        flap_period_s: float = 2.5,
        ready_timeout: float = 120.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = workdir
        self.rng = random.Random(seed)  # kill moments and load
        self.sample_rng = random.Random(seed + 1)  # which older acks a check samples
        self.n_pushers = pushers
        self.bulk = bulk  # extra series per push: more samples to store and compact
        # Samples written offline before each restart (as by an import while the daemon is down): the
        # restarted daemon's head grows past its compaction threshold, so compactions run while kills land.
        self.history = history
        self.history_n = 0  # samples per history series written and acknowledged so far
        self.history_t0 = int(time.time() * 1000) - 3_000_000
        self.flap_period_s = flap_period_s
        self.ready_timeout = ready_timeout
        self.say = say or (lambda _msg: None)
        self.findings = Findings()
        self.log_path = workdir / "mix.jsonl"
        self.port = free_port()
        self.daemon: DaemonProcess | None = None
        self.exporter: Exporter | None = None
        self.receiver: WebhookReceiver | None = None
        self.log_writer: LogWriter | None = None
        self.pushers: list[Pusher] = []
        self.kill_times: list[float] = []
        self.steady: dict[str, str] = {}  # labels (JSON) of each steady alert -> its activeAt
        self._offset = 0  # the committed log offset seen after the previous kill
        self._checked_series = 0  # mix_push_series acks already checked (later checks sample them)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.dir / "mlwatch.db"

    def start(self) -> None:
        """Start the peers, the daemon and the load; return once the steady alerts fire."""
        self.exporter = Exporter(self.flap_period_s)
        self.receiver = WebhookReceiver()
        self.log_path.write_bytes(b"")
        text = config_text(self.log_path, self.exporter.url, self.receiver.url)
        self.daemon = start_daemon(self.dir, text, port=self.port, wait=False)
        self._wait_ready()
        self.log_writer = LogWriter(self.log_path, random.Random(self.rng.random()))
        self.log_writer.start()
        self.pushers = [Pusher(i, self.url, random.Random(self.rng.random()), self.bulk) for i in range(self.n_pushers)]
        for p in self.pushers:
            p.start()
        self.steady = self._wait_steady_firing()
        self.say(f"steady alerts firing: {len(self.steady)}")

    def close(self) -> None:
        for p in self.pushers:
            p.stop_event.set()
        if self.log_writer is not None:
            self.log_writer.stop_event.set()
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.proc.kill()
            self.daemon.proc.wait(30)
        for p in self.pushers:
            p.join(90)
        if self.log_writer is not None:
            self.log_writer.join(10)
        for peer in (self.exporter, self.receiver):
            if peer is not None:
                peer.server.close()

    def _spawn(self) -> DaemonProcess:
        self.daemon = start_daemon(self.dir, port=self.port, wait=False)  # the config file is kept
        return self.daemon

    def _wait_ready(self) -> None:
        assert self.daemon is not None
        try:
            wait_http(f"{self.url}/-/ready", timeout=self.ready_timeout, proc=self.daemon.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"the daemon did not become ready: {exc}\n{self.daemon.stderr()[-4000:]}") from None

    def _own_metrics(self) -> None:
        """Compactions the running daemon completed (its own metrics), added up over its lifetimes."""
        try:
            text = requests.get(f"{self.url}/metrics", timeout=5).text
        except requests.RequestException:
            return
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "mlwatch_storage_compactions_total":
                self.findings.compactions += int(float(value))
            elif name == "mlwatch_storage_compaction_failures_total":
                self.findings.compaction_failures += int(float(value))

    def _kill(self) -> None:
        assert self.daemon is not None
        self.kill_times.append(time.time())
        os.kill(self.daemon.proc.pid, signal.SIGKILL)
        self.daemon.proc.wait(30)
        self.findings.kills += 1
        slow = [t for labels, t in self.steady.items() if SLOW_ALERT in labels]
        if slow and self.kill_times[-1] < _parse_time(slow[0]) + SLOW_FOR_S:
            self.findings.pending_kills += 1
        self.say(f"kill {self.findings.kills} at {self.kill_times[-1]:.3f}")

    # ------------------------------------------------------------------ one cycle
    def kill_and_restart(self, run_s: tuple[float, float] = (0.5, 4.0), startup_kill_chance: float = 0.1) -> None:
        """Let the load run for a random time in ``run_s``, kill -9, check offline, restart, check online.
        With ``startup_kill_chance`` the restarted daemon is killed again while it starts (and restarted)."""
        time.sleep(self.rng.uniform(*run_s))
        self._own_metrics()
        self._kill()
        self.check_offline()
        if self.rng.random() < startup_kill_chance:
            self._spawn()
            time.sleep(self.rng.uniform(0.05, 1.5))  # imports, migrations, head rebuild, sources starting
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self._kill()
                self.findings.startup_kills += 1
                self.check_offline()
        self._append_history()
        restarted = time.time()
        self._spawn()
        try:
            self._wait_ready()
        except RuntimeError as exc:
            self.findings.problem("restart_failures", str(exc)[-2000:])
            raise
        self.say(f"ready again after {time.time() - restarted:.1f}s")
        self.check_online(restarted)

    # ------------------------------------------------------------------ the end
    def finish(self, timeout: float = 120.0) -> Findings:
        """Stop the load, let the daemon catch up and deliver, stop it cleanly, check everything."""
        for p in self.pushers:
            p.stop()
        assert self.log_writer is not None and self.exporter is not None and self.daemon is not None
        self.log_writer.stop()
        self.exporter.frozen = 0  # MixFlap resolves for good
        written = self.log_writer.written
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._caught_up(written):
            time.sleep(0.25)
        self._own_metrics()
        code = self.daemon.stop(signal.SIGTERM, timeout=60)
        if code != 0:
            self.findings.problem("restart_failures", f"the daemon exited with {code} on SIGTERM")
        self.check_offline(final=True)
        self._check_alert_history()
        return self.findings

    def _caught_up(self, written: int) -> bool:
        """All lines counted, no notification pending, the last MixFlap notification says resolved and
        MixSlow's says firing."""
        with _reader(self.db_path) as reader:
            if _last_value(reader, "mix_log_lines_total") != written:
                return False
        conn = alertstore.open_direct(self.db_path, readonly=True)
        try:
            rows = conn.execute("SELECT status, payload FROM notifications ORDER BY id").fetchall()
        finally:
            conn.close()
        if any(status == "pending" for status, _ in rows):
            return False
        last = _last_by_alert([json.loads(p) for _, p in rows])
        return last.get(FLAP_ALERT) in (None, "resolved") and last.get(SLOW_ALERT) == "firing"

    # ------------------------------------------------------------------ checks
    def check_offline(self, *, final: bool = False) -> None:
        """The daemon is not running: integrity, pushes, log offsets and counters, the outbox (final only)."""
        ok = integrity(self.db_path)
        if ok != "ok":
            self.findings.problem("integrity_failures", ok[:500])
            return  # reading a damaged database further proves nothing
        with _reader(self.db_path) as reader:
            self._check_pushes(reader, final)
            self._check_log(reader, final)
            self._check_history_samples(reader, final)
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            self.findings.chunks = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        finally:
            conn.close()
        if final:
            self._check_outbox()

    def _check_pushes(self, reader: Reader, final: bool) -> None:
        f = self.findings
        all_acks: list[Ack] = []
        failed_stored = 0
        for p in self.pushers:
            acks, failed = p.snapshot()
            all_acks += acks
            stored = self._stored_pushes(reader, p.index)
            self._check_bulk(reader, p.index, acks, {v: times[0] for v, times in stored.items()})
            for ack in acks:
                times = stored.pop(ack.value, [])
                if not times:
                    f.problem("missing_pushes", f"pusher {p.index} value {ack.value} acked at {ack.acked:.3f}")
                    continue
                if len(times) > 1:
                    f.problem("duplicate_pushes", f"pusher {p.index} value {ack.value} stored at {times}")
                if not ack.sent - 0.01 <= times[0] / 1000 <= ack.acked + 0.01:
                    f.problem(
                        "misplaced_pushes",
                        f"pusher {p.index} value {ack.value} at {times[0]} outside [{ack.sent:.3f}, {ack.acked:.3f}]",
                    )
            for value in failed:
                times = stored.pop(value, [])
                failed_stored += bool(times)
                if len(times) > 1:
                    f.problem("duplicate_pushes", f"pusher {p.index} unacked value {value} stored at {times}")
            for value, times in stored.items():  # neither acked nor failed: in flight right now (final: none)
                if final or len(times) > 1:
                    f.problem("duplicate_pushes", f"pusher {p.index} value {value} never pushed, stored at {times}")
        f.acked_pushes = len(all_acks)
        f.failed_pushes = sum(len(p.snapshot()[1]) for p in self.pushers)
        f.failed_pushes_stored = failed_stored
        self._check_new_series(reader, all_acks, final)

    def _stored_pushes(self, reader: Reader, index: int) -> dict[int, list[int]]:
        """value -> timestamps of the samples a push wrote (not resampling) in pusher ``index``'s series."""
        sel = [Matcher.make("pusher", "=", str(index)), Matcher.make("job", "=", PUSH_JOB)]
        values = reader.series([Matcher.make("__name__", "=", "mix_push_value"), *sel])
        times = reader.series([Matcher.make("__name__", "=", "push_time_seconds"), *sel])
        if not values:
            return {}
        if len(values) != 1 or len(times) != 1:
            raise AssertionError(f"expected one series each, got {values} and {times}")
        data = reader.read_many([values[0].id, times[0].id], 0, 2**62)
        ts, vals = data[values[0].id]
        pts, pvals = data[times[0].id]
        for name, t in (("mix_push_value", ts), ("push_time_seconds", pts)):
            dups = int(np.count_nonzero(np.diff(t) <= 0))
            if dups:
                self.findings.problem("duplicate_timestamps", f"{name}{{pusher={index}}}: {dups} not increasing")
        push_time = dict(zip(pts.tolist(), pvals.tolist(), strict=True))
        out: dict[int, list[int]] = {}
        for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
            p = push_time.get(t)
            if np.isfinite(v) and p is not None and np.isfinite(p) and int(p * 1000) == t:
                out.setdefault(int(v), []).append(t)
        return out

    def _check_bulk(self, reader: Reader, index: int, acks: list[Ack], push_ts: dict[int, int]) -> None:
        """With ``bulk``: every ``mix_push_bulk`` series of pusher ``index`` holds the value of the last
        ten and ten random older acked pushes at their push times."""
        if not self.bulk or not acks:
            return
        chosen = acks[-10:] + self.sample_rng.sample(acks[:-10], min(10, max(0, len(acks) - 10)))
        sel = [Matcher.make("__name__", "=", "mix_push_bulk"), Matcher.make("pusher", "=", str(index))]
        infos = reader.series(sel)
        if len(infos) != self.bulk:
            self.findings.problem("missing_pushes", f"pusher {index}: {len(infos)} bulk series, not {self.bulk}")
        data = reader.read_many([i.id for i in infos], 0, 2**62)
        for ack in chosen:
            t = push_ts.get(ack.value)
            if t is None:
                continue  # reported as missing already
            for info in infos:
                ts, vals = data[info.id]
                k = int(np.searchsorted(ts, t))
                if k >= len(ts) or ts[k] != t or vals[k] != ack.value:
                    self.findings.problem("missing_pushes", f"{info.key}: no {ack.value} at {t}")
                    break

    def _check_new_series(self, reader: Reader, acks: list[Ack], final: bool) -> None:
        """Acked pushes that created ``mix_push_series{seq=v}``: the series exists with v at the push time.
        New acks are all checked; older ones all at the end, else a random sample of 200."""
        wanted = [a for a in acks if a.value % NEW_SERIES_EVERY == 0]
        new, old = wanted[self._checked_series :], wanted[: self._checked_series]
        if not final:
            old = self.sample_rng.sample(old, min(200, len(old)))
            self._checked_series = len(wanted)
        todo = new + old
        if not todo:
            return
        infos = {}
        for info in reader.series([Matcher.make("__name__", "=", "mix_push_series")]):
            labels = info.key.label_dict()
            infos[(int(labels["pusher"]), int(labels["seq"]))] = info.id
        present = {a: infos.get((a.pusher, a.value)) for a in todo}
        data = reader.read_many([sid for sid in present.values() if sid is not None], 0, 2**62)
        for ack, sid in present.items():
            if sid is None:
                self.findings.problem("missing_pushes", f"series mix_push_series{{seq={ack.value}}} absent")
                continue
            ts, vals = data[sid]
            at = ts[(ts >= int(ack.sent * 1000) - 10) & (ts <= int(ack.acked * 1000) + 10)]
            if not np.any(vals[np.isin(ts, at)] == ack.value):
                self.findings.problem("missing_pushes", f"mix_push_series{{seq={ack.value}}}: no sample at push time")

    def _check_log(self, reader: Reader, final: bool) -> None:
        f = self.findings
        assert self.log_writer is not None
        raw = reader.state(f"log/{LOG_SOURCE}")
        doc = orjson.loads(raw) if raw else {}
        st = os.stat(self.log_path)
        offset = 0
        for fs in (doc.get("tail") or {}).get("files", []):
            if (int(fs["dev"]), int(fs["ino"])) == (st.st_dev, st.st_ino):
                offset = int(fs["offset"])
        if offset < self._offset:
            f.problem("log_offset_regressions", f"committed offset went back from {self._offset} to {offset}")
        self._offset = offset
        with self.log_path.open("rb") as fh:
            head = fh.read(offset)
        n = head.count(b"\n")
        f.lines_committed = n
        f.lines_written = self.log_writer.written
        if offset and not head.endswith(b"\n"):
            f.problem("log_mismatches", f"committed offset {offset} is not at a line end")
        expected = {
            "mix_log_lines_total": n,
            "mix_log_seq_total": n * (n + 1) // 2,
            "mlwatch_log_lines_total": n,
            "state lines": n,
        }
        got = {name: _last_value(reader, name) for name in expected if name != "state lines"}
        got["state lines"] = int(doc["lines"]) if "lines" in doc else None
        if final and n != f.lines_written:
            f.problem("log_mismatches", f"after the catch-up {n} lines committed of {f.lines_written} written")
        for name, want in expected.items():
            if got[name] != want and not (n == 0 and got[name] is None):  # nothing committed yet: no series
                f.problem("log_mismatches", f"{name} = {got[name]}, committed offset covers {n} lines")

    def _check_outbox(self) -> None:
        f = self.findings
        assert self.receiver is not None
        conn = alertstore.open_direct(self.db_path, readonly=True)
        try:
            rows = conn.execute("SELECT key, status, payload FROM notifications ORDER BY id").fetchall()
        finally:
            conn.close()
        deliveries = self.receiver.snapshot()
        got = Counter(d.key for d in deliveries)
        f.notifications = len(rows)
        f.deliveries = len(deliveries)
        keys = {k for k, _, _ in rows}
        for key, status, _ in rows:
            if status != "delivered" or key not in got:
                f.problem("notifications_undelivered", f"{key[:12]} is {status}, received {got[key]} times")
        for key in set(got) - keys:
            f.problem("unknown_deliveries", f"{key[:12]} received but not in the outbox")
        if self.receiver.mismatched_keys:
            f.problem("unknown_deliveries", f"{self.receiver.mismatched_keys} header/payload key mismatches")
        for key, n in got.items():
            if n < 2:
                continue
            f.notification_dupes += n - 1
            at = sorted(d.at for d in deliveries if d.key == key)
            for a, b in itertools.pairwise(at):
                if not any(a <= k <= b for k in self.kill_times):
                    f.problem("dupes_without_crash", f"{key[:12]} delivered at {a:.3f} and {b:.3f}, no kill between")
        last = _last_by_alert([json.loads(p) for _, _, p in rows])
        want = {FLAP_ALERT: "resolved", SLOW_ALERT: "firing", **{name: "firing" for name in STEADY_ALERTS}}
        for name, status in want.items():
            if name == FLAP_ALERT and name not in last:
                continue  # never notified (its firings all fell into downtime): nothing to end
            if last.get(name) != status:
                f.problem("final_state_wrong", f"the last notification of {name} says {last.get(name)}, not {status}")

    def _check_alert_history(self) -> None:
        """No alert goes back to pending or fires twice without resolving; steady ones fired exactly once."""
        conn = alertstore.open_direct(self.db_path, readonly=True)
        try:
            events = alertstore.load_events(conn, limit=10**7)
        finally:
            conn.close()
        by_fp: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        times: dict[str, list[float]] = {}
        for e in events:
            self.findings.flap_firings += e.alertname == FLAP_ALERT and e.event == "firing"
            by_fp.setdefault(e.fingerprint, []).append(e.event)
            times.setdefault(e.fingerprint, []).append(e.ts)
            names[e.fingerprint] = e.alertname
        for fp, seq in by_fp.items():
            for prev, cur in itertools.pairwise(seq):
                if prev == "firing" and cur != "resolved" or prev == cur:
                    self.findings.problem("alert_resets", f"{names[fp]} {fp}: {prev} then {cur} in {seq[:12]}")
                    break
            if names[fp] in (*STEADY_ALERTS, SLOW_ALERT) and seq != ["pending", "firing"]:
                self.findings.problem("alert_resets", f"{names[fp]} history {seq[:12]}, expected pending, firing")
            elif names[fp] == SLOW_ALERT and times[fp][1] - times[fp][0] < SLOW_FOR_S - 0.001:
                self.findings.problem(
                    "alert_resets", f"{SLOW_ALERT} fired {times[fp][1] - times[fp][0]:.3f}s after pending"
                )

    def _append_history(self) -> None:
        """With ``history``: append that many samples (over HISTORY_SERIES series, 1 ms apart, value =
        index) with mlwatch's Writer while the daemon is down."""
        per_series = self.history // HISTORY_SERIES
        if per_series <= 0:
            return
        engine = make_engine(f"sqlite:///{self.db_path}")
        writer = Writer(engine)
        writer.start()
        try:
            keys = [SeriesKey.of("mix_history", {"i": str(i)}) for i in range(HISTORY_SERIES)]
            end = self.history_n + per_series
            for lo in range(self.history_n, end, HISTORY_BATCH):
                hi = min(lo + HISTORY_BATCH, end)
                t0 = self.history_t0
                batch = WriteBatch([Sample(k, t0 + j, float(j)) for k in keys for j in range(lo, hi)])
                writer.write_sync(batch, timeout=300)
                self.history_n = hi
                self.findings.history_samples = hi * HISTORY_SERIES
        finally:
            writer.stop()
            engine.dispose()

    def _check_history_samples(self, reader: Reader, final: bool) -> None:
        """Every history sample is stored exactly once: all series at the end, three random ones else."""
        if not self.history_n:
            return
        infos = reader.series([Matcher.make("__name__", "=", "mix_history")])
        if len(infos) != HISTORY_SERIES:
            self.findings.problem("history_mismatches", f"{len(infos)} history series, not {HISTORY_SERIES}")
        chosen = infos if final else self.sample_rng.sample(infos, min(3, len(infos)))
        want = np.arange(self.history_n)
        for info in chosen:
            ts, vals = reader.read_range(info.id, 0, 2**62)
            if len(ts) != len(want) or not (np.array_equal(ts - self.history_t0, want) and np.array_equal(vals, want)):
                self.findings.problem("history_mismatches", f"{info.key}: {len(ts)} samples, {self.history_n} written")

    def check_online(self, restarted: float, timeout: float = 60.0) -> None:
        """After a restart: the steady alerts still fire since their first activeAt; acked pushes answer
        through the PromQL API."""
        deadline = time.monotonic() + timeout
        alerts: list[dict[str, Any]] = []
        evaluated_at = 0.0
        while time.monotonic() < deadline:
            rules = self._get("/api/v1/rules")["groups"]
            evaluated = [g["lastEvaluation"] for g in rules if g["name"] == "rules"]
            if evaluated and not evaluated[0].startswith("0001") and _parse_time(evaluated[0]) > restarted:
                evaluated_at = _parse_time(evaluated[0])
                alerts = self._get("/api/v1/alerts")["alerts"]  # from that evaluation or a later one
                break
            time.sleep(0.1)
        else:
            self.findings.problem("alert_resets", f"no rule evaluation within {timeout}s of the restart")
            return
        now = {json.dumps(a["labels"], sort_keys=True): a for a in alerts}
        for labels, active_at in self.steady.items():
            a = now.get(labels)
            ok = (
                a is not None
                and a["activeAt"] == active_at
                and (  # pending only while its for has not elapsed at the evaluation after the restart
                    a["state"] == "firing"
                    or SLOW_ALERT in labels
                    and evaluated_at - _parse_time(active_at) < SLOW_FOR_S + 0.01
                )
            )
            if not ok:
                seen = None if a is None else (a["state"], a["activeAt"])
                self.findings.problem("alert_resets", f"{labels}: {seen} after the restart, active since {active_at}")
        self._check_pushes_online()

    def _check_pushes_online(self) -> None:
        acked = {p.index: p.snapshot()[0] for p in self.pushers}  # before the query: later acks may miss it
        result = self._get("/api/v1/query", query="mix_push_value[1d]", time=str(time.time() + 1))["result"]
        by_pusher = {int(r["metric"]["pusher"]): r["values"] for r in result}
        for p in self.pushers:
            acks = acked[p.index]
            values = by_pusher.get(p.index, [])
            stamps = [t for t, _ in values]
            if len(stamps) != len(set(stamps)):
                self.findings.problem("duplicate_timestamps", f"query API: pusher {p.index} repeats timestamps")
            have = {(round(t * 1000), float(v)) for t, v in values}
            for ack in acks:
                if not any((t, float(ack.value)) in have for t in _ms_range(ack)):
                    self.findings.problem("missing_pushes", f"query API: pusher {p.index} value {ack.value} absent")

    def _get(self, path: str, **params: str) -> Any:
        r = requests.get(f"{self.url}{path}", params=params, timeout=60)
        r.raise_for_status()
        return r.json()["data"]

    def _wait_steady_firing(self, timeout: float = 90.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alerts = self._get("/api/v1/alerts")["alerts"]
            firing = {
                json.dumps(a["labels"], sort_keys=True): a["activeAt"]
                for a in alerts
                if a["labels"]["alertname"] in STEADY_ALERTS
                and a["state"] == "firing"
                or a["labels"]["alertname"] == SLOW_ALERT
            }
            if len(firing) == 2 + self.n_pushers:
                return firing
            time.sleep(0.2)
        raise TimeoutError(f"the steady alerts did not all fire within {timeout}s")


def _ms_range(ack: Ack) -> range:
    return range(int(ack.sent * 1000) - 10, int(ack.acked * 1000) + 11)


def _last_value(reader: Reader, name: str) -> int | None:
    """The newest stored value of the one series named ``name`` (None if it does not exist)."""
    infos = reader.series([Matcher.make("__name__", "=", name)])
    if not infos:
        return None
    if len(infos) != 1:
        raise AssertionError(f"expected one {name} series, got {[i.key for i in infos]}")
    _, vals = reader.read_range(infos[0].id, 0, 2**62)
    return int(vals[-1]) if len(vals) else None


def _last_by_alert(payloads: list[dict[str, Any]]) -> dict[str, str]:
    """The status of the newest notification of each alertname group."""
    last: dict[str, str] = {}
    for p in payloads:
        name = p.get("groupLabels", {}).get("alertname")
        if name:
            last[name] = p["status"]
    return last


def run(
    workdir: Path,
    kills: int,
    *,
    seed: int,
    run_s: tuple[float, float] = (0.5, 4.0),
    startup_kill_chance: float = 0.1,
    pushers: int = 3,
    bulk: int = 0,
    history: int = 0,
    on_cycle: Callable[[int, Findings], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> Findings:
    """Start, kill and restart ``kills`` times, finish; the findings."""
    with MixedLoad(workdir, seed=seed, pushers=pushers, bulk=bulk, history=history, say=say) as load:
        load.start()
        for i in range(kills):
            load.kill_and_restart(run_s, startup_kill_chance)
            if on_cycle is not None:
                on_cycle(i + 1, load.findings)
        return load.finish()


__all__ = ["Ack", "Findings", "MixedLoad", "config_text", "integrity", "run"]
