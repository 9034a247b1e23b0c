"""Routing, grouping and timing as Alertmanager does it, silences and inhibition (injected time)."""

from __future__ import annotations

from typing import Any

from mlwatch.config import parse_config
from mlwatch.notify.router import OutboxItem, Router
from mlwatch.notify.silences import Silence, parse_matcher
from mlwatch.rules.state import Alert, AlertState

CFG = """
notifiers:
  - {name: hook, type: webhook, url: http://127.0.0.1:1/hook}
  - {name: quiet, type: webhook, url: http://127.0.0.1:1/q, send_resolved: false}
  - {name: all, type: webhook, url: http://127.0.0.1:1/all}
routes:
  - {match: {severity: critical}, notifiers: [hook, quiet], group_by: [alertname, model], group_wait: 30s, group_interval: 5m, repeat_interval: 4h, continue: true}
  - {match_re: {alertname: "Accuracy.*"}, notifiers: [all], group_by: [alertname], group_wait: 0s, group_interval: 1m, repeat_interval: 1h}
inhibit_rules:
  - {source_match: {alertname: ModelServerDown}, target_match_re: {alertname: "Accuracy.*"}, equal: [model]}
"""


def alert(name: str, t: float, state: AlertState = AlertState.FIRING, **labels: str) -> Alert:
    lab = {"alertname": name, **labels}
    a = Alert("r", lab, {"summary": f"{name} {labels}"}, state, 0.8, t - 60, fired_at=t - 60)
    if state is AlertState.RESOLVED:
        a.resolved_at = t
    return a


class Sent:
    def __init__(self) -> None:
        self.items: list[OutboxItem] = []
        self.states: list[Any] = []

    async def __call__(self, items: list[OutboxItem], states: list[Any], now: float) -> None:
        self.items += items
        self.states += states

    def take(self) -> list[tuple[str, str, list[str]]]:
        out = [
            (
                i.notifier,
                i.payload["status"],
                [a["labels"].get("model", "") + ":" + a["status"] for a in i.payload["alerts"]],
            )
            for i in self.items
        ]
        self.items = []
        return out


def make(silences: list[Silence] | None = None) -> tuple[Router, Sent]:
    cfg = parse_config(CFG)
    sent = Sent()
    r = Router(
        routes=cfg.routes,
        inhibit_rules=cfg.inhibit_rules,
        notifiers=cfg.notifiers,
        silences=lambda: silences or [],
        enqueue=sent,
    )
    return r, sent


async def test_group_wait_group_interval_repeat_and_resolved() -> None:
    r, sent = make()
    t = 1000.0
    r.receive([alert("AccuracyLow", t, severity="critical", model="a")], t)
    await r.flush(t)
    # Route 2 (group_wait 0s) sends at once; route 1 waits 30s.
    assert sent.take() == [("all", "firing", ["a:firing"])]
    r.receive(
        [
            alert("AccuracyLow", t + 10, severity="critical", model="a"),
            alert("AccuracyLow", t + 10, severity="critical", model="b"),
        ],
        t + 10,
    )
    await r.flush(t + 10)
    assert sent.take() == []  # the new alert of an existing group waits for group_interval
    await r.flush(t + 30)
    assert sorted(sent.take()) == [("hook", "firing", ["a:firing"]), ("quiet", "firing", ["a:firing"])]
    await r.flush(t + 40)  # model=b is a new group of route 1: its own group_wait
    assert sorted(sent.take()) == [("hook", "firing", ["b:firing"]), ("quiet", "firing", ["b:firing"])]
    await r.flush(t + 60)
    assert sent.take() == [("all", "firing", ["a:firing", "b:firing"])]
    # Nothing changes: no notification until repeat_interval.
    for dt in (120, 600, 1800):
        await r.flush(t + dt)
        assert sent.take() == []
    await r.flush(t + 3600 + 60)
    assert sent.take() == [("all", "firing", ["a:firing", "b:firing"])]
    # b resolves: groups tell it (not `quiet`, which has send_resolved: false).
    t2 = t + 4000
    r.receive(
        [
            alert("AccuracyLow", t2, severity="critical", model="a"),
            alert("AccuracyLow", t2, AlertState.RESOLVED, severity="critical", model="b"),
        ],
        t2,
    )
    await r.flush(t2 + 300)
    got = sorted(sent.take())
    assert ("hook", "resolved", ["b:resolved"]) in got
    assert ("all", "firing", ["a:firing", "b:resolved"]) in got
    assert not any(n == "quiet" for n, _, _ in got)


async def test_silenced_and_inhibited_alerts_are_not_notified() -> None:
    sil = Silence("s1", (parse_matcher('model="a"'),), 0, 10**10)
    r, sent = make([sil])
    t = 1000.0
    r.receive(
        [
            alert("AccuracyLow", t, model="a"),
            alert("AccuracyLow", t, model="b"),
            alert("ModelServerDown", t, model="b"),
            alert("AccuracyLow", t, model="c"),
        ],
        t,
    )
    await r.flush(t)
    # a: silenced; b: inhibited by ModelServerDown{model=b}; c: notified.
    assert sent.take() == [("all", "firing", ["c:firing"])]


async def test_restart_does_not_renotify() -> None:
    r, sent = make()
    t = 1000.0
    r.receive([alert("AccuracyLow", t, model="a")], t)
    await r.flush(t)
    assert len(sent.take()) == 1
    persisted = {k: (ls, h, f) for k, ls, h, f in sent.states}
    cfg = parse_config(CFG)
    again = Router(
        routes=cfg.routes,
        inhibit_rules=cfg.inhibit_rules,
        notifiers=cfg.notifiers,
        silences=list,
        enqueue=sent,
        persisted=persisted,
    )
    again.receive([alert("AccuracyLow", t + 30, model="a")], t + 30)
    await again.flush(t + 30)
    assert sent.take() == []


def test_payload_is_webhook_v4_and_explains_itself() -> None:
    from mlwatch.notify.message import RoutedAlert, build_payload

    a = RoutedAlert(
        "f" * 16,
        {"alertname": "AccuracyLow", "model": "m"},
        {"summary": "low"},
        0.0,
        None,
        0.85,
        "ai_model_accuracy < 0.9",
    )
    p = build_payload(
        key="k1",
        receiver="hook",
        group_key="{}:x",
        group_labels={"alertname": "AccuracyLow"},
        firing=[a],
        resolved=[],
        external_url="http://x",
    )
    assert p["version"] == "4" and p["status"] == "firing" and p["receiver"] == "hook"
    assert set(p) >= {
        "groupKey",
        "truncatedAlerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert p["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert p["mlwatch"]["idempotencyKey"] == "k1"
    text = p["mlwatch"]["text"]
    assert "value: 0.85" in text and "condition: ai_model_accuracy < 0.9" in text
    assert "mlwatch silence add 'alertname=\"AccuracyLow\"'" in text


def test_matchers() -> None:
    m = parse_matcher('model=~"m.*"')
    assert m.is_regex and m.matches({"model": "m1"}) and not m.matches({"model": "x"})
    assert parse_matcher("env!=dev").matches({"env": "prod"})
    assert not parse_matcher('job!~"test.*"').matches({"job": "test1"})


async def test_resolution_right_after_a_restart_is_notified() -> None:
    r, sent = make()
    t = 1000.0
    r.receive([alert("AccuracyLow", t, model="a")], t)
    await r.flush(t)
    assert len(sent.take()) == 1
    persisted = {k: (ls, h, f) for k, ls, h, f in sent.states}
    cfg = parse_config(CFG)
    again = Router(
        routes=cfg.routes,
        inhibit_rules=cfg.inhibit_rules,
        notifiers=cfg.notifiers,
        silences=list,
        enqueue=sent,
        persisted=persisted,
    )
    again.receive([alert("AccuracyLow", t + 30, AlertState.RESOLVED, model="a")], t + 30)
    await again.flush(t + 30)
    assert sent.take() == [("all", "resolved", ["a:resolved"])]
    assert again.alerts == {} and again.groups == {}
