"""Regression quality over a sliding window: MAE, RMSE, MAPE and R², as scikit-learn defines them.

Each bucket holds :class:`RegressionSums`: the count, the sums of absolute, squared and absolute
percentage errors (MAPE divides by ``max(|y|, eps)``, as scikit-learn does), and the targets' mean and
sum of squared deviations (merged with Chan's parallel formula, so R² has no catastrophic
cancellation however large the targets are). R² is undefined (no figure) when the targets in the
window have no variance (scikit-learn then returns 1 or 0 by convention).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlwatch.ml.classification import EPS, Undefined

__all__ = ["RegressionSums", "regression_figures"]


@dataclass(slots=True)
class RegressionSums:
    n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    abs_pct_err: float = 0.0
    target_sum: float = 0.0
    target_sq_sum: float = 0.0
    mean: float = 0.0  # of the targets
    m2: float = 0.0  # sum of squared deviations of the targets from their mean

    def add(self, target: float, prediction: float) -> None:
        err = target - prediction
        self.n += 1
        self.abs_err += abs(err)
        self.sq_err += err * err
        self.abs_pct_err += abs(err) / max(abs(target), EPS)
        self.target_sum += target
        self.target_sq_sum += target * target
        delta = target - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (target - self.mean)

    def merge(self, o: RegressionSums) -> None:
        if not o.n:
            return
        n = self.n + o.n
        delta = o.mean - self.mean
        self.m2 += o.m2 + delta * delta * self.n * o.n / n
        self.mean += delta * o.n / n
        self.n = n
        self.abs_err += o.abs_err
        self.sq_err += o.sq_err
        self.abs_pct_err += o.abs_pct_err
        self.target_sum += o.target_sum
        self.target_sq_sum += o.target_sq_sum

    @classmethod
    def sum_of(cls, parts: Iterable[RegressionSums]) -> RegressionSums:
        out = cls()
        for p in parts:
            out.merge(p)
        return out

    def to_json(self) -> Any:
        return [
            self.n,
            self.abs_err,
            self.sq_err,
            self.abs_pct_err,
            self.target_sum,
            self.target_sq_sum,
            self.mean,
            self.m2,
        ]

    @classmethod
    def from_json(cls, raw: Any) -> RegressionSums:
        n, *rest = raw
        return cls(int(n), *(float(x) for x in rest))


def regression_figures(s: RegressionSums) -> tuple[dict[str, float], list[Undefined]]:
    """``mae``, ``rmse``, ``mape``, ``r2`` of a window (those defined) and why the others are not."""
    if not s.n:
        return {}, [Undefined(m, "no_outcomes") for m in ("mae", "rmse", "mape", "r2")]
    values = {
        "mae": s.abs_err / s.n,
        "rmse": math.sqrt(s.sq_err / s.n),
        "mape": s.abs_pct_err / s.n,
    }
    undefined = []
    if s.m2 > 0:
        values["r2"] = 1.0 - s.sq_err / s.m2
    else:
        undefined.append(Undefined("r2", "constant_target"))
    return values, undefined
