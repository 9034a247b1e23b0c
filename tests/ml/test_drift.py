"""Drift statistics against scipy on known distributions, and the drift windows of an operator."""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatch.ml.drift import DriftWindow, ks_statistic, psi, psi_categorical, psi_numeric

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (lambda r: r.gauss(0, 1), lambda r: r.gauss(0, 1)),
        (lambda r: r.gauss(0, 1), lambda r: r.gauss(0.5, 1)),
        (lambda r: r.gauss(0, 1), lambda r: r.gauss(0, 3)),
        (lambda r: r.random(), lambda r: r.random() ** 2),
        (lambda r: float(r.randint(0, 5)), lambda r: float(r.randint(1, 6))),  # ties
    ],
)
def test_ks_equals_scipy_on_known_distributions(ref, cur) -> None:  # type: ignore[no-untyped-def]
    rnd = random.Random(7)
    a = [ref(rnd) for _ in range(800)]
    b = [cur(rnd) for _ in range(500)]
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60),
)
@settings(max_examples=100, deadline=None)
def test_ks_equals_scipy_on_any_samples(a: list[float], b: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact p-value may fall back; D is exact
        ref = stats.ks_2samp(a, b).statistic
    assert ks_statistic(a, b) == pytest.approx(ref, abs=1e-12)


def test_psi_values() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == 0.0
    r, c = [0.5, 0.5], [0.9, 0.1]
    assert psi([50, 50], [90, 10]) == pytest.approx(sum((y - x) * math.log(y / x) for x, y in zip(r, c, strict=True)))
    assert psi_categorical(Counter(a=5, b=5), Counter(a=5, b=5)) == 0.0
    assert psi_categorical(Counter(a=10), Counter(b=10)) == pytest.approx(2 * (1 - 1e-4) * math.log(1 / 1e-4))
    rnd = random.Random(1)
    same = psi_numeric([rnd.gauss(0, 1) for _ in range(5000)], [rnd.gauss(0, 1) for _ in range(5000)], 10)
    shifted = psi_numeric([rnd.gauss(0, 1) for _ in range(5000)], [rnd.gauss(1, 1) for _ in range(5000)], 10)
    assert same is not None and shifted is not None
    assert same < 0.02  # no shift
    assert shifted > 0.25  # a large one, by the usual rule of thumb


def test_drift_window_against_previous_window_and_baseline() -> None:
    prev = DriftWindow(True, 10_000, 1000, "previous", 10)
    base = DriftWindow(True, 10_000, 1000, "baseline", 10)
    rnd = random.Random(3)
    values = {}
    for ts in range(1, 30_001, 10):  # 0-10 s: N(0,1); 10-20 s: N(0,1); 20-30 s: N(2,1)
        x = rnd.gauss(2 if ts > 20_000 else 0, 1)
        values[ts] = x
        prev.add(ts, x)
        base.add(ts, x)
    figs = prev.figures(30_000)
    cur = [v for ts, v in values.items() if 20_000 < ts <= 30_000]
    before = [v for ts, v in values.items() if 10_000 < ts <= 20_000]
    assert figs["ks"] == pytest.approx(stats.ks_2samp(before, cur).statistic, abs=1e-12)
    assert figs["psi"] > 0.25
    bfigs = base.figures(30_000)
    first = [v for ts, v in values.items() if ts <= 10_000]
    assert bfigs["ks"] == pytest.approx(stats.ks_2samp(first, cur).statistic, abs=1e-12)
    restored = DriftWindow(True, 10_000, 1000, "baseline", 10)
    restored.restore(base.snapshot())
    assert restored.figures(30_000) == bfigs
