"""Classification quality from confusion matrices summed over a sliding window.

An *outcome* is a pair ``(true, predicted)`` of class values (as label text). Each bucket of a
:class:`~mlwatch.ml.windows.BucketWindow` holds a :class:`ConfusionCounts`; the window's figures come
from the summed matrix, exactly as scikit-learn computes them on the same outcomes:

- binary (``positive`` given; every other value is the negative class): accuracy, precision, recall
  and F1 of the positive class; with a score (the positive class' probability) also log-loss
  (probabilities clipped to ``[eps, 1 - eps]`` as scikit-learn does) and a binned ROC AUC;
- multiclass: accuracy, and precision, recall, F1 per class and as ``macro``, ``micro`` and
  ``weighted`` averages over the classes present (true or predicted) in the window; with scores
  (a mapping class → probability) also log-loss and a one-vs-rest binned ROC AUC per class and as
  ``macro`` and ``weighted`` (by the class' positives) averages over the classes whose AUC is defined
  (scikit-learn's ``roc_auc_score(multi_class="ovr")``).

F1 is ``2·TP / (2·TP + FP + FN)``, which equals ``2PR / (P + R)`` wherever that is defined and is 0
when a class has errors but no true positive (scikit-learn's definition). A ratio whose denominator
is 0 is *undefined*: it yields no figure (:class:`Undefined` says why), and an average leaves such
classes out (scikit-learn's ``zero_division=np.nan``).

Binned ROC AUC: scores in ``[0, 1]`` fall into ``bins`` equal bins and AUC is computed from the
per-bin positive/negative counts, pairs in the same bin counting one half. It differs from the
exact AUC by at most ``auc_error_bound`` = ``Σ_b pos_b·neg_b / (2·P·N)`` (only same-bin pairs can be
ranked wrongly, each by at most one half), which is returned with it. One-vs-rest, each class has
its own bins (the class' score of its outcomes as positives, of the other outcomes as negatives) and
bound; an average's bound is the same average of the classes' bounds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EPS",
    "BinaryFigures",
    "ConfusionCounts",
    "Undefined",
    "binary_figures",
    "class_counts",
    "multiclass_figures",
]

EPS = 2.220446049250313e-16  # numpy.finfo(float64).eps, scikit-learn's clipping for log-loss


@dataclass(slots=True)
class ConfusionCounts:
    """The outcomes of one bucket (or a whole window): a confusion matrix plus score statistics."""

    cm: Counter[tuple[str, str]] = field(default_factory=Counter)  # (true, predicted) -> count
    log_loss_sum: float = 0.0
    scored: int = 0  # outcomes with a score (log-loss and AUC cover these)
    pos_bins: Counter[int] = field(default_factory=Counter)
    neg_bins: Counter[int] = field(default_factory=Counter)
    # multiclass one-vs-rest AUC: class -> (positive bins, negative bins)
    class_bins: dict[str, tuple[Counter[int], Counter[int]]] = field(default_factory=dict)

    def add(self, true: str, pred: str, n: int = 1) -> None:
        self.cm[(true, pred)] += n

    def add_score(self, is_positive: bool, score: float, bins: int) -> None:
        p = min(max(score, EPS), 1 - EPS)
        self.log_loss_sum -= math.log(p) if is_positive else math.log1p(-p)
        self.scored += 1
        (self.pos_bins if is_positive else self.neg_bins)[_bin(score, bins)] += 1

    def add_probability(self, p_true: float) -> None:
        """A multiclass score: the probability the model gave the true class (log-loss only)."""
        self.log_loss_sum -= math.log(min(max(p_true, EPS), 1 - EPS))
        self.scored += 1

    def add_class_scores(self, true: str, scores: dict[str, float], bins: int) -> None:
        """A multiclass score for the one-vs-rest AUC: each class' probability goes to that class'
        positive bins (the outcome is of that class) or negative bins; a true class missing from the
        mapping counts as probability 0."""
        if true not in scores:
            scores = {**scores, true: 0.0}
        for c, x in scores.items():
            pos, neg = self.class_bins.get(c) or self.class_bins.setdefault(c, (Counter(), Counter()))
            (pos if c == true else neg)[_bin(x, bins)] += 1

    def merge(self, other: ConfusionCounts) -> None:
        self.cm.update(other.cm)
        self.log_loss_sum += other.log_loss_sum
        self.scored += other.scored
        self.pos_bins.update(other.pos_bins)
        self.neg_bins.update(other.neg_bins)
        for c, (pos, neg) in other.class_bins.items():
            mine = self.class_bins.get(c) or self.class_bins.setdefault(c, (Counter(), Counter()))
            mine[0].update(pos)
            mine[1].update(neg)

    @property
    def total(self) -> int:
        return sum(self.cm.values())

    @classmethod
    def sum_of(cls, parts: Iterable[ConfusionCounts]) -> ConfusionCounts:
        out = cls()
        for p in parts:
            out.merge(p)
        return out

    def to_json(self) -> Any:
        return [
            [[t, p, n] for (t, p), n in self.cm.items()],
            self.log_loss_sum,
            self.scored,
            sorted(self.pos_bins.items()),
            sorted(self.neg_bins.items()),
            [[c, sorted(pos.items()), sorted(neg.items())] for c, (pos, neg) in sorted(self.class_bins.items())],
        ]

    @classmethod
    def from_json(cls, raw: Any) -> ConfusionCounts:
        cm, ll, scored, pos, neg = raw[:5]
        per_class = raw[5] if len(raw) > 5 else []  # state written before the multiclass AUC has none
        return cls(
            Counter({(str(t), str(p)): int(n) for t, p, n in cm}),
            float(ll),
            int(scored),
            _bins(pos),
            _bins(neg),
            {str(c): (_bins(cp), _bins(cn)) for c, cp, cn in per_class},
        )


def _bin(score: float, bins: int) -> int:
    return min(int(score * bins), bins - 1)


def _bins(raw: Any) -> Counter[int]:
    return Counter({int(b): int(n) for b, n in raw})


@dataclass(frozen=True, slots=True)
class Undefined:
    """A figure that has no value in this window, and why (a counter label)."""

    metric: str
    reason: str


@dataclass(frozen=True, slots=True)
class BinaryFigures:
    tp: int
    fp: int
    tn: int
    fn: int
    values: dict[str, float]  # accuracy, precision, recall, f1, log_loss, roc_auc (those defined)
    undefined: list[Undefined]
    auc_error_bound: float | None = None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def binary_figures(counts: ConfusionCounts, positive: str) -> BinaryFigures:
    tp = fp = tn = fn = 0
    for (t, p), n in counts.cm.items():
        if p == positive:
            if t == positive:
                tp += n
            else:
                fp += n
        elif t == positive:
            fn += n
        else:
            tn += n
    values: dict[str, float] = {}
    undefined: list[Undefined] = []
    figures = {
        "accuracy": (_ratio(tp + tn, tp + fp + tn + fn), "no_outcomes"),
        "precision": (_ratio(tp, tp + fp), "no_positive_predictions"),
        "recall": (_ratio(tp, tp + fn), "no_positive_labels"),
        "f1": (_ratio(2 * tp, 2 * tp + fp + fn), "no_positives"),
    }
    for name, (value, reason) in figures.items():
        if value is None:
            undefined.append(Undefined(name, reason))
        else:
            values[name] = value
    bound = None
    if counts.scored:
        values["log_loss"] = counts.log_loss_sum / counts.scored
        auc = binned_auc(counts.pos_bins, counts.neg_bins)
        if auc is None:
            undefined.append(Undefined("roc_auc", "one_class_only"))
        else:
            values["roc_auc"], bound = auc
    return BinaryFigures(tp, fp, tn, fn, values, undefined, bound)


def binned_auc(pos_bins: Counter[int], neg_bins: Counter[int]) -> tuple[float, float] | None:
    """``(auc, error_bound)`` from per-bin counts; None when either class is absent."""
    npos, nneg = sum(pos_bins.values()), sum(neg_bins.values())
    if not npos or not nneg:
        return None
    wins = 0.0  # pairs (positive, negative) with the positive ranked higher; ties count one half
    ties = 0
    neg_below = 0
    for b in sorted(set(pos_bins) | set(neg_bins)):
        p, q = pos_bins.get(b, 0), neg_bins.get(b, 0)
        wins += p * neg_below + 0.5 * p * q
        ties += p * q
        neg_below += q
    pairs = npos * nneg
    return wins / pairs, ties / (2 * pairs)


def class_counts(counts: ConfusionCounts) -> dict[str, tuple[int, int, int, int]]:
    """Per class (every value seen as true or predicted): ``(tp, fp, tn, fn)``, one-vs-rest."""
    total = 0
    diag: Counter[str] = Counter()
    as_true: Counter[str] = Counter()
    as_pred: Counter[str] = Counter()
    for (t, p), n in counts.cm.items():
        total += n
        as_true[t] += n
        as_pred[p] += n
        if t == p:
            diag[t] += n
    out = {}
    for c in sorted(set(as_true) | set(as_pred)):
        tp = diag[c]
        fp = as_pred[c] - tp
        fn = as_true[c] - tp
        out[c] = (tp, fp, total - tp - fp - fn, fn)
    return out


@dataclass(frozen=True, slots=True)
class MulticlassFigures:
    accuracy: float | None
    per_class: dict[str, dict[str, float]]  # class -> precision/recall/f1/roc_auc (those defined)
    averages: dict[str, dict[str, float]]  # macro/micro/weighted -> precision/recall/f1 (+ roc_auc but micro)
    undefined: list[Undefined]
    log_loss: float | None = None
    auc_error_bound: dict[str, float] = field(default_factory=dict)  # class, "macro", "weighted" -> bound


_PER_CLASS = (("precision", "no_predictions_of_class"), ("recall", "no_labels_of_class"), ("f1", "class_absent"))


def multiclass_figures(counts: ConfusionCounts) -> MulticlassFigures:
    per = class_counts(counts)
    total = counts.total
    correct = sum(n for (t, p), n in counts.cm.items() if t == p)
    undefined: list[Undefined] = []
    accuracy = _ratio(correct, total)
    if accuracy is None:
        undefined.append(Undefined("accuracy", "no_outcomes"))
    per_class: dict[str, dict[str, float]] = {}
    for c, (tp, fp, _tn, fn) in per.items():
        figures = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
        per_class[c] = {k: v for k, v in figures.items() if v is not None}
    averages: dict[str, dict[str, float]] = {"macro": {}, "micro": {}, "weighted": {}}
    stp = sum(v[0] for v in per.values())
    sfp = sum(v[1] for v in per.values())
    sfn = sum(v[3] for v in per.values())
    micro = {
        "precision": _ratio(stp, stp + sfp),
        "recall": _ratio(stp, stp + sfn),
        "f1": _ratio(2 * stp, 2 * stp + sfp + sfn),
    }
    for name, _reason in _PER_CLASS:
        defined = [(per_class[c][name], per[c][0] + per[c][3]) for c in per if name in per_class[c]]
        if defined:
            averages["macro"][name] = _mean(v for v, _ in defined)
            weight = sum(w for _, w in defined)
            averages["weighted"][name] = (
                sum(v * w for v, w in defined) / weight if weight else _mean(v for v, _ in defined)
            )
        else:
            undefined.append(Undefined(name, "no_outcomes"))
        m = micro[name]
        if m is not None:
            averages["micro"][name] = m
    for c, figs in per_class.items():
        for name, reason in _PER_CLASS:
            if name not in figs:
                undefined.append(Undefined(name, reason))
        del c
    log_loss = counts.log_loss_sum / counts.scored if counts.scored else None
    bounds: dict[str, float] = {}
    if counts.class_bins:
        aucs: list[tuple[float, float, int]] = []  # (auc, bound, positives) of the classes where defined
        for c, (pos, neg) in sorted(counts.class_bins.items()):
            auc = binned_auc(pos, neg)
            if auc is None:
                undefined.append(Undefined("roc_auc", "one_class_only"))
                continue
            per_class.setdefault(c, {})["roc_auc"], bounds[c] = auc
            aucs.append((*auc, sum(pos.values())))
        if aucs:
            averages["macro"]["roc_auc"] = _mean(a for a, _, _ in aucs)
            bounds["macro"] = _mean(b for _, b, _ in aucs)
            weight = sum(w for _, _, w in aucs)  # > 0: a defined AUC has positives
            averages["weighted"]["roc_auc"] = sum(a * w for a, _, w in aucs) / weight
            bounds["weighted"] = sum(b * w for _, b, w in aucs) / weight
        else:
            undefined.append(Undefined("roc_auc", "no_class_defined"))
    return MulticlassFigures(accuracy, per_class, averages, undefined, log_loss, bounds)


def _mean(values: Iterable[float]) -> float:
    vs = list(values)
    return sum(vs) / len(vs)
