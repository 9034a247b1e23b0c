"""How far a figure computed on a sample may be from the population's.

- :func:`wilson_interval`: the Wilson score interval of a proportion (accuracy is one), which unlike
  the normal approximation stays inside [0, 1] and behaves at 0 and n successes;
- :func:`stratified_estimate`: the population proportion from a stratified sample, each stratum's
  sample proportion weighted by the stratum's share of the population (the standard estimator
  ``Σ_h (N_h / N) · p_h``, unbiased for simple random sampling within strata), with its normal
  interval from ``Var = Σ_h (N_h/N)² · p_h(1-p_h)/n_h · (1 - n_h/N_h)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["StratumCounts", "stratified_estimate", "wilson_interval", "z_of"]


def z_of(level: float) -> float:
    """The two-sided normal quantile of a confidence level (0.95 -> 1.959963...)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float] | None:
    """``(lower, upper)`` of the Wilson score interval, or None when ``n`` is 0."""
    if n <= 0:
        return None
    z = z_of(level)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class StratumCounts:
    population: int  # N_h: lines of this stratum in the population (before sampling)
    sampled: int  # n_h: of those, sampled (and labelled)
    successes: float  # of the sampled, correct (or: positive)


def stratified_estimate(strata: Mapping[str, StratumCounts], level: float = 0.95) -> tuple[float, float, float] | None:
    """``(estimate, lower, upper)`` of the population proportion; None when nothing was sampled.

    Strata with a population but no sample cannot be estimated; they are left out and the estimate
    is for the strata that were sampled (a stratified sampler keeps the first line of every stratum,
    so this happens only when labels are missing)."""
    usable = {h: s for h, s in strata.items() if s.sampled > 0 and s.population > 0}
    total = sum(s.population for s in usable.values())
    if not total:
        return None
    estimate = 0.0
    variance = 0.0
    for s in usable.values():
        w = s.population / total
        p = s.successes / s.sampled
        estimate += w * p
        fpc = max(0.0, 1 - s.sampled / s.population)
        variance += w * w * p * (1 - p) / s.sampled * fpc
    half = z_of(level) * math.sqrt(variance)
    return estimate, max(0.0, estimate - half), min(1.0, estimate + half)
