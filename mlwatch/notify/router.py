"""Routing as Alertmanager does it: routes (``match``/``match_re``, ``continue``), aggregation groups
(``group_by``), timing (``group_wait``, ``group_interval``, ``repeat_interval``), resolved
notifications, silences and inhibition. Notifications go to the durable outbox, never straight to
a channel.

The router is driven by two calls: :meth:`Router.receive` with the alerts of an evaluation (firing
ones and recently resolved ones), and :meth:`Router.flush` on a timer (every second in the daemon;
tests call it with an injected time).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlwatch.config.alerting import InhibitRuleConfig, NotifierConfig, RouteConfig
from mlwatch.notify.message import RoutedAlert, build_payload
from mlwatch.notify.silences import Silence
from mlwatch.regex import compile_regex
from mlwatch.rules.state import Alert, AlertState

log = logging.getLogger("mlwatch.notify")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    key: str
    notifier: str
    group_key: str
    payload: dict[str, Any]


GroupState = tuple[str, float, str, list[str]]  # key, last_sent, hash, firing fingerprints
EnqueueFunc = Callable[[list[OutboxItem], list[GroupState], float], Awaitable[None]]


def _matches(labels: Mapping[str, str], eq: Mapping[str, str], rx: Mapping[str, str]) -> bool:
    return all(labels.get(k, "") == v for k, v in eq.items()) and all(
        compile_regex(v, dotall=True).fullmatch(labels.get(k, "")) is not None for k, v in rx.items()
    )


def route_indexes(routes: Sequence[RouteConfig], labels: Mapping[str, str]) -> list[int]:
    """The routes an alert goes to: the first match, and further ones while matches say ``continue``."""
    out = []
    for i, r in enumerate(routes):
        if _matches(labels, r.match, r.match_re):
            out.append(i)
            if not r.continue_:
                break
    return out


def inhibited(target: RoutedAlert, alerts: Sequence[RoutedAlert], rules: Sequence[InhibitRuleConfig]) -> bool:
    for rule in rules:
        if not _matches(target.labels, rule.target_match, rule.target_match_re):
            continue
        for src in alerts:
            if src.fingerprint == target.fingerprint or not src.firing:
                continue
            if not _matches(src.labels, rule.source_match, rule.source_match_re):
                continue
            if all(src.labels.get(k, "") == target.labels.get(k, "") for k in rule.equal):
                return True
    return False


@dataclass
class _Group:
    key: str
    route: int
    labels: dict[str, str]
    fingerprints: set[str] = field(default_factory=set)
    next_flush: float = 0.0
    last_sent: float = 0.0
    last_hash: str = ""
    firing_sent: set[str] = field(default_factory=set)


class Router:
    """Alertmanager's dispatcher, for one daemon."""

    def __init__(
        self,
        *,
        routes: Sequence[RouteConfig],
        inhibit_rules: Sequence[InhibitRuleConfig],
        notifiers: Sequence[NotifierConfig],
        silences: Callable[[], Sequence[Silence]],
        enqueue: EnqueueFunc,
        external_url: str = "",
        external_labels: Mapping[str, str] | None = None,
        persisted: Mapping[str, tuple[float, str, list[str]]] | None = None,
    ) -> None:
        self.alerts: dict[str, RoutedAlert] = {}
        self.routes: list[RouteConfig] = []
        self.groups: dict[str, _Group] = {}
        self.silences = silences
        self.enqueue = enqueue
        self.external_url = external_url
        self._persisted = dict(persisted or {})
        self.configure(routes, inhibit_rules, notifiers, external_labels)

    def configure(
        self,
        routes: Sequence[RouteConfig],
        inhibit_rules: Sequence[InhibitRuleConfig],
        notifiers: Sequence[NotifierConfig],
        external_labels: Mapping[str, str] | None = None,
    ) -> None:
        if self.routes and list(routes) != self.routes:
            for g in self.groups.values():  # keep what was sent; regroup under the new routes
                self._persisted[g.key] = (g.last_sent, g.last_hash, sorted(g.firing_sent))
            self.groups = {}
        self.routes = list(routes)
        self.inhibit_rules = list(inhibit_rules)
        self.notifiers = {n.name: n for n in notifiers}
        self.external_labels = dict(external_labels or {})
        for a in self.alerts.values():
            self._assign(a, now=a.updated_at)

    # ---------------------------------------------------------------- input
    def receive(self, alerts: Sequence[Alert], now: float, generator_url: str = "") -> None:
        """Take the firing and resolved alerts of one evaluation."""
        for a in alerts:
            fp = a.fingerprint
            if a.state is AlertState.PENDING:
                continue
            ends = a.resolved_at if a.state is AlertState.RESOLVED else None
            prior = self.alerts.get(fp)
            if prior is not None and ends is not None and prior.ends_at is not None:
                continue  # already known resolved
            # A resolved alert we have not seen firing (e.g. it resolved at the first evaluation after a
            # restart) still goes to its groups: they tell it ended if their persisted state says it was sent.
            ra = RoutedAlert(
                fp,
                dict(a.labels),
                dict(a.annotations),
                a.fired_at or a.active_at,
                ends,
                a.value,
                a.condition,
                generator_url,
                now,
                {} if a.samples is None else {"samples": a.samples},
            )
            self.alerts[fp] = ra
            self._assign(ra, now)

    def _assign(self, a: RoutedAlert, now: float) -> None:
        for i in route_indexes(self.routes, a.labels):
            route = self.routes[i]
            if not route.notifiers:
                continue
            glabels = {k: a.labels[k] for k in route.group_by if k in a.labels}
            if "..." in route.group_by:
                glabels = dict(a.labels)
            gkey = f"{i}:{json.dumps(glabels, sort_keys=True, separators=(',', ':'))}"
            g = self.groups.get(gkey)
            if g is None:
                g = _Group(gkey, i, glabels, next_flush=now + route.group_wait / 1000)
                prior = self._persisted.pop(gkey, None)
                if prior is not None:
                    g.last_sent, g.last_hash, firing = prior
                    g.firing_sent = set(firing)
                self.groups[gkey] = g
            g.fingerprints.add(a.fingerprint)

    # ---------------------------------------------------------------- output
    def muted(self, a: RoutedAlert, now: float) -> bool:
        if any(s.mutes(a.labels, now) for s in self.silences()):
            return True
        return inhibited(a, list(self.alerts.values()), self.inhibit_rules)

    async def flush(self, now: float) -> int:
        """Send every group whose time has come; returns the notifications enqueued."""
        items: list[OutboxItem] = []
        states: list[GroupState] = []
        done: list[str] = []
        for g in list(self.groups.values()):
            if now < g.next_flush:
                continue
            route = self.routes[g.route]
            members = [self.alerts[f] for f in sorted(g.fingerprints) if f in self.alerts]
            firing = [a for a in members if a.firing and not self.muted(a, now)]
            resolved = [a for a in members if not a.firing and a.fingerprint in g.firing_sent]
            fhash = hashlib.sha256(
                ("|".join(a.fingerprint for a in firing) + "/" + "|".join(a.fingerprint for a in resolved)).encode()
            ).hexdigest()[:16]
            changed = {a.fingerprint for a in firing} != g.firing_sent or bool(resolved)
            repeat = bool(firing) and now - g.last_sent >= route.repeat_interval / 1000
            if (firing or resolved) and (changed or repeat):
                for name in route.notifiers:
                    n = self.notifiers.get(name)
                    if n is None:
                        continue
                    if not firing and not n.send_resolved:
                        continue
                    show_resolved = resolved if n.send_resolved else []
                    key = hashlib.sha256(f"{name}|{g.key}|{now!r}|{fhash}".encode()).hexdigest()[:32]
                    payload = build_payload(
                        key=key,
                        receiver=name,
                        group_key=f"{{}}:{g.key}",
                        group_labels=g.labels,
                        firing=firing,
                        resolved=show_resolved,
                        external_url=self.external_url,
                        templates={"subject": n.templates.subject, "body": n.templates.body},
                        external_labels=self.external_labels,
                    )
                    items.append(OutboxItem(key, name, g.key, payload))
                g.last_sent = now
                g.last_hash = fhash
            g.firing_sent = {a.fingerprint for a in firing}
            states.append((g.key, g.last_sent, g.last_hash, sorted(g.firing_sent)))
            g.next_flush = now + route.group_interval / 1000
            for a in members:  # resolved alerts leave the group once told (or never notified)
                if not a.firing:
                    g.fingerprints.discard(a.fingerprint)
            g.fingerprints &= set(self.alerts)
            if not g.fingerprints:
                done.append(g.key)
        for key in done:
            del self.groups[key]
        held = {f for g in self.groups.values() for f in g.fingerprints}
        for fp, a in list(self.alerts.items()):
            if not a.firing and fp not in held:
                del self.alerts[fp]
        if items or states:
            await self.enqueue(items, states, now)
        return len(items)
