"""The alerting pipeline of the daemon: rule evaluation -> alert state and history -> routing ->
outbox -> channels, and the Alertmanager sender. Built by the daemon with a ``query`` callable and the
storage writer; everything else comes from the config.

The daemon calls :meth:`AlertingService.start` with its APScheduler, :meth:`reconfigure` after a
reload and :meth:`stop` on shutdown. :meth:`tick` (what the scheduler runs every second) and
:meth:`evaluate` take an explicit time, so tests drive the whole pipeline without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlwatch.errors import StorageUnavailable
from mlwatch.model import Sample
from mlwatch.notify.alertmanager import AlertmanagerSender
from mlwatch.notify.channels import make_channel
from mlwatch.notify.outbox import Channel, Outbox
from mlwatch.notify.router import GroupState, OutboxItem, Router
from mlwatch.notify.silences import Silence
from mlwatch.rules.evaluation import QueryFunc, RuleManager, Vector
from mlwatch.rules.loading import build_groups
from mlwatch.rules.state import Alert, AlertState
from mlwatch.storage import alertstore as store
from mlwatch.storage.writer import WriteBatch, Writer

log = logging.getLogger("mlwatch.alerting")

TICK_SECONDS = 1.0


def vector_of(result: Any) -> Vector:
    """An engine ``QueryResult`` (instant) as ``[(labels, value)]``: vectors as they are, a scalar as one
    sample without labels."""
    if result.kind == "scalar" and result.scalar is not None:
        return [({}, float(result.scalar[1]))]
    out = []
    for labels, _ts, values in result.series:
        if len(values):
            out.append((dict(labels), float(values[-1])))
    return out


def query_from_engine(engine: Callable[[], Any]) -> QueryFunc:
    """A ``query(expr, t)`` over ``engine().instant(expr, t_ms)`` (a fresh engine per query picks up
    reloaded limits)."""

    def query(expr: str, t: float) -> Vector:
        return vector_of(engine().instant(expr, round(t * 1000)))

    return query


class WriterStore:
    """Alert state, history, silences and outbox through the single writer (``Writer.call``)."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    async def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await asyncio.wrap_future(self.writer.call(fn))

    # RuleManager's AlertStateStore
    async def load(self) -> list[store.AlertRow]:
        return list(await self._call(store.load_alerts))

    async def save(
        self, upserts: list[store.AlertRow], deletes: list[tuple[str, str]], events: list[store.EventRow]
    ) -> None:
        await self._call(lambda c: store.save_alerts(c, upserts, deletes, events))

    # Outbox's OutboxStore
    async def due(self, now: float, limit: int) -> list[store.NotificationRow]:
        return list(await self._call(lambda c: store.due_notifications(c, now, limit)))

    async def record(
        self, nid: int, ts: float, ok: bool, error: str, seconds: float, status: str, next_attempt_at: float
    ) -> None:
        await self._call(lambda c: store.record_attempt(c, nid, ts, ok, error, seconds, status, next_attempt_at))

    # the rest
    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await self._call(fn)


class AlertingService:
    """Rules, alert history, routing, silences, the outbox and the Alertmanager sender."""

    def __init__(
        self,
        config: Any,
        *,
        query: QueryFunc,
        writer: Writer,
        clock: Callable[[], float] = time.time,
        base_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        external_url: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.writer = writer
        self.store = WriterStore(writer)
        self.base_dir = base_dir
        self.env = os.environ if env is None else env
        self.external_url = external_url
        self.silences: list[Silence] = []
        self.rules = RuleManager(query, self._append, self.store, self._notify, clock=clock)
        self.router = Router(
            routes=[],
            inhibit_rules=[],
            notifiers=[],
            silences=lambda: self.silences,
            enqueue=self._enqueue,
            external_url=external_url,
        )
        self.outbox = Outbox(self.store, {}, clock=clock, rng=rng)
        self.am = AlertmanagerSender([])
        self._scheduler: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._lock = asyncio.Lock()
        self.config = config
        self.reconfigure(config)

    # ---------------------------------------------------------------- configuration
    def reconfigure(self, config: Any) -> None:
        """Apply a (validated) config: rule groups, routes, notifiers, Alertmanagers. Alert state is kept
        for rules that still exist."""
        self.config = config
        groups, problems = build_groups(config, self.base_dir)
        for p in problems:  # validated at load; a file changed since: keep going with the rest
            log.error("rule file problem: %s", p)
        self.rules.external_labels = dict(config.alerting.external_labels)
        self.rules.set_groups(groups)
        # Alerts of rules that are gone resolve for the router too (else they would repeat forever).
        live = {a.fingerprint for a in self.rules.active_alerts()}
        now = self.clock()
        for ra in self.router.alerts.values():
            if ra.ends_at is None and ra.fingerprint not in live:
                ra.ends_at = now
        self.router.configure(config.routes, config.inhibit_rules, config.notifiers, config.alerting.external_labels)
        self.channels: dict[str, Channel] = {n.name: make_channel(n, self.env) for n in config.notifiers}
        self.outbox.channels = dict(self.channels)
        self.outbox.secrets = _secret_values(config.notifiers, self.env)
        self.am = AlertmanagerSender(config.alerting.alertmanagers, external_labels=config.alerting.external_labels)
        if self._scheduler is not None:
            self._schedule()
            # Alerts of rules the new config no longer has end now, with a resolved event.
            keys, now = self.rules.rule_keys(), self.clock()
            task = asyncio.get_running_loop().create_task(
                self.store.call(lambda c: store.drop_alerts_except(c, keys, now))
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- lifecycle
    async def start(self, scheduler: Any) -> None:
        """Restore persisted state (alerts, silences, routing), then schedule evaluation and delivery."""
        await self.rules.restore()
        await self.reload_silences()
        persisted = await self.store.call(store.load_groups)
        self.router._persisted.update(persisted)
        # Resolve alerts of rules that no longer exist (removed while the daemon was down).
        await self.store.call(lambda c: store.drop_alerts_except(c, self.rules.rule_keys(), self.clock()))
        await self._resolve_untold(persisted)
        self._scheduler = scheduler
        self._started = True
        self._schedule()

    async def _resolve_untold(self, persisted: Mapping[str, tuple[float, str, list[str]]]) -> None:
        """Alerts a group last told as firing that are no longer active resolved without their groups
        hearing it: in the moment between the stored ``resolved`` event and the router's next flush (a
        crash there), or with their rule while the daemon was down. Hand them to the router as resolved,
        from their last history events, so the groups still send the resolved notification."""
        told = {fp for _, _, firing in persisted.values() for fp in firing}
        untold = sorted(told - {a.fingerprint for a in self.rules.active_alerts()})
        if not untold:
            return
        histories = await self.store.call(lambda c: [store.load_events(c, limit=2, fingerprint=fp) for fp in untold])
        resolved = []
        for events in histories:
            if not events or events[-1].event != AlertState.RESOLVED.value:
                continue  # no history left (retention): nothing to tell it with
            last = events[-1]
            fired = next((e.ts for e in events if e.event == AlertState.FIRING.value), None)
            alert = Alert("", dict(last.labels), dict(last.annotations), AlertState.RESOLVED, last.value,
                          last.active_at, fired, last.ts, condition=last.condition)  # fmt: skip
            resolved.append(alert)
        self.router.receive(resolved, self.clock(), self.external_url)

    async def stop(self) -> None:
        if self._scheduler is not None:
            for job in list(self._scheduler.get_jobs()):
                if job.id.startswith("rules:") or job.id in ("alerting-tick", "alerting-retention"):
                    job.remove()
        self._scheduler = None
        self._started = False

    def _schedule(self) -> None:
        sch = self._scheduler
        common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None, "replace_existing": True}
        wanted = set()
        for key, rt in self.rules.groups.items():
            job_id = f"rules:{key}"
            wanted.add(job_id)
            sch.add_job(
                self._evaluate_job, "interval", seconds=rt.group.interval_ms / 1000, id=job_id, args=[key], **common
            )
        for job in list(sch.get_jobs()):
            if job.id.startswith("rules:") and job.id not in wanted:
                job.remove()
        sch.add_job(self.tick, "interval", seconds=TICK_SECONDS, id="alerting-tick", **common)
        sch.add_job(self.maintain, "interval", minutes=10, id="alerting-retention", **common)

    async def _evaluate_job(self, key: str) -> None:
        try:
            await self.evaluate(key)
        except StorageUnavailable as exc:  # an outage the storage status already reports: one line, no traceback
            log.warning("evaluating rule group %s: results not stored: %s", key, exc)
        except Exception:
            log.exception("evaluating rule group %s failed", key)

    # ---------------------------------------------------------------- work
    async def evaluate(self, key: str | None = None, t: float | None = None) -> None:
        """Evaluate one rule group (or all) at ``t`` (default: now)."""
        keys = [key] if key is not None else list(self.rules.groups)
        for k in keys:
            if k in self.rules.groups:
                await self.rules.evaluate_group(k, t)

    async def tick(self, now: float | None = None) -> None:
        """Flush due notification groups into the outbox and deliver due notifications."""
        now = self.clock() if now is None else now
        async with self._lock:
            try:
                await self.router.flush(now)
                await self.outbox.deliver_due(now)
            except StorageUnavailable as exc:
                log.warning("notification delivery pass: %s (retried at the next tick)", exc)
            except Exception:
                log.exception("notification delivery pass failed")

    async def maintain(self, now: float | None = None) -> int:
        """Delete alert history, finished notifications and ended silences older than ``storage.retention``."""
        cutoff = (self.clock() if now is None else now) - self.config.storage.retention / 1000
        try:
            return int(await self.store.call(lambda c: store.delete_history_before(c, cutoff)))
        except Exception:
            log.exception("alerting retention failed")
            return 0

    async def _append(self, samples: list[Sample]) -> None:
        await self.writer.write(WriteBatch(samples=samples))

    async def _notify(self, alerts: list[Alert], t: float) -> None:
        self.router.receive(alerts, t, self.external_url)
        interval = min((rt.group.interval_ms for rt in self.rules.groups.values()), default=15_000) / 1000
        valid = 4 * max(interval, self.config.alerting.resend_delay / 1000)
        await self.am.send(alerts, t, valid, self.external_url)

    async def _enqueue(self, items: list[OutboxItem], states: list[GroupState], now: float) -> None:
        expires = now + self.config.alerting.outbox_expiry / 1000
        rows = [(i.key, i.notifier, i.group_key, i.payload, now, expires) for i in items]
        await self.store.call(lambda c: store.enqueue(c, rows, states))

    # ---------------------------------------------------------------- silences
    async def reload_silences(self) -> None:
        rows = await self.store.call(store.load_silences)
        self.silences = [Silence.from_row(r) for r in rows]

    async def add_silence(self, s: Silence) -> None:
        await self.store.call(lambda c: store.put_silence(c, s.row()))
        await self.reload_silences()

    async def expire_silence(self, silence_id: str) -> bool:
        now = self.clock()
        ok = bool(await self.store.call(lambda c: store.expire_silence(c, silence_id, now)))
        await self.reload_silences()
        return ok

    # ---------------------------------------------------------------- views and test notifications
    def active_alerts(self) -> list[Alert]:
        return self.rules.active_alerts()

    async def history(self, since: float = 0.0, limit: int = 10_000) -> list[store.EventRow]:
        return list(await self.store.call(lambda c: store.load_events(c, since, limit)))

    async def notify_test(self, name: str) -> str:
        """Send a test notification through one notifier now (stored in the outbox like any other)."""
        from mlwatch.notify.testmsg import make_test_payload

        if name not in self.channels:
            raise KeyError(name)
        now = self.clock()
        payload = make_test_payload(name, now, self.external_url)
        key = payload["mlwatch"]["idempotencyKey"]
        await self.store.call(
            lambda c: store.enqueue(
                c, [(key, name, "test", payload, now, now + self.config.alerting.outbox_expiry / 1000)]
            )
        )
        await self.outbox.deliver_due(now)
        rows = await self.store.call(lambda c: store.load_notifications(c, now - 1))
        row = next(r for r in rows if r.key == key)
        return "delivered" if row.status == "delivered" else f"{row.status}: {row.last_error}"

    def channel_names(self) -> Sequence[str]:
        return list(self.channels)


def _secret_values(notifiers: Any, env: Mapping[str, str]) -> frozenset[str]:
    """The values of every ``*_env`` secret the notifiers use (a receiver may echo one in its error)."""
    out: set[str] = set()

    def walk(model: Any) -> None:
        for name, value in model:
            if name.endswith("_env") and name != "username_env" and isinstance(value, str) and env.get(value):
                out.add(env[value])
            elif isinstance(value, BaseModel):
                walk(value)

    for n in notifiers:
        walk(n)
    return frozenset(out)
