"""The head: recent samples held as the append-only log records that carry them.

Every group commit appends one record to ``sample_log`` (three packed arrays: series ids, timestamps,
IEEE-754 value bits, in arrival order). The writer keeps the same records in memory until they are
compacted into chunks; readers in other processes decode them from the table. Within the log, a
later record wins over an earlier one for the same series and timestamp; the log wins over chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class LogRecord:
    id: int
    sids: I32
    ts: I64
    bits: I64

    def __len__(self) -> int:
        return len(self.sids)


def pack_record(sids: I32, ts: I64, bits: I64) -> bytes:
    return sids.astype("<i4").tobytes() + ts.astype("<i8").tobytes() + bits.astype("<i8").tobytes()


def unpack_record(record_id: int, n: int, data: bytes) -> LogRecord:
    sids = np.frombuffer(data, "<i4", n, 0)
    ts = np.frombuffer(data, "<i8", n, 4 * n)
    bits = np.frombuffer(data, "<i8", n, 12 * n)
    return LogRecord(record_id, sids, ts, bits)


@dataclass(frozen=True, slots=True)
class SortedSamples:
    """Samples of many series sorted by (series, ts), one per (series, ts): the last one written."""

    sids: I32
    ts: I64
    bits: I64
    uniq: I32  # the series present, ascending
    starts: I64  # uniq[i]'s samples are [starts[i], starts[i + 1])

    @classmethod
    def empty(cls) -> SortedSamples:
        z = np.zeros(0, np.int64)
        return cls(np.zeros(0, np.int32), z, z, np.zeros(0, np.int32), np.zeros(1, np.int64))

    @classmethod
    def of(cls, records: list[LogRecord]) -> SortedSamples:
        if not records:
            return cls.empty()
        sids = np.concatenate([r.sids for r in records])
        ts = np.concatenate([r.ts for r in records])
        bits = np.concatenate([r.bits for r in records])
        order = np.lexsort((ts, sids))  # stable: equal (series, ts) keep arrival order
        sids, ts, bits = sids[order], ts[order], bits[order]
        n = len(sids)
        keep = np.ones(n, bool)
        keep[:-1] = (sids[1:] != sids[:-1]) | (ts[1:] != ts[:-1])  # the last of each run wins
        if not keep.all():
            sids, ts, bits = sids[keep], ts[keep], bits[keep]
        uniq, first = np.unique(sids, return_index=True)
        starts = np.append(first, len(sids)).astype(np.int64)
        return cls(sids, ts, bits, uniq.astype(np.int32), starts)

    def __len__(self) -> int:
        return len(self.sids)

    def series(self, sid: int) -> tuple[I64, I64]:
        i = int(np.searchsorted(self.uniq, sid))
        if i >= len(self.uniq) or self.uniq[i] != sid:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lo, hi = int(self.starts[i]), int(self.starts[i + 1])
        return self.ts[lo:hi], self.bits[lo:hi]


def merge(old_ts: I64, old_bits: I64, new_ts: I64, new_bits: I64) -> tuple[I64, I64]:
    """Merge two sorted unique runs of one series; ``new`` wins on equal timestamps."""
    if len(old_ts) == 0:
        return new_ts, new_bits
    if len(new_ts) == 0:
        return old_ts, old_bits
    if old_ts[-1] < new_ts[0]:
        return np.concatenate([old_ts, new_ts]), np.concatenate([old_bits, new_bits])
    ts = np.concatenate([old_ts, new_ts])
    bits = np.concatenate([old_bits, new_bits])
    order = np.argsort(ts, kind="stable")
    ts, bits = ts[order], bits[order]
    keep = np.ones(len(ts), bool)
    keep[:-1] = ts[1:] != ts[:-1]
    return ts[keep], bits[keep]


@dataclass(frozen=True, slots=True)
class LogView:
    """An immutable view of the log for one read: parts sorted by (series, ts), older first."""

    parts: tuple[SortedSamples, ...] = ()

    def series(self, sid: int) -> tuple[I64, I64]:
        ts: I64 = np.zeros(0, np.int64)
        bits: I64 = np.zeros(0, np.int64)
        for ss in self.parts:
            pts, pbits = ss.series(sid)
            if len(pts):
                ts, bits = merge(ts, bits, pts, pbits)
        return ts, bits

    def sids(self) -> list[int]:
        return sorted({int(s) for ss in self.parts for s in ss.uniq.tolist()})

    def count(self) -> int:
        """Distinct (series, ts) pairs."""
        if len(self.parts) <= 1:
            return sum(len(ss) for ss in self.parts)
        return sum(len(self.series(sid)[0]) for sid in self.sids())


class LogIndex:
    """Decoded log records indexed by series, for readers; cheap to extend with new records.

    Records are kept in parts (older first), each part sorted by (series, ts); a lookup merges the
    parts so that newer records win. New records become a new part; parts are folded together
    when there are many, so the cost of sorting is paid about once per record. Parts are never
    mutated, so a :class:`LogView` taken earlier stays valid while the index moves on.
    """

    MAX_PARTS = 8

    def __init__(self) -> None:
        self._parts: list[tuple[list[LogRecord], SortedSamples]] = []
        self.lo = 0  # records below this id have been dropped
        self.hi = 0  # the newest record id added

    def records(self) -> list[LogRecord]:
        return [r for recs, _ in self._parts for r in recs]

    def drop_before(self, lo: int) -> None:
        """Forget records with id < ``lo`` (trimmed from the log)."""
        self.lo = max(self.lo, lo)
        parts = []
        for recs, ss in self._parts:
            if recs and recs[0].id < lo:
                keep = [r for r in recs if r.id >= lo]
                if keep:
                    parts.append((keep, SortedSamples.of(keep)))
            else:
                parts.append((recs, ss))
        self._parts = parts

    def add(self, records: list[LogRecord]) -> None:
        if not records:
            return
        self.hi = max(self.hi, records[-1].id)
        parts = [*self._parts, (records, SortedSamples.of(records))]
        if len(parts) > self.MAX_PARTS:
            recs = [r for rs, _ in parts for r in rs]
            parts = [(recs, SortedSamples.of(recs))]
        self._parts = parts

    def view(self) -> LogView:
        return LogView(tuple(ss for _, ss in self._parts))
