"""``email``: SMTP (optional STARTTLS or implicit TLS, optional auth), plain-text and HTML bodies.

The idempotency key is the Message-ID, so a receiver (or a mail filter) can drop a duplicate.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from mlwatch.config.alerting import EmailNotifierConfig
from mlwatch.errors import NotifyError


def build_message(cfg: EmailNotifierConfig, payload: Mapping[str, Any]) -> EmailMessage:
    extra = payload.get("mlwatch", {})
    msg = EmailMessage()
    msg["Subject"] = str(extra.get("subject", "mlwatch notification"))
    msg["From"] = cfg.from_
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{extra.get('idempotencyKey', 'x')}@mlwatch>"
    msg["X-Mlwatch-Idempotency-Key"] = str(extra.get("idempotencyKey", ""))
    msg.set_content(str(extra.get("text", "")))
    msg.add_alternative(str(extra.get("html", "")), subtype="html")
    return msg


class EmailNotifier:
    def __init__(
        self, cfg: EmailNotifierConfig, env: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        env = os.environ if env is None else env
        self._user = env.get(cfg.smtp.username_env) if cfg.smtp.username_env else None
        self._password = env.get(cfg.smtp.password_env) if cfg.smtp.password_env else None
        self._ssl = ssl_context

    async def send(self, payload: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._send, build_message(self.cfg, payload))

    def _send(self, msg: EmailMessage) -> None:
        s = self.cfg.smtp
        timeout = s.timeout / 1000
        context = self._ssl or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if s.tls:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
            with smtp:
                if s.starttls and not s.tls:
                    smtp.starttls(context=context)
                if self._user:
                    smtp.login(self._user, self._password or "")
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"email via {s.host}:{s.port}: {type(exc).__name__}: {exc}") from None
