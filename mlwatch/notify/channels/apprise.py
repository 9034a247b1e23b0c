"""``apprise``: any Apprise URL (SMS, chat, push; 100+ services), with the rendered subject and text."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping
from typing import Any

from mlwatch.config.alerting import AppriseNotifierConfig
from mlwatch.errors import NotifyError


class AppriseNotifier:
    def __init__(self, cfg: AppriseNotifierConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg

    async def send(self, payload: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._send, payload)

    def _send(self, payload: Mapping[str, Any]) -> None:
        # Apprise loads its plugins lazily, and one imports the deprecated imghdr on Python 3.11+.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            ap = apprise.Apprise()
            for url in self.cfg.urls:
                if not ap.add(url):
                    raise NotifyError(f"apprise: invalid URL for notifier {self.name!r}")
            extra = payload.get("mlwatch", {})
            body = f"{extra.get('text', '')}\n\nidempotency key: {extra.get('idempotencyKey', '')}"
            kind = apprise.NotifyType.FAILURE if payload.get("status") == "firing" else apprise.NotifyType.SUCCESS
            if not ap.notify(body=body, title=str(extra.get("subject", "mlwatch")), notify_type=kind):
                raise NotifyError(f"apprise: delivery through {self.name!r} failed")
