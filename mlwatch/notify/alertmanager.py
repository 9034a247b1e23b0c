"""Sending alerts to Alertmanagers (API v2), exactly as Prometheus does.

After every evaluation of a rule group, every firing alert and every alert resolved in the last 15
minutes is posted to ``<url>/api/v2/alerts`` of each configured Alertmanager: firing ones with
``endsAt`` = evaluation time + 4 x max(evaluation interval, resend delay) (so an Alertmanager resolves
them by itself if mlwatch stops), resolved ones with ``endsAt`` = the time they resolved. External
labels are added where the alert does not set them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from mlwatch.errors import NotifyError
from mlwatch.notify.silences import rfc3339
from mlwatch.rules.state import Alert, AlertState

log = logging.getLogger("mlwatch.notify")


def am_alerts(
    alerts: Sequence[Alert], t: float, valid_for_s: float, external_labels: Mapping[str, str], generator_url: str = ""
) -> list[dict[str, Any]]:
    """The ``postableAlerts`` body for the firing and resolved ``alerts`` at evaluation time ``t``."""
    out = []
    for a in alerts:
        if a.state is AlertState.PENDING:
            continue
        labels = {**external_labels, **a.labels}
        ends = a.resolved_at if a.state is AlertState.RESOLVED and a.resolved_at is not None else t + valid_for_s
        out.append(
            {
                "labels": labels,
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.fired_at or a.active_at),
                "endsAt": rfc3339(ends),
                "generatorURL": generator_url,
            }
        )
    return out


class AlertmanagerSender:
    """Posts alerts to every configured Alertmanager; a failing one is logged and counted, never fatal."""

    def __init__(
        self, urls: Sequence[str], *, timeout_s: float = 10.0, external_labels: Mapping[str, str] | None = None
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self.external_labels = dict(external_labels or {})
        self.sent = 0
        self.errors = 0
        self.last_error = ""

    async def send(self, alerts: Sequence[Alert], t: float, valid_for_s: float, generator_url: str = "") -> None:
        if not self.urls:
            return
        body = am_alerts(alerts, t, valid_for_s, self.external_labels, generator_url)
        if not body:
            return
        data = orjson.dumps(body)
        results = await asyncio.gather(*(self._post(u, data) for u in self.urls), return_exceptions=True)
        for url, res in zip(self.urls, results, strict=True):
            if isinstance(res, BaseException):
                self.errors += 1
                self.last_error = f"{url}: {res}"
                log.warning("sending %d alerts to Alertmanager %s failed: %s", len(body), url, res)
            else:
                self.sent += len(body)

    async def _post(self, url: str, data: bytes) -> None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session,
                session.post(f"{url}/api/v2/alerts", data=data, headers={"Content-Type": "application/json"}) as resp,
            ):
                if resp.status // 100 != 2:
                    raise NotifyError(f"answered {resp.status}: {(await resp.text())[:200].strip()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from None
