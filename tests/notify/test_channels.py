"""Every channel against a real receiver on loopback: SMTP (aiosmtpd, plain and STARTTLS with auth),
webhook, Apprise through ``json://`` to a local aiohttp server, and exec (argv, JSON on stdin, timeout)."""

from __future__ import annotations

import email
import json
import ssl
import sys
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from mlwatch.config.alerting import (
    AppriseNotifierConfig,
    EmailNotifierConfig,
    ExecNotifierConfig,
    WebhookNotifierConfig,
)
from mlwatch.errors import NotifyError
from mlwatch.notify.channels import make_channel
from mlwatch.notify.channels.email import EmailNotifier
from mlwatch.notify.message import RoutedAlert, build_payload
from tests.helpers import free_port
from tests.notify.conftest import Receiver, Sink

FIXTURES = Path(__file__).parents[1] / "config" / "fixtures"


def payload(key: str = "idem-123") -> dict[str, Any]:
    a = RoutedAlert(
        "a" * 16,
        {"alertname": "AccuracyLow", "model": "m", "severity": "critical"},
        {"summary": "accuracy of m is 85%"},
        1_700_000_000.0,
        None,
        0.85,
        "ai_model_accuracy < 0.9",
    )
    return build_payload(
        key=key,
        receiver="x",
        group_key="{}:g",
        group_labels={"alertname": "AccuracyLow"},
        firing=[a],
        resolved=[],
        external_url="http://127.0.0.1:9091",
    )


async def test_email_plain_text_and_html(smtp_sink: Any) -> None:
    sink, port = smtp_sink
    cfg = EmailNotifierConfig.model_validate(
        {
            "name": "mail",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": port},
            "from": "mlwatch@example.com",
            "to": ["oncall@example.com"],
        }
    )
    await make_channel(cfg).send(payload())
    ((frm, to, raw),) = sink.messages
    assert frm == "mlwatch@example.com" and to == ["oncall@example.com"]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Message-ID"] == "<idem-123@mlwatch>"
    assert msg["Subject"] == "[FIRING:1] AccuracyLow"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "value: 0.85" in text and "mlwatch silence add" in text
    assert "<table" in html and "accuracy of m is 85%" in html


async def test_email_starttls_and_auth() -> None:
    sink = Sink()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(FIXTURES / "tls.crt", FIXTURES / "tls.key")
    seen: list[tuple[str, bytes, bytes]] = []

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        seen.append((mechanism, data.login, data.password))
        return AuthResult(success=data.login == b"u" and data.password == b"p")

    port = free_port()
    ctl = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=auth,
        auth_require_tls=True,
    )
    ctl.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(FIXTURES / "tls.crt"))
        client_ctx.check_hostname = False
        cfg = EmailNotifierConfig.model_validate(
            {
                "name": "mail",
                "type": "email",
                "from": "a@example.com",
                "to": ["b@example.com"],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": port,
                    "starttls": True,
                    "timeout": "2s",
                    "username_env": "U",
                    "password_env": "P",
                },
            },
        )
        await EmailNotifier(cfg, env={"U": "u", "P": "p"}, ssl_context=client_ctx).send(payload())
        assert len(sink.messages) == 1 and seen[0][1:] == (b"u", b"p")
        with pytest.raises(NotifyError, match="email via 127.0.0.1"):  # refused (535)
            await EmailNotifier(cfg, env={"U": "u", "P": "wrong"}, ssl_context=client_ctx).send(payload())
    finally:
        ctl.stop()


async def test_email_refused_is_a_notify_error() -> None:
    cfg = EmailNotifierConfig.model_validate(
        {
            "name": "mail",
            "type": "email",
            "from": "a@x",
            "to": ["b@x"],
            "smtp": {"host": "127.0.0.1", "port": free_port(), "timeout": "2s"},
        }
    )
    with pytest.raises(NotifyError, match="email via 127.0.0.1"):
        await make_channel(cfg).send(payload())


async def test_webhook(receiver: Receiver) -> None:
    cfg = WebhookNotifierConfig(name="hook", url=receiver.url + "/hook", bearer_token_env="T")
    from mlwatch.notify.channels.webhook import WebhookNotifier

    await WebhookNotifier(cfg, env={"T": "s3cret"}).send(payload())
    (body,) = receiver.bodies
    assert body["version"] == "4" and body["mlwatch"]["idempotencyKey"] == "idem-123"
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    receiver.fail = 1
    with pytest.raises(NotifyError, match="503"):
        await WebhookNotifier(cfg, env={}).send(payload())


async def test_apprise_json_to_a_local_server(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    cfg = AppriseNotifierConfig(name="chat", urls=[f"json://127.0.0.1:{port}/apprise"])
    await make_channel(cfg).send(payload())
    (body,) = receiver.bodies
    assert body["title"] == "[FIRING:1] AccuracyLow"
    assert "value: 0.85" in body["message"] and "idempotency key: idem-123" in body["message"]
    receiver.fail = 1
    with pytest.raises(NotifyError, match="failed"):
        await make_channel(cfg).send(payload())


async def test_exec_gets_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    cfg = ExecNotifierConfig(name="failover", command=[sys.executable, "-c", script, str(out)])
    await make_channel(cfg).send(payload())
    got = json.loads(out.read_text())
    assert got["status"] == "firing" and got["mlwatch"]["idempotencyKey"] == "idem-123"


async def test_exec_failure_and_timeout(tmp_path: Path) -> None:
    bad = ExecNotifierConfig(
        name="x", command=[sys.executable, "-c", "import sys; print('no backup', file=sys.stderr); sys.exit(3)"]
    )
    with pytest.raises(NotifyError, match="exited with 3: no backup"):
        await make_channel(bad).send(payload())
    slow = ExecNotifierConfig(name="x", command=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=300)
    with pytest.raises(NotifyError, match="timed out after 0.3s"):
        await make_channel(slow).send(payload())
    missing = ExecNotifierConfig(name="x", command=[str(tmp_path / "nope")])
    with pytest.raises(NotifyError, match="cannot start"):
        await make_channel(missing).send(payload())
