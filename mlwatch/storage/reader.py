"""The read side of storage: series lookup by matchers, range reads into numpy, latest values.

Readers use their own connections (read-only ones in other processes), so they see everything
committed and never block the writer (WAL).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine

from mlwatch.model import Matcher, MetricMeta, MetricType, SeriesKey, is_stale_nan, matches_all
from mlwatch.storage.writer import PushGroupRecord, bits_to_float


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    key: SeriesKey


@dataclass(frozen=True, slots=True)
class LatestSample:
    series: SeriesInfo
    ts: int
    value: float


class Reader:
    """Read access to a database. Thread-safe; keeps an incrementally refreshed series index."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._series: dict[int, SeriesInfo] = {}
        self._by_name: dict[str, list[SeriesInfo]] = {}
        self._max_id = 0

    def _refresh(self) -> None:
        with self._lock, self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, metric, labels FROM series WHERE id > ? ORDER BY id", (self._max_id,)
            ).all()
            for sid, metric, labels in rows:
                info = SeriesInfo(sid, SeriesKey(metric, tuple(json.loads(labels).items())))
                self._series[sid] = info
                self._by_name.setdefault(metric, []).append(info)
                self._max_id = sid

    def series(self, matchers: Sequence[Matcher]) -> list[SeriesInfo]:
        """Every stored series whose labels satisfy all ``matchers`` (anchored regexes, as in PromQL)."""
        self._refresh()
        names = [m.value for m in matchers if m.name == "__name__" and m.op.value == "="]
        pool: Sequence[SeriesInfo]
        if names:
            pool = self._by_name.get(names[0], [])
        else:
            pool = list(self._series.values())
        return [s for s in pool if matches_all(matchers, s.key)]

    def read_range(self, series_id: int, start_ms: int, end_ms: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Timestamps and values of one series in ``[start_ms, end_ms]``, in time order, bit-exact."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
                (series_id, start_ms, end_ms),
            ).all()
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        data = np.array(rows, dtype=np.int64)
        return data[:, 0].copy(), data[:, 1].copy().view(np.float64)

    def latest(self, matchers: Sequence[Matcher], at_ms: int, lookback_ms: int) -> list[LatestSample]:
        """The newest sample at or before ``at_ms`` within ``lookback_ms`` of each matching series.

        A series whose newest sample is a staleness marker has no latest value, as in PromQL.
        """
        out: list[LatestSample] = []
        matched = self.series(matchers)
        if not matched:
            return out
        with self._engine.connect() as conn:
            for info in matched:
                row = conn.exec_driver_sql(
                    "SELECT ts, value FROM samples WHERE series_id = ? AND ts <= ? AND ts > ? "
                    "ORDER BY ts DESC LIMIT 1",
                    (info.id, at_ms, at_ms - lookback_ms),
                ).first()
                if row is not None and not is_stale_nan(value := bits_to_float(row[1])):
                    out.append(LatestSample(info, row[0], value))
        return out

    def metadata(self) -> dict[str, MetricMeta]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT metric, type, help, unit FROM metric_meta").all()
        return {name: MetricMeta(MetricType(typ), help_, unit) for name, typ, help_, unit in rows}

    def state(self, key: str) -> bytes | None:
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT value FROM source_state WHERE key = ?", (key,)).first()
        return None if row is None else bytes(row[0])

    def push_groups(self) -> list[PushGroupRecord]:
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT group_key, labels, families, push_time, failure_time, expires_at FROM push_groups"
            ).all()
        return [PushGroupRecord(k, json.loads(lbl), bytes(fam), pt, ft, exp) for k, lbl, fam, pt, ft, exp in rows]

    def count_samples(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT COUNT(*) FROM samples").scalar_one())
