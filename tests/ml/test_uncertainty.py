"""Wilson intervals and the stratified estimator (its bias measured on synthetic data)."""

from __future__ import annotations

import random

import pytest

from mlwatch.ml.uncertainty import StratumCounts, stratified_estimate, wilson_interval


def test_wilson_known_values() -> None:
    lo, hi = wilson_interval(0, 10)  # type: ignore[misc]
    assert lo == pytest.approx(0.0, abs=1e-15) and hi == pytest.approx(0.27753, abs=1e-5)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(("k", "n", "level"), [(81, 263, 0.95), (0, 5, 0.9), (5, 5, 0.99), (950, 1000, 0.95)])
def test_wilson_equals_scipy(k: int, n: int, level: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = wilson_interval(k, n, level)  # type: ignore[misc]
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_coverage_on_synthetic_samples() -> None:
    rnd = random.Random(11)
    p, n, hits = 0.9, 200, 0
    for _ in range(2000):
        k = sum(rnd.random() < p for _ in range(n))
        lo, hi = wilson_interval(k, n, 0.95)  # type: ignore[misc]
        hits += lo <= p <= hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_stratified_estimate_is_unbiased_where_the_plain_mean_is_not() -> None:
    # a population where a rare stratum is much less accurate; a fixed number per stratum is sampled
    rnd = random.Random(5)
    sizes = {"common": 9000, "rare": 1000}
    accuracy = {"common": 0.95, "rare": 0.5}
    truth = sum(sizes[h] * accuracy[h] for h in sizes) / sum(sizes.values())  # 0.905
    estimates, plain = [], []
    for _ in range(400):
        strata = {}
        for h, size in sizes.items():
            population = [rnd.random() < accuracy[h] for _ in range(size)]
            sample = rnd.sample(population, 100)
            strata[h] = StratumCounts(size, 100, sum(sample))
        est = stratified_estimate(strata)
        assert est is not None
        estimates.append(est[0])
        plain.append(sum(s.successes for s in strata.values()) / 200)
    mean = sum(estimates) / len(estimates)
    assert abs(mean - truth) < 0.003  # unbiased (standard error of the mean ≈ 0.0006)
    assert abs(sum(plain) / len(plain) - truth) > 0.15  # the unweighted sample figure is far off
    lo_hi = stratified_estimate({"a": StratumCounts(100, 100, 90)})
    assert lo_hi == (0.9, 0.9, 0.9)  # a census has no sampling error
