"""Notifier outages (CONTRACT §6): a real webhook receiver (aiohttp) and a real SMTP server (aiosmtpd) on
loopback are down -- port closed, or up but answering 503 / SMTP 451 -- for several retry periods while
alerts fire and resolve; when they come back, every notification is delivered and none twice.

The real AlertingService runs on a real SQLite file with an injected clock: each ``tick`` is one second of
alerting time, so the outbox's exponential backoff (2 s, 4 s, 8 s ... with jitter) is crossed many times
in a few real seconds, while every delivery attempt is a real connection to the receivers.
"""

from __future__ import annotations

import email
import itertools
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import policy
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from mlwatch.config import parse_config
from mlwatch.notify.service import AlertingService
from mlwatch.storage import alertstore
from mlwatch.storage.writer import Writer
from tests.helpers import free_port
from tests.notify.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def writer(engine: Engine, clock: Clock) -> Iterator[Writer]:
    """The single writer on a real, migrated SQLite file (tests/conftest.py's ``engine``)."""
    w = Writer(engine, clock=clock)
    w.start()
    yield w
    w.stop()


# ---------------------------------------------------------------------------- receivers
@dataclass
class Hook:
    """A webhook receiver that can be stopped (port closed) and restarted on the same port, or told to
    answer 503 (``failing``). Records each accepted body with its Idempotency-Key header."""

    port: int = field(default_factory=free_port)
    failing: bool = False
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.failing:
            self.refused += 1
            return web.Response(status=503, text="receiver overloaded")
        self.accepted.append((request.headers["Idempotency-Key"], body))
        return web.Response(text="ok")

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None


class Mailbox:
    """An aiosmtpd handler: keeps each message, or answers 451 (a transient failure) when ``failing``."""

    def __init__(self) -> None:
        self.failing = False
        self.refused = 0
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.failing:
            self.refused += 1
            return "451 4.3.0 mailbox temporarily unavailable"
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class Smtp:
    box: Mailbox = field(default_factory=Mailbox)
    port: int = field(default_factory=free_port)
    ctl: Controller | None = None

    def up(self) -> None:
        self.ctl = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    def down(self) -> None:
        assert self.ctl is not None
        self.ctl.stop()
        self.ctl = None


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.up()
    yield h
    if h.runner is not None:
        await h.down()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    s = Smtp()
    s.up()
    yield s
    if s.ctl is not None:
        s.down()


# ---------------------------------------------------------------------------- alerts
class Models:
    """``ai_model_accuracy < 0.9`` over models whose accuracy the test sets."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}

    def __call__(self, expr: str, t: float) -> list[tuple[dict[str, str], float]]:
        if expr.endswith("_samples"):  # the rule manager's look-up of the sample count
            return []
        assert expr == "ai_model_accuracy < 0.9", expr
        return [({"__name__": "ai_model_accuracy", "model": m}, v) for m, v in sorted(self.acc.items()) if v < 0.9]


def _config(hook: Hook, smtp: Smtp) -> Any:
    return parse_config(f"""
alerting: {{staleness_alerts: {{enabled: false}}, outbox_expiry: 2h}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    for: 10s
notifiers:
  - {{name: hook, type: webhook, url: {hook.url}, timeout: 2s}}
  - name: mail
    type: email
    smtp: {{host: 127.0.0.1, port: {smtp.port}, timeout: 2s}}
    from: mlwatch@example.com
    to: [oncall@example.com]
routes:
  - {{notifiers: [hook, mail], group_by: [alertname, model], group_wait: 5s, group_interval: 10s,
     repeat_interval: 24h}}
""")


class Run:
    def __init__(self, svc: AlertingService, clock: Clock, models: Models) -> None:
        self.svc, self.clock, self.models = svc, clock, models

    async def seconds(self, n: int) -> None:
        """``n`` seconds of alerting time: a delivery tick every second, an evaluation every 5."""
        for _ in range(n):
            self.clock.t += 1
            if int(self.clock.t) % 5 == 0:
                await self.svc.evaluate(t=self.clock.t)
            await self.svc.tick(self.clock.t)


def _db(writer: Writer) -> sqlite3.Connection:
    return alertstore.open_direct(str(writer._engine.url).removeprefix("sqlite:///"), readonly=True)


def _pending(writer: Writer) -> int:
    return sum(n.status == "pending" for n in alertstore.load_notifications(_db(writer), limit=100_000))


async def _outage_then_recovery(
    writer: Writer, clock: Clock, hook: Hook, smtp: Smtp, *, closed: bool
) -> list[alertstore.NotificationRow]:
    """Alerts fire and resolve through an outage of both receivers (ports closed, or answering 503/451)
    that lasts several retry periods; then the receivers come back. Returns the outbox."""
    models = Models()
    svc = AlertingService(_config(hook, smtp), query=models, writer=writer, clock=clock, rng=random.Random(1))
    run = Run(svc, clock, models)
    models.acc = {f"m{i}": 0.95 for i in range(5)}
    await run.seconds(20)
    models.acc["m0"] = 0.5  # fires while the receivers are up: delivered at once
    await run.seconds(30)
    assert len(hook.accepted) == 1 and len(smtp.box.messages) == 1

    if closed:
        await hook.down()
        smtp.down()
    else:
        hook.failing = smtp.box.failing = True
    models.acc.update(m1=0.5, m2=0.6)
    await run.seconds(60)
    models.acc["m1"] = 0.95  # m1 resolves during the outage
    models.acc["m3"] = 0.4
    await run.seconds(60)
    models.acc["m3"] = 0.95  # m3 fires and resolves entirely within the outage
    models.acc["m0"] = 0.95  # m0 (notified before the outage) resolves during it
    await run.seconds(60)
    models.acc["m4"] = 0.3
    await run.seconds(120)  # 300 s down in all: the first failures have backed off 7 times
    assert len(hook.accepted) == 1 and len(smtp.box.messages) == 1
    if closed:
        await hook.up()
        smtp.up()
    else:
        hook.failing = smtp.box.failing = False
        assert hook.refused >= 10 and smtp.box.refused >= 10

    for _ in range(120):  # until the outbox is drained (the longest backoff is ~256 s plus jitter)
        await run.seconds(10)
        if _pending(writer) == 0:
            break
    await run.seconds(30)  # nothing more arrives once drained
    return alertstore.load_notifications(_db(writer), limit=100_000)


def _check_exactly_once(writer: Writer, hook: Hook, smtp: Smtp, outbox: list[alertstore.NotificationRow]) -> None:
    by_notifier = {name: [n for n in outbox if n.notifier == name] for name in ("hook", "mail")}
    assert all(n.status == "delivered" for n in outbox), [(n.key[:8], n.status, n.last_error) for n in outbox]
    # firing m0..m4 (5) and resolved m0, m1, m3 (3), to each notifier
    assert len(by_notifier["hook"]) == len(by_notifier["mail"]) == 8

    hook_keys = [k for k, _ in hook.accepted]
    assert len(set(hook_keys)) == len(hook_keys) == 8  # every one delivered, none twice
    assert set(hook_keys) == {n.key for n in by_notifier["hook"]}
    assert all(body["mlwatch"]["idempotencyKey"] == k for k, body in hook.accepted)
    got = sorted((b["alerts"][0]["labels"]["model"], b["status"]) for _, b in hook.accepted)
    want = sorted(
        [(f"m{i}", "firing") for i in range(5)] + [("m0", "resolved"), ("m1", "resolved"), ("m3", "resolved")]
    )
    assert got == want
    # ... and in the order they were made: never a group's "resolved" before the "firing" it ends (after an
    # outage the newer notification has backed off less and falls due first).
    order = [(b["alerts"][0]["labels"]["model"], b["status"]) for _, b in hook.accepted]
    assert all(order.index((m, "firing")) < order.index((m, "resolved")) for m in ("m0", "m1", "m3")), order
    mail = {n.key: n.payload for n in by_notifier["mail"]}
    sent = [mail[str(m["X-Mlwatch-Idempotency-Key"])] for m in smtp.box.messages]
    for m in ("m0", "m1", "m3"):
        mine = [p["mlwatch"]["subject"][:9] for p in sent if p["alerts"][0]["labels"]["model"] == m]
        assert mine == ["[FIRING:1", "[RESOLVED"], (m, mine)

    ids = [m["Message-ID"] for m in smtp.box.messages]
    assert len(set(ids)) == len(ids) == 8
    assert set(ids) == {f"<{n.key}@mlwatch>" for n in by_notifier["mail"]}

    # The outage lasted several retry periods: each notification made during it failed again and
    # again, further and further apart, then got through exactly once.
    conn = _db(writer)
    during = [n for n in outbox if n.attempts > 1]
    # firing m1..m4 and resolved m0 to both notifiers; resolved m1 and m3 waited for their firing ones
    assert len(during) == 10
    held = [n for n in outbox if n.attempts == 1 and n.payload["status"] == "resolved"]
    assert len(held) == 4
    for n in held:
        (first,) = [o for o in outbox if o.notifier == n.notifier and o.group_key == n.group_key and o.id < n.id]
        assert first.delivered_at is not None and n.delivered_at is not None and first.delivered_at < n.delivered_at
    for n in during:
        attempts = alertstore.load_attempts(conn, n.id)
        oks = [ok for _, ok, _, _ in attempts]
        assert oks[-1] and not any(oks[:-1]) and len(oks) >= 4, (n.notifier, oks)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
        assert gaps[-1] > gaps[0]  # backing off


async def test_receivers_closed_for_several_retry_periods(writer: Writer, clock: Clock, hook: Hook, smtp: Smtp) -> None:
    outbox = await _outage_then_recovery(writer, clock, hook, smtp, closed=True)
    _check_exactly_once(writer, hook, smtp, outbox)
    errors = {n.notifier: alertstore.load_attempts(_db(writer), n.id)[0][2] for n in outbox if n.attempts > 1}
    assert "Connect" in errors["hook"] and f"127.0.0.1:{hook.port}" in errors["hook"]
    assert "ConnectionRefusedError" in errors["mail"] and f"email via 127.0.0.1:{smtp.port}" in errors["mail"]


async def test_receivers_answering_503_and_451(writer: Writer, clock: Clock, hook: Hook, smtp: Smtp) -> None:
    outbox = await _outage_then_recovery(writer, clock, hook, smtp, closed=False)
    _check_exactly_once(writer, hook, smtp, outbox)
    errors = {n.notifier: alertstore.load_attempts(_db(writer), n.id)[0][2] for n in outbox if n.attempts > 1}
    assert "answered 503: receiver overloaded" in errors["hook"]
    assert "451" in errors["mail"] and "temporarily unavailable" in errors["mail"]
