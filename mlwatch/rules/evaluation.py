"""Rule evaluation: recording rules write series, alerting rules drive the alert state machine.

The manager receives its collaborators as small callables (Prometheus ``rules/manager.go``):
``query(expr, t)`` returns an instant vector, ``append(samples)`` stores series (recording rules,
``ALERTS``, ``ALERTS_FOR_STATE``), ``store`` persists alert state and history, and ``notify(alerts)``
hands active and recently resolved alerts on (router, Alertmanagers). Time comes from ``clock``.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlwatch.model import STALE_NAN_BITS, Sample, SeriesKey
from mlwatch.rules.loading import AlertingRule, RecordingRule, RuleGroup
from mlwatch.rules.samples import format_count, sample_counts
from mlwatch.rules.state import Alert, AlertState, Transition, fingerprint, step_absent, step_present
from mlwatch.rules.templates import TemplateError, parse_template
from mlwatch.storage.alertstore import AlertRow, EventRow

log = logging.getLogger("mlwatch.rules")

STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
RESOLVED_RETENTION_S = 15 * 60  # resolved alerts are sent on for this long, as Prometheus does

Vector = Sequence[tuple[Mapping[str, str], float]]
QueryFunc = Callable[[str, float], Vector]
"""``query(expr, t)``: the instant vector of ``expr`` at Unix time ``t`` (labels include ``__name__``)."""
AppendFunc = Callable[[list[Sample]], Awaitable[None]]
NotifyFunc = Callable[[list[Alert], float], Awaitable[None]]


class AlertStateStore(Protocol):
    async def load(self) -> list[AlertRow]: ...
    async def save(self, upserts: list[AlertRow], deletes: list[tuple[str, str]], events: list[EventRow]) -> None: ...


@dataclass
class RuleHealth:
    health: str = "unknown"  # ok | err | unknown
    last_error: str = ""
    last_evaluation: float = 0.0
    evaluation_seconds: float = 0.0


@dataclass
class GroupRuntime:
    group: RuleGroup
    alerts: dict[str, dict[str, Alert]] = field(default_factory=dict)  # rule name -> fingerprint -> alert
    health: dict[str, RuleHealth] = field(default_factory=dict)
    series_prev: set[SeriesKey] = field(default_factory=set)  # written at the previous evaluation
    last_evaluation: float = 0.0
    evaluation_seconds: float = 0.0
    resolved: list[Alert] = field(default_factory=list)  # recently resolved, still sent on


def rule_key(group: RuleGroup, rule_name: str) -> str:
    return f"{group.key};{rule_name}"


def _render(text: str, labels: Mapping[str, str], value: float, ext: Mapping[str, str]) -> str:
    try:
        return parse_template(text).render(labels, value, ext)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


class RuleManager:
    """Evaluates rule groups and keeps the alert state of each rule."""

    def __init__(
        self,
        query: QueryFunc,
        append: AppendFunc,
        store: AlertStateStore,
        notify: NotifyFunc,
        *,
        clock: Callable[[], float],
        external_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.query = query
        self.append = append
        self.store = store
        self.notify = notify
        self.clock = clock
        self.external_labels = dict(external_labels or {})
        self.groups: dict[str, GroupRuntime] = {}
        self._restored: dict[str, list[AlertRow]] = {}

    # ---------------------------------------------------------------- configuration
    async def restore(self) -> None:
        """Load persisted alert state (call once before the first evaluation)."""
        by_rule: dict[str, list[AlertRow]] = {}
        for row in await self.store.load():
            by_rule.setdefault(row.rule_key, []).append(row)
        self._restored = by_rule
        for rt in self.groups.values():
            self._adopt(rt)

    def set_groups(self, groups: Sequence[RuleGroup]) -> None:
        """Install new rule groups, keeping the alerts of rules that still exist (a reload)."""
        old = self.groups
        self.groups = {}
        for g in groups:
            rt = GroupRuntime(g)
            prev = old.get(g.key)
            if prev is not None:
                rt.series_prev = prev.series_prev
                rt.resolved = prev.resolved
                for r in g.rules:
                    if isinstance(r, AlertingRule) and r.name in prev.alerts:
                        rt.alerts[r.name] = prev.alerts[r.name]
            self._adopt(rt)
            self.groups[g.key] = rt

    def _adopt(self, rt: GroupRuntime) -> None:
        for r in rt.group.rules:
            if not isinstance(r, AlertingRule):
                continue
            alerts = rt.alerts.setdefault(r.name, {})
            for row in self._restored.pop(rule_key(rt.group, r.name), []):
                alerts.setdefault(
                    row.fingerprint,
                    Alert(
                        rule_key(rt.group, r.name),
                        row.labels,
                        row.annotations,
                        AlertState(row.state),
                        row.value,
                        row.active_at,
                        row.fired_at,
                        None,
                        row.last_seen,
                        row.last_eval,
                        row.resolving_since,
                        row.last_sent_am,
                        {k: v for k, v in row.labels.items() if k != "alertname"},
                        r.condition,
                    ),
                )

    def rule_keys(self) -> list[str]:
        return [
            rule_key(rt.group, r.name)
            for rt in self.groups.values()
            for r in rt.group.rules
            if isinstance(r, AlertingRule)
        ]

    # ---------------------------------------------------------------- evaluation
    async def evaluate_all(self, t: float | None = None) -> None:
        for key in list(self.groups):
            await self.evaluate_group(key, t)

    async def evaluate_group(self, key: str, t: float | None = None) -> None:
        """Evaluate every rule of a group at ``t`` (default: now), in order, as Prometheus does."""
        rt = self.groups[key]
        t = self.clock() if t is None else t
        started = self.clock()
        t_ms = round(t * 1000)
        samples: list[Sample] = []
        series_now: set[SeriesKey] = set()
        upserts: list[AlertRow] = []
        deletes: list[tuple[str, str]] = []
        events: list[Transition] = []
        for rule in rt.group.rules:
            health = rt.health.setdefault(rule.name, RuleHealth())
            try:
                vector = await self._query(rule.expr, t)
            except Exception as exc:  # noqa: BLE001 - a failing rule is shown as health, the others go on
                health.health, health.last_error, health.last_evaluation = "err", str(exc), t
                log.warning("rule %s: %s", rule.name, exc)
                if isinstance(rule, AlertingRule):  # keep the alerts as they are, like Prometheus
                    for a in rt.alerts.get(rule.name, {}).values():
                        series_now |= self._alert_series(a, t_ms, samples)
                else:
                    series_now |= {k for k in rt.series_prev if k.name == rule.name}
                continue
            health.health, health.last_error, health.last_evaluation = "ok", "", t
            if isinstance(rule, RecordingRule):
                series_now |= self._record(rule, vector, t_ms, samples)
                continue
            try:
                resolve = await self._query(rule.resolve_expr, t) if rule.resolve_expr else None
            except Exception as exc:  # noqa: BLE001
                health.health, health.last_error = "err", f"resolve_expr: {exc}"
                resolve = None
            counts = await self._sample_counts(rule, vector, t) if vector else []
            self._alerting(rt, rule, vector, counts, resolve, t, events, upserts, deletes)
            for a in rt.alerts.get(rule.name, {}).values():
                series_now |= self._alert_series(a, t_ms, samples)
        for gone in rt.series_prev - series_now:
            samples.append(Sample(gone, t_ms, STALE_NAN))
        rt.series_prev = series_now
        rt.last_evaluation = t
        rt.evaluation_seconds = self.clock() - started
        rt.resolved = [a for a in rt.resolved if a.resolved_at is not None and t - a.resolved_at < RESOLVED_RETENTION_S]
        rt.resolved += [ev.alert for ev in events if ev.event is AlertState.RESOLVED and ev.alert.fired_at is not None]
        if samples:
            await self.append(samples)
        ev_rows = [
            EventRow(
                e.ts,
                e.alert.fingerprint,
                e.alert.name,
                e.event.value,
                dict(e.alert.labels),
                dict(e.alert.annotations),
                e.alert.value,
                e.alert.active_at,
                e.alert.condition,
            )
            for e in events
        ]
        if upserts or deletes or ev_rows:
            await self.store.save(upserts, deletes, ev_rows)
        active = [a for rule_alerts in rt.alerts.values() for a in rule_alerts.values() if a.state is AlertState.FIRING]
        await self.notify(active + rt.resolved, t)

    async def _query(self, expr: str, t: float) -> Vector:
        import asyncio

        return await asyncio.to_thread(self.query, expr, t)

    async def _sample_counts(self, rule: AlertingRule, vector: Vector, t: float) -> list[float | None]:
        import asyncio

        return await asyncio.to_thread(
            sample_counts, self.query, vector, t, samples_expr=rule.samples, rule_expr=rule.expr
        )

    def _record(self, rule: RecordingRule, vector: Vector, t_ms: int, out: list[Sample]) -> set[SeriesKey]:
        keys: set[SeriesKey] = set()
        for labels, value in vector:
            d = {k: v for k, v in labels.items() if k != "__name__"}
            d.update(rule.labels)
            key = SeriesKey.of(rule.name, d)
            if key in keys:
                raise ValueError("vector contains metrics with the same labelset after applying rule labels")
            keys.add(key)
            out.append(Sample(key, t_ms, float(value)))
        return keys

    def _alert_series(self, a: Alert, t_ms: int, out: list[Sample]) -> set[SeriesKey]:
        alerts_key = SeriesKey.of("ALERTS", {**a.labels, "alertstate": a.state.value})
        for_state = SeriesKey.of("ALERTS_FOR_STATE", a.labels)
        out.append(Sample(alerts_key, t_ms, 1.0))
        out.append(Sample(for_state, t_ms, float(a.active_at)))
        return {alerts_key, for_state}

    def _alerting(
        self,
        rt: GroupRuntime,
        rule: AlertingRule,
        vector: Vector,
        counts: Sequence[float | None],
        resolve: Vector | None,
        t: float,
        events: list[Transition],
        upserts: list[AlertRow],
        deletes: list[tuple[str, str]],
    ) -> None:
        alerts = rt.alerts.setdefault(rule.name, {})
        rkey = rule_key(rt.group, rule.name)
        seen: set[str] = set()
        changed: list[Alert] = []
        for (labels, value), count in zip(vector, counts, strict=True):
            src = {k: v for k, v in labels.items() if k != "__name__"}
            value = float(value)
            lab = dict(src)
            for k, v in rule.labels.items():
                lab[k] = _render(v, src, value, self.external_labels)
            lab = {k: v for k, v in lab.items() if v != ""}
            lab["alertname"] = rule.name
            ann = {k: _render(v, src, value, self.external_labels) for k, v in rule.annotations.items()}
            if count is not None:  # persisted and sent with the alert; a rule's own `samples` annotation wins
                ann.setdefault("samples", format_count(count))
            fp = fingerprint(lab)
            if fp in seen:
                continue  # Prometheus reports this as an error of the rule; keep the first
            seen.add(fp)
            a = alerts.get(fp)
            if a is None:
                a = Alert(
                    rkey,
                    lab,
                    ann,
                    AlertState.PENDING,
                    value,
                    t,
                    last_seen=t,
                    last_eval=t,
                    source_labels=src,
                    condition=rule.condition,
                    samples=count,
                )
                alerts[fp] = a
                if rule.for_ms <= 0:
                    a.state, a.fired_at = AlertState.FIRING, t
                    events.append(Transition(t, AlertState.FIRING, _copy(a)))
                else:
                    events.append(Transition(t, AlertState.PENDING, _copy(a)))
            else:
                a.source_labels = src
                a.condition = rule.condition
                a.samples = count
                if step_present(a, value, lab, ann, t, rule.for_ms / 1000) is AlertState.FIRING:
                    events.append(Transition(t, AlertState.FIRING, _copy(a)))
            changed.append(a)
        for fp, a in list(alerts.items()):
            if fp in seen:
                continue
            matched = None if resolve is None else _resolve_matches(a.source_labels, resolve)
            if step_absent(a, t, rule.keep_firing_for_ms / 1000, matched):
                del alerts[fp]
                a.resolved_at = t
                a.state = AlertState.RESOLVED
                events.append(Transition(t, AlertState.RESOLVED, _copy(a)))
                deletes.append((rkey, fp))
            else:
                changed.append(a)
        for a in changed:
            upserts.append(
                AlertRow(
                    rkey,
                    a.fingerprint,
                    a.labels,
                    a.annotations,
                    a.state.value,
                    a.value,
                    a.active_at,
                    a.fired_at,
                    a.last_seen,
                    a.last_eval,
                    a.resolving_since,
                    a.last_sent_am,
                )
            )

    # ---------------------------------------------------------------- views
    def active_alerts(self) -> list[Alert]:
        return [a for rt in self.groups.values() for ra in rt.alerts.values() for a in ra.values()]

    def rules_api(self) -> dict[str, Any]:
        """The ``data`` of Prometheus' ``/api/v1/rules``."""
        from mlwatch.model import format_duration_ms
        from mlwatch.rules.state import iso

        groups = []
        for rt in self.groups.values():
            g = rt.group
            rules = []
            for r in g.rules:
                h = rt.health.get(r.name, RuleHealth())
                item: dict[str, Any] = {
                    "name": r.name,
                    "query": r.expr,
                    "labels": dict(r.labels),
                    "health": h.health,
                    "lastError": h.last_error,
                    "evaluationTime": h.evaluation_seconds,
                    "lastEvaluation": iso(h.last_evaluation) if h.last_evaluation else "0001-01-01T00:00:00Z",
                }
                if isinstance(r, AlertingRule):
                    alerts = [a.api_dict() for a in rt.alerts.get(r.name, {}).values()]
                    states = {a["state"] for a in alerts}
                    item.update(
                        {
                            "state": "firing" if "firing" in states else "pending" if states else "inactive",
                            "duration": r.for_ms / 1000,
                            "keepFiringFor": r.keep_firing_for_ms / 1000,
                            "annotations": dict(r.annotations),
                            "alerts": alerts,
                            "type": "alerting",
                        }
                    )
                    if r.resolve_expr:
                        item["resolveQuery"] = r.resolve_expr
                    if r.shorthand:
                        item["condition"] = r.condition
                else:
                    item["type"] = "recording"
                rules.append(item)
            groups.append(
                {
                    "name": g.name,
                    "file": g.file,
                    "rules": rules,
                    "interval": g.interval_ms / 1000,
                    "limit": 0,
                    "evaluationTime": rt.evaluation_seconds,
                    "lastEvaluation": iso(rt.last_evaluation) if rt.last_evaluation else "0001-01-01T00:00:00Z",
                    "intervalText": format_duration_ms(g.interval_ms),
                }
            )
        return {"groups": groups}


def _copy(a: Alert) -> Alert:
    return Alert(
        a.rule_key,
        dict(a.labels),
        dict(a.annotations),
        a.state,
        a.value,
        a.active_at,
        a.fired_at,
        a.resolved_at,
        a.last_seen,
        a.last_eval,
        a.resolving_since,
        a.last_sent_am,
        dict(a.source_labels),
        a.condition,
        a.samples,
    )


def _resolve_matches(source_labels: Mapping[str, str], resolve: Vector) -> bool:
    """Whether ``resolve_expr`` returned the alert's series: a sample whose labels (without the name)
    all equal the alert's."""
    for labels, value in resolve:
        if math.isnan(float(value)):
            continue
        if all(source_labels.get(k) == v for k, v in labels.items() if k != "__name__"):
            return True
    return False
