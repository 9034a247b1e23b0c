"""HTTP endpoints of alerting: Alertmanager-shaped ``/api/v2/silences`` (GET/POST/DELETE),
Prometheus-shaped ``/api/v1/alerts`` and ``/api/v1/rules``, and ``/api/v1/alerts/history`` and
``/api/v1/notifications`` (extensions the CLI and the TUI read)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mlwatch.notify.service import AlertingService
from mlwatch.notify.silences import SilenceError, silence_from_api
from mlwatch.storage import alertstore


def _ok(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def _am_error(message: str, status: int = 400) -> web.Response:
    # Alertmanager answers errors with a JSON string body.
    return web.Response(status=status, text=json.dumps(message), content_type="application/json")


class AlertingApi:
    """Routes over a running :class:`AlertingService` (``service`` is re-read per request after reloads)."""

    def __init__(self, service: AlertingService) -> None:
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/alerts", self.alerts)
        r.add_get("/api/v1/rules", self.rules)
        r.add_get("/api/v1/alerts/history", self.history)
        r.add_get("/api/v1/notifications", self.notifications)
        r.add_get("/api/v2/silences", self.list_silences)
        r.add_post("/api/v2/silences", self.post_silence)
        r.add_get("/api/v2/silence/{id}", self.get_silence)
        r.add_delete("/api/v2/silence/{id}", self.delete_silence)
        r.add_delete("/api/v2/silences/{id}", self.delete_silence)
        r.add_post("/api/v1/notify/test/{name}", self.notify_test)

    # ------------------------------------------------------------ Prometheus API
    async def alerts(self, _request: web.Request) -> web.Response:
        return _ok({"alerts": [a.api_dict() for a in self.service.active_alerts()]})

    async def rules(self, request: web.Request) -> web.Response:
        data = self.service.rules.rules_api()
        kind = request.query.get("type")
        if kind in ("alert", "record"):
            want = "alerting" if kind == "alert" else "recording"
            for g in data["groups"]:
                g["rules"] = [r for r in g["rules"] if r["type"] == want]
            data["groups"] = [g for g in data["groups"] if g["rules"]]
        return _ok(data)

    async def history(self, request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "since and limit must be numbers"}, status=400
            )
        events = await self.service.history(since, limit)
        return _ok([event_dict(e) for e in events])

    async def notifications(self, request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            since = 0.0
        rows = await self.service.store.call(lambda c: alertstore.load_notifications(c, since))
        return _ok([notification_dict(n) for n in rows])

    async def notify_test(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            outcome = await self.service.notify_test(name)
        except KeyError:
            return web.json_response(
                {"status": "error", "errorType": "not_found", "error": f"no notifier named {name!r}"}, status=404
            )
        return _ok({"notifier": name, "outcome": outcome})

    # ------------------------------------------------------------ Alertmanager silences
    async def list_silences(self, request: web.Request) -> web.Response:
        await self.service.reload_silences()
        now = self.service.clock()
        return web.json_response([s.api(now) for s in self.service.silences])

    async def get_silence(self, request: web.Request) -> web.Response:
        await self.service.reload_silences()
        sid = request.match_info["id"]
        for s in self.service.silences:
            if s.id == sid:
                return web.json_response(s.api(self.service.clock()))
        return _am_error(f"silence {sid} not found", 404)

    async def post_silence(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _am_error("the body is not JSON")
        try:
            silence = silence_from_api(body, self.service.clock())
        except SilenceError as exc:
            return _am_error(str(exc))
        await self.service.add_silence(silence)
        return web.json_response({"silenceID": silence.id})

    async def delete_silence(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if not await self.service.expire_silence(sid):
            return _am_error(f"silence {sid} not found or already expired", 404)
        return web.Response(status=200)


def event_dict(e: alertstore.EventRow) -> dict[str, Any]:
    """A history item: the fields of ``/api/v1/alerts`` items, plus the event, its time and ``resolvedAt``."""
    from mlwatch.rules.state import iso
    from mlwatch.rules.templates import go_float

    out: dict[str, Any] = {
        "labels": e.labels,
        "annotations": e.annotations,
        "state": e.event,
        "activeAt": iso(e.active_at),
        "value": go_float(e.value),
        "event": e.event,
        "time": iso(e.ts),
        "fingerprint": e.fingerprint,
        "condition": e.condition,
    }
    if e.event == "resolved":
        out["resolvedAt"] = iso(e.ts)
    return out


def notification_dict(n: alertstore.NotificationRow) -> dict[str, Any]:
    from mlwatch.rules.state import iso

    return {
        "id": n.id,
        "key": n.key,
        "notifier": n.notifier,
        "status": n.status,
        "createdAt": iso(n.created_at),
        "attempts": n.attempts,
        "lastError": n.last_error,
        "deliveredAt": iso(n.delivered_at) if n.delivered_at else None,
        "nextAttemptAt": iso(n.next_attempt_at) if n.status == "pending" else None,
        "subject": n.payload.get("mlwatch", {}).get("subject", ""),
        "payloadStatus": n.payload.get("status"),
    }
