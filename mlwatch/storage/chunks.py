"""Compressed per-series chunks: the encoding, vectorised with numpy.

A chunk holds up to a few thousand samples of one series and is sized to fit one database page
(no overflow pages). Timestamps are stored as delta-of-delta; values either as decimal-scaled
integers (delta or delta-of-delta, whichever is smaller: the 3-decimal gauges and counters that
monitoring mostly sees) or, when values are not short decimals, as the XOR of consecutive IEEE-754
bit patterns with per-block leading/trailing zero trimming. Values that do not fit the decimal
scheme (staleness markers, other NaNs, -0.0, infinities) are kept verbatim as exceptions, so every
value reads back bit-exact.

Streams are cut into blocks of :data:`BLOCK` samples; each block is bit-packed at the width of its
widest (zig-zagged) entry. Layout of a chunk::

    header (_HDR) | ts widths [nb] | value widths [nb] | (xor: value shifts [nb])
    | packed ts | packed values | exception positions u32[k] | exception bits u64[k]
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

if sys.byteorder != "little":  # pragma: no cover - the packed formats below are little-endian
    raise ImportError("mlwatch storage needs a little-endian machine")

BLOCK = 128
PAGE_SIZE = 8192  # fixed by migration 0001
# Largest blob that stays on its table leaf page with the other columns of a ``chunks`` row
# (SQLite keeps up to usable_size - 35 bytes of a row's payload locally).
CHUNK_BUDGET = PAGE_SIZE - 35 - 64
MAX_SCALE = 15
MAX_SAMPLES = 64 * BLOCK  # per chunk: bounds the work of reading a short range of a dull series
# A chunk spans at most this long (from its first block's start; retention deletes whole chunks, so
# this bounds how long data outlives its retention), unless one block already spans longer.
MAX_SPAN_MS = 86400_000

MODE_XOR, MODE_DEC_DELTA, MODE_DEC_DOD = 0, 1, 2
_HDR = struct.Struct("<BBBBIIqqqq")  # version, mode, scale, pad, n, n_exc, t0, d0, v0, v1
VERSION = 1
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_POW10 = [10.0**s for s in range(MAX_SCALE + 1)]
_LIMIT = float(2**53)


# ---------------------------------------------------------------- bit helpers


def _zigzag(a: I64) -> U64:
    return ((a << 1) ^ (a >> 63)).view(np.uint64)


def _unzigzag(u: U64) -> I64:
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _bit_length(u: U64) -> npt.NDArray[np.int64]:
    if len(u) <= 64:  # per-block widths: a handful of entries, where numpy's call overhead dominates
        return np.array([x.bit_length() for x in u.tolist()], np.int64)
    x = u.copy()
    n = np.zeros(len(u), np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        m = x >= np.uint64(1 << s)
        n[m] += s
        x[m] >>= np.uint64(s)
    return n + (x > 0)


def _block_or(u: U64) -> U64:
    return np.bitwise_or.reduceat(u, np.arange(0, len(u), BLOCK)) if len(u) else np.zeros(0, np.uint64)


def _block_lengths(n: int) -> npt.NDArray[np.int64]:
    nb = -(-n // BLOCK)
    lens = np.full(nb, BLOCK, np.int64)
    if nb:
        lens[-1] = n - BLOCK * (nb - 1)
    return lens


def _pack(u: U64, widths: npt.NDArray[np.int64]) -> bytes:
    """Concatenate the low ``widths[block]`` bits of each entry, LSB first (entries fit their width).

    Bit ranges never overlap, so OR-ing entries into 64-bit words is adding them: each word is a
    reduceat over the entries that start in it, plus the spill-over of the entry before.
    """
    n = len(u)
    if n == 0 or not widths.any():
        return b""
    w_e = np.repeat(widths, _block_lengths(n))
    ends = np.cumsum(w_e)
    total = int(ends[-1])
    nz = w_e > 0
    if not nz.all():
        u, w_e, ends = u[nz], w_e[nz], ends[nz]
    pos = ends - w_e
    word = pos >> 6
    sh = (pos & 63).astype(np.uint64)
    lo = u << sh
    hi = (u >> (np.uint64(63) - sh)) >> np.uint64(1)  # u >> (64 - sh), and 0 when sh == 0
    starts = np.flatnonzero(np.concatenate([[True], word[1:] != word[:-1]]))
    words = np.zeros(total // 64 + 2, np.uint64)
    first = word[starts]
    words[first] = np.add.reduceat(lo, starts)
    words[first + 1] |= np.add.reduceat(hi, starts)
    return words.view(np.uint8)[: (total + 7) // 8].tobytes()


def _packed_len(widths: npt.NDArray[np.int64], n: int) -> int:
    return int((widths * _block_lengths(n)).sum() + 7) // 8


def _unpack(buf: npt.NDArray[np.uint8], widths: npt.NDArray[np.int64], n: int) -> U64:
    if n == 0 or not widths.any():
        return np.zeros(n, np.uint64)
    w_e = np.repeat(widths, _block_lengths(n))
    ends = np.cumsum(w_e)
    pos = ends - w_e
    padded = np.zeros(len(buf) + 9, np.uint8)
    padded[: len(buf)] = buf
    byte = pos >> 3
    sh = (pos & 7).astype(np.uint64)
    g = padded[byte[:, None] + np.arange(9)]
    lo = np.ascontiguousarray(g[:, :8]).view(np.uint64)[:, 0]
    hi = g[:, 8].astype(np.uint64)
    v = (lo >> sh) | ((hi << (np.uint64(63) - sh)) << np.uint64(1))
    mask: U64 = np.where(w_e == 0, np.uint64(0), _ALL >> (64 - np.maximum(w_e, 1)).astype(np.uint64))
    out: U64 = v & mask
    return out


# ---------------------------------------------------------------- streams


def _ts_stream(ts: I64) -> U64:
    d = np.zeros(len(ts), np.int64)
    if len(ts) > 2:
        delta = np.diff(ts)
        d[2:] = np.diff(delta)
    return _zigzag(d)


@dataclass(frozen=True, slots=True)
class _Values:
    mode: int
    scale: int
    stream: U64  # zig-zagged deltas / xors, one per sample, first entries zero
    shifts: npt.NDArray[np.int64] | None  # xor: per-block trailing zeros
    widths: npt.NDArray[np.int64]
    v0: int
    v1: int
    exc_pos: npt.NDArray[np.uint32]
    exc_bits: I64


def _choose_scale(vals: F64, bits: I64) -> int | None:
    """The decimal scale that represents most of a sample of the values exactly (None: use XOR)."""
    sample = vals[np.isfinite(vals)][:64]
    if len(sample) == 0:
        return None
    best, best_hits = None, len(sample) // 2
    with np.errstate(all="ignore"):
        for s in range(MAX_SCALE + 1):
            p = _POW10[s]
            m = np.rint(sample * p)
            small = np.abs(m) < _LIMIT
            if not small.any():
                break
            mi = np.where(small, m, 0.0).astype(np.int64)
            hits = int(((mi.astype(np.float64) / p).view(np.int64) == sample.view(np.int64)).sum())
            if hits > best_hits:
                best, best_hits = s, hits
                if hits == len(sample):
                    break
    return best


def _decimal(vals: F64, bits: I64, scale: int) -> tuple[I64, npt.NDArray[np.bool_]]:
    p = _POW10[scale]
    with np.errstate(all="ignore"):
        m = np.rint(vals * p)
        ok = np.isfinite(m) & (np.abs(m) < _LIMIT)
        mi = np.where(ok, m, 0.0).astype(np.int64)
        ok &= (mi.astype(np.float64) / p).view(np.int64) == bits
    return mi, ok


def _xor_values(bits: I64) -> _Values:
    n = len(bits)
    x = np.zeros(n, np.uint64)
    u = bits.view(np.uint64)
    x[1:] = u[1:] ^ u[:-1]
    ors = _block_or(x)
    low = ors & (np.uint64(0) - ors)  # lowest set bit
    shifts = np.where(ors == 0, 0, _bit_length(low) - 1)
    x >>= np.repeat(shifts, _block_lengths(n)).astype(np.uint64)
    widths = _bit_length(_block_or(x))
    return _Values(MODE_XOR, 0, x, shifts, widths, int(bits[0]), 0, np.zeros(0, np.uint32), np.zeros(0, np.int64))


_AUTO = -1


def _value_streams(vals: F64, bits: I64, scale: int | None = _AUTO) -> _Values:
    """The value stream; ``scale`` is the decimal scale to try (None: XOR; _AUTO: choose)."""
    n = len(vals)
    if scale == _AUTO:
        scale = _choose_scale(vals, bits)
    if scale is not None:
        mi, ok = _decimal(vals, bits, scale)
        n_exc = n - int(ok.sum())
        if n_exc <= n // 16 + 1 and ok.any():
            if n_exc:
                idx = np.where(ok, np.arange(n), -1)
                np.maximum.accumulate(idx, out=idx)
                first = int(np.argmax(ok))
                mi = mi[np.where(idx >= 0, idx, first)]
            d = np.zeros(n, np.int64)
            d[1:] = np.diff(mi)
            dd = np.zeros(n, np.int64)
            dd[2:] = np.diff(d[1:])
            zd, zdd = _zigzag(d), _zigzag(dd)
            wd, wdd = _bit_length(_block_or(zd)), _bit_length(_block_or(zdd))
            bad = ~ok
            exc_pos = np.flatnonzero(bad).astype(np.uint32)
            exc_bits = bits[bad]
            v1 = int(d[1]) if n > 1 else 0
            if _packed_len(wdd, n) < _packed_len(wd, n):
                return _Values(MODE_DEC_DOD, scale, zdd, None, wdd, int(mi[0]), v1, exc_pos, exc_bits)
            return _Values(MODE_DEC_DELTA, scale, zd, None, wd, int(mi[0]), 0, exc_pos, exc_bits)
    return _xor_values(bits)


# ---------------------------------------------------------------- chunks


def encode_chunk(ts: I64, bits: I64, scale: int | None = _AUTO) -> bytes:
    """One chunk of sorted, unique timestamps ``ts`` and IEEE-754 bit patterns ``bits``.

    ``scale``: the decimal scale to try (as chosen by :func:`plan_chunks`); by default it is chosen here.
    """
    n = len(ts)
    if n == 0:
        raise ValueError("empty chunk")
    return _assemble(ts, _value_streams(bits.view(np.float64), bits, scale), _ts_stream(ts))


def _assemble(ts: I64, v: _Values, tstream: U64) -> bytes:
    n = len(ts)
    twidths = _bit_length(_block_or(tstream))
    d0 = int(ts[1]) - int(ts[0]) if n > 1 else 0
    parts = [
        _HDR.pack(VERSION, v.mode, v.scale, 0, n, len(v.exc_pos), int(ts[0]), _wrap(d0), _wrap(v.v0), v.v1),
        twidths.astype(np.uint8).tobytes(),
        v.widths.astype(np.uint8).tobytes(),
    ]
    if v.shifts is not None:
        parts.append(v.shifts.astype(np.uint8).tobytes())
    parts += [_pack(tstream, twidths), _pack(v.stream, v.widths), v.exc_pos.tobytes(), v.exc_bits.tobytes()]
    return b"".join(parts)


def _wrap(x: int) -> int:
    return (x + 2**63) % 2**64 - 2**63


def decode_chunk(data: bytes) -> tuple[I64, I64]:
    """Timestamps and IEEE-754 bit patterns of a chunk (bit-exact inverse of :func:`encode_chunk`)."""
    version, mode, scale, _, n, n_exc, t0, d0, v0, v1 = _HDR.unpack_from(data, 0)
    if version != VERSION:
        raise ValueError(f"unknown chunk version {version}")
    buf = np.frombuffer(data, np.uint8)
    nb = -(-n // BLOCK)
    off = _HDR.size
    twidths = buf[off : off + nb].astype(np.int64)
    off += nb
    vwidths = buf[off : off + nb].astype(np.int64)
    off += nb
    shifts = None
    if mode == MODE_XOR:
        shifts = buf[off : off + nb].astype(np.int64)
        off += nb
    tlen = _packed_len(twidths, n)
    dod = _unzigzag(_unpack(buf[off : off + tlen], twidths, n))
    off += tlen
    vlen = _packed_len(vwidths, n)
    raw = _unpack(buf[off : off + vlen], vwidths, n)
    off += vlen

    delta = np.cumsum(dod)  # dod[0] = dod[1] = 0
    delta += d0
    delta[0] = 0
    ts = np.cumsum(delta)
    ts += t0

    if mode == MODE_XOR:
        assert shifts is not None
        raw <<= np.repeat(shifts, _block_lengths(n)).astype(np.uint64)
        raw[0] = np.int64(v0).view(np.uint64)
        bits = np.bitwise_xor.accumulate(raw).view(np.int64)
    else:
        d = _unzigzag(raw)
        if mode == MODE_DEC_DOD:
            d = np.cumsum(d)
            d += v1
            d[0] = 0
        d[0] = v0
        m = np.cumsum(d)
        bits = (m.astype(np.float64) / _POW10[scale]).view(np.int64)
        if n_exc:
            pos = np.frombuffer(data, np.uint32, n_exc, off)
            bits[pos] = np.frombuffer(data, np.int64, n_exc, off + 4 * n_exc)
    return ts, bits


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Where a run of samples is cut into chunks, and the decimal scale to encode them with."""

    bounds: list[tuple[int, int, int]]  # (start, end, estimated bytes) per chunk
    scale: int | None
    whole: tuple[_Values, U64] | None = None  # the run's streams, reused when it is one chunk


def plan_chunks(ts: I64, bits: I64, budget: int | None = None) -> ChunkPlan:
    """Cut a sorted, unique run of samples into chunks of at most ``budget`` bytes (estimated).

    Boundaries fall on block boundaries; sizes are estimated from the whole run's block widths,
    an upper bound for each chunk except in rare exception patterns (:func:`encode_run` checks).
    """
    n = len(ts)
    budget = CHUNK_BUDGET if budget is None else budget
    vals = bits.view(np.float64)
    v = _value_streams(vals, bits)
    tstream = _ts_stream(ts)
    tw = _bit_length(_block_or(tstream))
    lens = _block_lengths(n)
    cost = (tw + v.widths) * lens  # bits per block
    per_block = (cost + 7) // 8 + (3 if v.shifts is not None else 2)
    if len(v.exc_pos):
        per_block += 12 * np.bincount(v.exc_pos // BLOCK, minlength=len(lens))
    csum = np.concatenate([[0], np.cumsum(per_block)])
    block_t0 = ts[::BLOCK]
    room = budget - _HDR.size
    bounds = []
    b = 0
    nb = len(lens)
    while b < nb:
        e = int(np.searchsorted(csum, csum[b] + room, side="right")) - 1
        span_end = min(int(block_t0[b]) + MAX_SPAN_MS, 2**63 - 1)
        e_span = int(np.searchsorted(block_t0, span_end, side="right"))
        e = min(max(min(e, e_span), b + 1), nb, b + MAX_SAMPLES // BLOCK)
        bounds.append((b * BLOCK, min(e * BLOCK, n), int(csum[e] - csum[b]) + _HDR.size))
        b = e
    return ChunkPlan(bounds, None if v.mode == MODE_XOR else v.scale, (v, tstream) if len(bounds) == 1 else None)


def encode_run(
    ts: I64, bits: I64, scale: int | None, budget: int | None = None, whole: tuple[_Values, U64] | None = None
) -> list[tuple[I64, I64, bytes]]:
    """Encode one planned chunk; split further in the rare case it comes out over budget.

    ``whole``: the plan's streams, when the chunk is the plan's whole run.
    """
    budget = CHUNK_BUDGET if budget is None else budget
    data = _assemble(ts, *whole) if whole is not None else encode_chunk(ts, bits, scale)
    if len(data) <= budget or len(ts) <= BLOCK:
        return [(ts, bits, data)]
    half = max(BLOCK, (len(ts) // 2) // BLOCK * BLOCK)
    return encode_run(ts[:half], bits[:half], scale, budget) + encode_run(ts[half:], bits[half:], scale, budget)


def split_chunks(ts: I64, bits: I64, budget: int | None = None) -> list[tuple[I64, I64, bytes]]:
    """Encode a sorted, unique run of samples as chunks of at most ``budget`` bytes each."""
    if len(ts) == 0:
        return []
    plan = plan_chunks(ts, bits, budget)
    out: list[tuple[I64, I64, bytes]] = []
    for lo, hi, _ in plan.bounds:
        out.extend(encode_run(ts[lo:hi], bits[lo:hi], plan.scale, budget, plan.whole))
    return out
