"""The chunk encoding: every timestamp and value bit pattern comes back, chunks fit their budget."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatch.model import STALE_NAN_BITS
from mlwatch.storage.chunks import CHUNK_BUDGET, decode_chunk, encode_chunk, split_chunks

I64 = st.integers(-(2**63), 2**63 - 1)
special_bits = st.sampled_from(
    [STALE_NAN_BITS, 0x7FF8000000000000, 0xFFF8000000000001 - 2**64, 0x7FF0000000000000, -(2**63), 0, 1]
)
decimals = st.integers(-(10**9), 10**9).map(lambda m: float(np.float64(m) / 1000.0))
value_bits = st.one_of(
    special_bits,
    I64,
    decimals.map(lambda v: int(np.float64(v).view(np.int64))),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: int(np.float64(v).view(np.int64))),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    ts = draw(st.lists(I64, min_size=1, max_size=400, unique=True))
    if draw(st.booleans()):  # scrape-like: regular steps with jitter
        start = draw(st.integers(-(2**50), 2**50))
        step = draw(st.integers(1, 60_000))
        n = draw(st.integers(1, 3000))
        jitter = draw(st.integers(0, 50))
        rng = np.random.default_rng(draw(st.integers(0, 2**32)))
        arr = np.unique(start + step * np.arange(n) + rng.integers(0, jitter + 1, n))
    else:
        arr = np.array(sorted(ts), np.int64)
    kind = draw(st.sampled_from(["mixed", "walk", "counter"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    if kind == "walk":
        vals = np.round(np.cumsum(rng.normal(0, 1, len(arr))), draw(st.integers(0, 6)))
        b = vals.view(np.int64).copy()
        for i in draw(st.lists(st.integers(0, len(arr) - 1), max_size=5)):
            b[i] = draw(special_bits)
    elif kind == "counter":
        b = np.cumsum(rng.integers(0, 100, len(arr))).astype(np.float64).view(np.int64)
    else:
        b = np.array(draw(st.lists(value_bits, min_size=len(arr), max_size=len(arr))), np.int64)
    return arr.astype(np.int64), b


@settings(max_examples=150, deadline=None)
@given(runs())
def test_split_and_decode_is_bit_exact(run: tuple[np.ndarray, np.ndarray]) -> None:
    ts, b = run
    out = split_chunks(ts, b)
    got_t = np.concatenate([decode_chunk(d)[0] for *_, d in out])
    got_b = np.concatenate([decode_chunk(d)[1] for *_, d in out])
    assert got_t.tolist() == ts.tolist()
    assert got_b.tolist() == b.tolist()
    assert all(len(d) <= CHUNK_BUDGET for *_, d in out)
    for cts, cb, d in out:
        t2, b2 = decode_chunk(d)
        assert t2.tolist() == cts.tolist() and b2.tolist() == cb.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(I64, value_bits), min_size=1, max_size=50, unique_by=lambda p: p[0]))
def test_single_chunk_roundtrip(pairs: list[tuple[int, int]]) -> None:
    pairs.sort()
    ts = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    t2, b2 = decode_chunk(encode_chunk(ts, b))
    assert t2.tolist() == ts.tolist() and b2.tolist() == b.tolist()


def test_three_decimal_walk_is_compact() -> None:
    rng = np.random.default_rng(7)
    ts = 1_700_000_000_000 + 15_000 * np.arange(10_000)
    vals = np.round(100 + np.cumsum(rng.normal(0, 1, 10_000)), 3)
    out = split_chunks(ts, vals.view(np.int64))
    size = sum(len(d) for *_, d in out)
    assert size / 10_000 < 2.0
    assert sum(len(d) for *_, d in out[:-1]) > 0.95 * CHUNK_BUDGET * (len(out) - 1)  # pages are filled
