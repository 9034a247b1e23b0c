"""Real receivers on loopback (an aiohttp webhook server, an aiosmtpd SMTP sink) and a writer on a temp DB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from mlwatch.storage.writer import Writer
from tests.helpers import free_port


@dataclass
class Clock:
    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Receiver:
    """A webhook receiver: records bodies; ``fail`` answers 503 to that many requests first."""

    url: str = ""
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail: int = 0
    hang: float = 0.0
    echo_auth: bool = False  # failures quote the request's Authorization header (a careless receiver)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        if rec.hang:
            await asyncio.sleep(rec.hang)
        if rec.fail > 0:
            rec.fail -= 1
            echo = f": bad auth: {request.headers.get('Authorization')}" if rec.echo_auth else ""
            return web.Response(status=503, text=f"receiver down{echo}")
        rec.bodies.append(await request.json())
        rec.headers.append(dict(request.headers))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def writer(engine: Engine, clock: Clock) -> Iterator[Writer]:
    w = Writer(engine, clock=clock)
    w.start()
    yield w
    w.stop()


class Sink:
    """An SMTP handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Any:
    sink = Sink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    yield sink, port
    ctl.stop()
