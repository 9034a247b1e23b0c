"""Range results are rendered by numpy all at once (jsonfmt._points_many); every character must be what
the point-by-point formatter (format_ts / format_value: Prometheus' timestamps and Go's 'f' -1 floats)
writes, for every kind of value and timestamp."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mlwatch.promql import jsonfmt

N = 3000


def reference(ts: np.ndarray, vals: np.ndarray) -> str:
    return ",".join(
        f'[{jsonfmt.format_ts(t)},"{jsonfmt.format_value(v)}"]' for t, v in zip(ts.tolist(), vals.tolist(), strict=True)
    )


SPECIAL = [
    0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 0.1,
    0.30000000000000004, 2.0**50, 2.0**50 - 1, 2.0**53, 1e15, 1e16, 1e-4, 9.999999999999999e-5,
    123456789012345.6, -0.001, 1 / 3, 2 / 300, -12.05, 1e22, 1e23, 1.5e-20,
    struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0],
]


def value_sets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "magnitudes": rng.standard_normal(N) * 10.0 ** rng.integers(-25, 25, N),
        "decimals": np.rint(rng.standard_normal(N) * 10**9) / 10.0 ** rng.integers(0, 12, N),
        "integers": rng.integers(-(10**9), 10**9, N).astype(float),
        "any bits": np.frombuffer(rng.bytes(8 * N), np.float64).copy(),
        "special": rng.choice(np.array(SPECIAL), N),
        "halves": (np.arange(N) % 97) * 0.5,
        "ratios": np.round(rng.random(N), 3) / 7,
    }


def timestamp_sets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    ts = np.sort(rng.integers(-(10**13), 10**13, N))
    return {
        "milliseconds": ts,
        "whole seconds": ts // 1000 * 1000,
        "a scrape grid": 1_700_000_000_000 + np.arange(N) * 15_000,
        "around zero": np.arange(N) - N // 2,
    }


@pytest.mark.parametrize("values", list(value_sets()))
@pytest.mark.parametrize("stamps", list(timestamp_sets()))
def test_vectorised_points_match_point_by_point(values: str, stamps: str) -> None:
    ts, vals = timestamp_sets()[stamps], value_sets()[values]
    assert jsonfmt._points(ts, vals) == reference(ts, vals)


def test_many_series_of_uneven_lengths_split_where_they_end() -> None:
    rng = np.random.default_rng(9)
    ts = timestamp_sets()["milliseconds"]
    for vals in value_sets().values():
        cuts = np.sort(rng.choice(np.arange(1, N), 20, replace=False))
        series = [*zip(np.split(ts, cuts), np.split(vals, cuts), strict=True), (ts[:0], vals[:0])]
        assert jsonfmt._points_many(series) == [reference(t, v) for t, v in series]


def test_short_series_take_the_point_by_point_path() -> None:
    ts, vals = timestamp_sets()["milliseconds"], value_sets()["special"]
    for n in range(6):
        assert jsonfmt._points(ts[:n], vals[:n]) == reference(ts[:n], vals[:n])
