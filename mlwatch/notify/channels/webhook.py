"""``webhook``: POST the Alertmanager webhook payload (version 4) as JSON."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from mlwatch.config.alerting import WebhookNotifierConfig
from mlwatch.errors import NotifyError


class WebhookNotifier:
    def __init__(self, cfg: WebhookNotifierConfig, env: Mapping[str, str] | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        env = os.environ if env is None else env
        self._token = env.get(cfg.bearer_token_env) if cfg.bearer_token_env else None

    async def send(self, payload: Mapping[str, Any]) -> None:
        body = dict(payload)
        if self.cfg.max_alerts and len(body.get("alerts", [])) > self.cfg.max_alerts:
            body["truncatedAlerts"] = len(body["alerts"]) - self.cfg.max_alerts
            body["alerts"] = body["alerts"][: self.cfg.max_alerts]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mlwatch",
            "Idempotency-Key": str(payload.get("mlwatch", {}).get("idempotencyKey", "")),
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout / 1000)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.cfg.url, data=orjson.dumps(body), headers=headers) as resp,
            ):
                if resp.status // 100 != 2:
                    text = (await resp.text(errors="replace"))[:200]
                    raise NotifyError(f"webhook {self.cfg.url} answered {resp.status}: {text.strip()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(f"webhook {self.cfg.url}: {type(exc).__name__}: {exc}") from None
