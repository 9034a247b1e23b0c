"""Fakes for rule tests: a scripted query function, an in-memory state store, a sample sink."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlwatch.model import Sample
from mlwatch.rules.evaluation import RuleManager
from mlwatch.rules.state import Alert
from mlwatch.storage.alertstore import AlertRow, EventRow


@dataclass
class Clock:
    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Script:
    """``values[expr]`` is a list of (labels, value) or a callable of t."""

    values: dict[str, Any] = field(default_factory=dict)

    def __call__(self, expr: str, t: float) -> list[tuple[Mapping[str, str], float]]:
        v = self.values.get(expr, [])
        return list(v(t) if callable(v) else v)


@dataclass
class MemoryStore:
    rows: dict[tuple[str, str], AlertRow] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)

    async def load(self) -> list[AlertRow]:
        return list(self.rows.values())

    async def save(self, upserts: list[AlertRow], deletes: list[tuple[str, str]], events: list[EventRow]) -> None:
        for r in upserts:
            self.rows[(r.rule_key, r.fingerprint)] = r
        for k in deletes:
            self.rows.pop(k, None)
        self.events += events


@dataclass
class Sink:
    samples: list[Sample] = field(default_factory=list)
    notified: list[tuple[float, list[Alert]]] = field(default_factory=list)

    async def append(self, samples: list[Sample]) -> None:
        self.samples += samples

    async def notify(self, alerts: list[Alert], t: float) -> None:
        self.notified.append((t, list(alerts)))

    def at(self, t: float) -> dict[str, float]:
        out = {}
        for s in self.samples:
            if s.ts == round(t * 1000):
                out[s.key.canonical()] = s.value
        return out


def is_stale(v: float) -> bool:
    import struct

    from mlwatch.model import STALE_NAN_BITS

    return math.isnan(v) and struct.unpack("<Q", struct.pack("<d", v))[0] == STALE_NAN_BITS


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rig(clock: Clock) -> tuple[RuleManager, Script, MemoryStore, Sink]:
    script, store, sink = Script(), MemoryStore(), Sink()
    mgr = RuleManager(script, sink.append, store, sink.notify, clock=clock, external_labels={"site": "lab"})
    return mgr, script, store, sink
