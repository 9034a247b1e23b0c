"""The ML line operators of a log source: classification and regression windows, and label hand-off.

:class:`MlOperators` is the ``operators_for`` callable the daemon gives the source manager: for each
log source it returns the operators its config asks for. A :class:`QualityOperator` reads
``(prediction, label)`` (and a key when another source brings the labels) from every sampled line
and keeps, per combination of the ``by`` fields, a sliding window of per-bucket outcomes plus
cumulative counters; a :class:`LabelOperator` hands the labels of a ``labels_for`` source to the
prediction source (see :mod:`mlwatch.ml.join`). All state is plain JSON, committed with the offsets.

Evaluation time ``t``: the collection time, or with ``timestamp`` the newest event time seen. At each
evaluation the figures of the window ``(t - window, t]`` are written, stamped ``t``, when outcomes
changed or a bucket's time has passed. An outcome is known at its line's time when the label is in
the line, else at its label's time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlwatch.config import LogSourceConfig
from mlwatch.config.ml import ClassificationConfig, LabelsForConfig, RegressionConfig, class_text
from mlwatch.ml.classification import EPS, ConfusionCounts, Undefined, binary_figures, class_counts, multiclass_figures
from mlwatch.ml.drift import DriftWindow
from mlwatch.ml.join import DELAY_BUCKETS_S, LabelOutbox, PendingPredictions
from mlwatch.ml.regression import RegressionSums, regression_figures
from mlwatch.ml.uncertainty import StratumCounts, stratified_estimate, wilson_interval
from mlwatch.ml.windows import BucketWindow, bucket_of, default_resolution
from mlwatch.model import MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.fieldpath import MISSING, FieldPath, to_number
from mlwatch.sources.linechunk import LineChunk
from mlwatch.sources.sampling import LineEvent

__all__ = ["LabelOperator", "MlOperators", "QualityOperator"]

MAX_EMIT_GAP_MS = 15_000  # figures are rewritten at least this often while time moves
_BINARY_COUNTERS = (("tp", 0), ("fp", 1), ("tn", 2), ("fn", 3))


def _help(prefix: str, kind: str) -> dict[str, MetricMeta]:
    g, c = MetricType.GAUGE, MetricType.COUNTER
    common = {
        "samples": (g, "Outcomes (predictions with a known true value) in the window."),
        "undefined_total": (c, "Evaluations at which a figure was undefined (0/0), by metric and reason."),
        "unlabeled_total": (c, "Predictions whose label did not arrive within max_delay."),
        "orphan_labels_total": (c, "Labels that matched no pending prediction."),
        "pending_dropped_total": (c, "Pending predictions dropped because max_pending was reached."),
        "label_coverage": (g, "Share of the predictions of the last max_delay that have their label."),
        "label_delay_seconds": (MetricType.HISTOGRAM, "Time from a prediction to its label."),
        "drift_psi": (g, "Population stability index of a field: current window against the reference."),
        "drift_ks": (g, "Kolmogorov-Smirnov statistic of a numeric field: current window against the reference."),
    }
    if kind == "classification":
        own = {
            "accuracy": (g, "Share of correct predictions in the window."),
            "precision": (g, "TP / (TP + FP) in the window."),
            "recall": (g, "TP / (TP + FN) in the window."),
            "f1": (g, "2 TP / (2 TP + FP + FN) in the window."),
            "log_loss": (g, "Mean log-loss of the scores in the window."),
            "roc_auc": (g, "ROC AUC of the scores in the window (binned; multiclass: one-vs-rest)."),
            "accuracy_lower": (g, "Lower end of the Wilson interval of the accuracy."),
            "accuracy_upper": (g, "Upper end of the Wilson interval of the accuracy."),
            "accuracy_population": (g, "Accuracy of all lines, estimated from a stratified sample."),
            "accuracy_population_lower": (g, "Lower end of the interval of the population accuracy."),
            "accuracy_population_upper": (g, "Upper end of the interval of the population accuracy."),
            "tp_total": (c, "True positives."),
            "fp_total": (c, "False positives."),
            "tn_total": (c, "True negatives."),
            "fn_total": (c, "False negatives."),
        }
    else:
        own = {
            "mae": (g, "Mean absolute error in the window."),
            "rmse": (g, "Root mean squared error in the window."),
            "mape": (g, "Mean absolute percentage error in the window."),
            "r2": (g, "Coefficient of determination in the window."),
            "outcomes_total": (c, "Outcomes."),
            "abs_error_total": (c, "Sum of absolute errors."),
            "squared_error_total": (c, "Sum of squared errors."),
            "abs_percentage_error_total": (c, "Sum of absolute percentage errors."),
            "target_total": (c, "Sum of the true values."),
            "target_squared_total": (c, "Sum of the squared true values."),
        }
    return {f"{prefix}_{k}": MetricMeta(t, h) for k, (t, h) in {**own, **common}.items()}


class _Group:
    """One combination of ``by`` values: its window, cumulative totals and join statistics."""

    __slots__ = (
        "cum", "delays", "drift", "made", "matured", "pending_dropped", "strata", "undefined", "unlabeled", "window",
    )  # fmt: skip

    def __init__(self, window: BucketWindow[Any], cum: Any, made: BucketWindow[list[int]]) -> None:
        self.window = window
        self.cum = cum  # ConfusionCounts (cm only) or RegressionSums, since the start
        self.undefined: Counter[tuple[str, str]] = Counter()
        self.unlabeled = 0
        self.pending_dropped = 0
        self.made = made  # by prediction time: [predictions, labelled]
        self.delays: list[float] = [0] * (len(DELAY_BUCKETS_S) + 1) + [0.0]  # per-bucket counts, +Inf, then the sum
        self.matured: dict[int, Any] = {}  # tumbling window index (by prediction time) -> accumulator
        self.drift: dict[str, DriftWindow] = {}
        self.strata: BucketWindow[dict[str, list[int]]] | None = None  # stratum -> [lines, outcomes, correct]


class QualityOperator:
    """Classification or regression quality of one log source (see the module docstring)."""

    def __init__(
        self,
        cfg: ClassificationConfig | RegressionConfig,
        base_labels: dict[str, str],
        *,
        join: LabelsForConfig | None = None,
        outbox: Callable[[], LabelOutbox] | None = None,
        sampled: bool = False,
        stratify_by: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.classification = isinstance(cfg, ClassificationConfig)
        self.name = "classification" if self.classification else "regression"
        self.prefix = cfg.prefix
        self._base = base_labels
        self._join = join
        self._outbox = outbox
        self._sampled = sampled
        self._pred = FieldPath(cfg.prediction)
        self._label_field = cfg.label if isinstance(cfg, ClassificationConfig) else cfg.target
        self._label = FieldPath(self._label_field)
        self._score = FieldPath(cfg.score) if isinstance(cfg, ClassificationConfig) and cfg.score else None
        self._key = FieldPath(join.key) if join is not None else None
        self._by = [FieldPath(b) for b in cfg.by]
        self._strat = FieldPath(stratify_by) if stratify_by and self.classification else None
        # called by the log source for every line before sampling (stratified samples only)
        self.observe: Callable[[LineEvent], None] | None = self._observe if self._strat is not None else None
        d = cfg.drift
        self._drift = (
            [(f, FieldPath(f), True) for f in d.numeric] + [(f, FieldPath(f), False) for f in d.categorical]
            if d
            else []
        )
        self._window = cfg.window
        self._resolution = cfg.resolution or default_resolution(cfg.window)
        self._max_delay = join.max_delay if join is not None else 0
        self._coverage_res = default_resolution(self._max_delay) if join is not None else 1000
        self._meta = _help(cfg.prefix, self.name)
        self._reset()

    def _reset(self) -> None:
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.pending = PendingPredictions(self._join.max_pending if self._join else 1)
        self.early = PendingPredictions(self._join.max_pending if self._join else 1)  # labels before predictions
        self.orphans = 0
        self.label_done = 0
        self.newest = 0
        self.last_emit = -1
        self.changed = False

    # ---------------------------------------------------------------- accumulators
    def _new_acc(self) -> Any:
        return ConfusionCounts() if self.classification else RegressionSums()

    def _group(self, key: tuple[str, ...]) -> _Group:
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _Group(
                BucketWindow(self._window, self._resolution, self._new_acc),
                self._new_acc(),
                BucketWindow(max(self._max_delay, 1), self._coverage_res, lambda: [0, 0]),
            )
            if self._strat is not None:
                g.strata = BucketWindow(self._window, self._resolution, dict)
            d = self.cfg.drift
            for name, _path, numeric in self._drift:
                assert d is not None
                g.drift[name] = DriftWindow(numeric, self._window, self._resolution, d.reference, d.bins)
        return g

    def _outcome(
        self, g: _Group, known_ms: int, pred_ms: int, pred: Any, truth: Any, score: Any, stratum: str | None
    ) -> None:
        if g.strata is not None and stratum is not None:
            cell = g.strata.at(known_ms).setdefault(stratum, [0, 0, 0])
            cell[1] += 1
            cell[2] += truth == pred
        accs = [g.window.at(known_ms), g.cum]
        if self.cfg.by_prediction_time:
            w = pred_ms // self._window
            m = g.matured.get(w)
            if m is None:
                m = g.matured[w] = self._new_acc()
            accs.append(m)
        for i, acc in enumerate(accs):
            if self.classification:
                acc.add(truth, pred)
                if score is not None and i != 1:
                    assert isinstance(self.cfg, ClassificationConfig)
                    if isinstance(score, dict):
                        acc.add_probability(score.get(truth, 0.0))
                        acc.add_class_scores(truth, score, self.cfg.auc_bins)
                    else:
                        acc.add_score(truth == self.cfg.positive, score, self.cfg.auc_bins)
            else:
                acc.add(truth, pred)
        self.changed = True

    # ---------------------------------------------------------------- LineOperator
    def _read_score(self, raw: Any) -> Any:
        """Binary: a probability; multiclass: ``{class: probability}``; None when it is neither."""
        if self.cfg.positive is not None:  # type: ignore[union-attr]
            x = to_number(raw)
            return x if x is not None and 0 <= x <= 1 else None
        if not isinstance(raw, dict):
            return None
        out = {}
        for k, v in raw.items():
            x = to_number(v)
            if x is None or not 0 <= x <= 1:
                return None
            out[class_text(k)] = x
        return out

    def _stratum(self, fields: dict[str, Any]) -> str | None:
        if self._strat is None:
            return None
        v = self._strat.get(fields)
        return "" if v is MISSING or v is None else class_text(v)

    def _group_of(self, fields: dict[str, Any]) -> tuple[str, ...] | None:
        key = []
        for path in self._by:
            v = path.get(fields)
            if v is MISSING or v is None:
                return None
            key.append(class_text(v))
        return tuple(key)

    def _observe(self, event: LineEvent) -> None:
        """Count every line (sampled or not) by stratum: the population the sample is weighted to."""
        key = self._group_of(event.fields)
        if key is None:
            return
        g = self._group(key)
        assert g.strata is not None
        cell = g.strata.at(event.ts_ms).setdefault(self._stratum(event.fields) or "", [0, 0, 0])
        cell[0] += 1

    def _value(self, raw: Any) -> Any:
        if self.classification:
            return class_text(raw)
        x = to_number(raw)
        return None if x is None or not math.isfinite(x) else x

    def feed(self, event: LineEvent) -> str | None:
        fields = event.fields
        key: list[str] = []
        for path in self._by:
            v = path.get(fields)
            if v is MISSING or v is None:
                return "missing_field"
            key.append(class_text(v))
        raw = self._pred.get(fields)
        if raw is MISSING or raw is None:
            return "missing_prediction"
        pred = self._value(raw)
        if pred is None:
            return "not_a_number"
        score = None
        if self._score is not None:
            s = self._score.get(fields)
            if s is not MISSING and s is not None:
                score = self._read_score(s)
                if score is None:
                    return "bad_score"
        ts = event.ts_ms
        self.newest = max(self.newest, ts)
        raw_truth = self._label.get(fields)
        g = self._group(tuple(key))
        for name, path, numeric in self._drift:
            v = path.get(fields)
            if v is MISSING or v is None:
                continue
            if numeric:
                x = to_number(v)
                if x is not None and math.isfinite(x):
                    g.drift[name].add(ts, x)
            else:
                g.drift[name].add(ts, class_text(v))
        if raw_truth is not MISSING and raw_truth is not None:
            truth = self._value(raw_truth)
            if truth is None:
                return "not_a_number"
            if self._join is not None:
                made = g.made.at(ts)
                made[0] += 1
                made[1] += 1
            self._outcome(g, ts, ts, pred, truth, score, self._stratum(fields))
            return None
        if self._key is None:
            return "missing_label"
        jk = self._key.get(fields)
        if jk is MISSING or jk is None:
            return "missing_key"
        g.made.at(ts)[0] += 1
        early = self.early.pop(class_text(jk))
        if early is not None:  # its label was read first (the label log ran ahead): matched now
            self._match(g, early[0], early[1], ts, pred, score, self._stratum(fields))
            return None
        dropped = self.pending.add(class_text(jk), [ts, list(key), pred, score, self._stratum(fields)])
        if dropped is not None:
            self._group(tuple(dropped[1])).pending_dropped += 1
        self.changed = True
        return None

    def take_chunk(self, chunk: LineChunk) -> bool:
        """Take a whole chunk of lines at once (numpy), as :meth:`feed` would line by line; False, having
        changed nothing, when the chunk needs the per-line path: regression, a join, drift, stratified
        samples, multiclass scores, or any line that :meth:`feed` would refuse or treat specially."""
        cfg = self.cfg
        if not isinstance(cfg, ClassificationConfig) or self._join is not None or self._drift or self._strat:
            return False
        binary = cfg.positive is not None
        if self._score is not None and not binary:
            return False
        n = len(chunk)
        if not n:
            return True
        groups = _chunk_groups(chunk, self._by, n)
        pred, truth = chunk.classes(self._pred), chunk.classes(self._label)
        if groups is None or pred is None or truth is None:
            return False
        scores = chunk.numbers(self._score) if self._score is not None else None
        if self._score is not None and (scores is None or not bool(((scores >= 0) & (scores <= 1)).all())):
            return False  # a missing, non-numeric or out-of-range score: per line
        gcodes, gkeys = groups
        # one vocabulary for predicted and true classes: cell = true * C + predicted
        classes = list(dict.fromkeys(pred[1] + truth[1]))
        where = {c: i for i, c in enumerate(classes)}
        ncls = len(classes)
        pcode = np.asarray([where[c] for c in pred[1]], dtype=np.intp)[pred[0]]
        tcode = np.asarray([where[c] for c in truth[1]], dtype=np.intp)[truth[0]]
        cells = tcode * ncls + pcode
        ts = chunk.ts
        res = self._resolution
        if isinstance(ts, int):
            slots_of = [(gcodes, gkeys, [bucket_of(ts, res)] * len(gkeys))]
        else:
            slots_of = [_slots(gcodes, gkeys, -((-ts) // res))]
        parts = [_ClassChunk.of(s, cells, ncls * ncls) for s in slots_of]
        matured = None
        if cfg.by_prediction_time:  # label in the line: predicted and known at the line's time
            wins = ts // self._window if not isinstance(ts, int) else np.full(n, ts // self._window, dtype=np.int64)
            matured = _ClassChunk.of(_slots(gcodes, gkeys, wins), cells, ncls * ncls)
        if scores is not None:
            positive = np.asarray([c == cfg.positive for c in classes], dtype=bool)[tcode]
            p = np.clip(scores, EPS, 1 - EPS)
            loss = np.where(positive, -np.log(p), -np.log1p(-p))
            bins = np.minimum((scores * cfg.auc_bins).astype(np.int64), cfg.auc_bins - 1)
            for part in [*parts, *([matured] if matured is not None else [])]:
                part.score(loss, bins, positive, cfg.auc_bins)
        # nothing has changed so far: apply
        for part in parts:
            for g, key, bucket in part.slots:
                grp = self._group(key)
                part.apply(g, grp.window.bucket(bucket), classes, scores=True)
                part.apply(g, grp.cum, classes, scores=False)
        if matured is not None:
            for g, key, w in matured.slots:
                grp = self._group(key)
                acc = grp.matured.get(w)
                if acc is None:
                    acc = grp.matured[w] = self._new_acc()
                matured.apply(g, acc, classes, scores=True)
        self.newest = max(self.newest, chunk.ts_max())
        self.changed = True
        return True

    def _apply_labels(self) -> None:
        if self._outbox is None:
            return
        items = self._outbox().take(self.name, self.label_done)
        for it in items:
            self.label_done = it.seq
            raw = it.values.get(self._label_field)
            self.newest = max(self.newest, it.ts_ms)
            if raw is None or self._value(raw) is None:
                self.orphans += 1
                self.changed = True
                continue
            entry = self.pending.pop(it.key)
            if entry is None:
                # no prediction yet: keep the label until max_delay, its prediction may be read later
                if self.early.add(it.key, [it.ts_ms, raw]) is not None:
                    self.orphans += 1  # beyond max_pending: the oldest early label is given up
                continue
            pred_ms, gkey, pred, score, stratum = entry
            self._match(self._group(tuple(gkey)), it.ts_ms, raw, pred_ms, pred, score, stratum)

    def _match(
        self, g: _Group, label_ms: int, raw: Any, pred_ms: int, pred: Any, score: Any, stratum: str | None
    ) -> None:
        truth = self._value(raw)
        known = max(label_ms, pred_ms)
        self._outcome(g, known, pred_ms, pred, truth, score, stratum)
        g.made.at(pred_ms)[1] += 1
        delay = max(0.0, (label_ms - pred_ms) / 1000)
        i = next((i for i, le in enumerate(DELAY_BUCKETS_S) if delay <= le), len(DELAY_BUCKETS_S))
        g.delays[i] += 1
        g.delays[-1] += delay

    def samples(self, now_ms: int, full: bool) -> list[Sample]:
        self._apply_labels()
        t = now_ms if now_ms >= 0 else self.newest
        if t <= 0:
            return []
        if self._join is not None:
            for entry in self.pending.expire(t - self._max_delay):
                self._group(tuple(entry[1])).unlabeled += 1
                self.changed = True
            for _label in self.early.expire(t - self._max_delay):
                self.orphans += 1
                self.changed = True
        due = self.last_emit < 0 or t - self.last_emit >= min(self._resolution, MAX_EMIT_GAP_MS)
        if not (self.changed or (due and t > self.last_emit)):
            return self._matured(t)
        self.changed = False
        self.last_emit = t
        out: list[Sample] = []
        for key, g in self.groups.items():
            labels = {**self._base, **dict(zip(self.cfg.by, key, strict=True))}
            g.window.evict(t)
            acc = (ConfusionCounts if self.classification else RegressionSums).sum_of(g.window.covering(t))
            out += self._figures(acc, labels, t, g)
            out += self._counters(g, labels, t)
            if self._join is not None:
                out += self._join_series(g, labels, t)
            if g.strata is not None:
                out += self._population(g.strata, labels, t)
            for name, dw in g.drift.items():
                for stat, v in dw.figures(t).items():
                    out.append(self._s(f"drift_{stat}", {**labels, "field": name}, t, v))
        if self._join is not None:
            out.append(Sample(SeriesKey.of(f"{self.prefix}_orphan_labels_total", self._base), t, float(self.orphans)))
        return out + self._matured(t)

    # ---------------------------------------------------------------- series
    def _s(self, name: str, labels: dict[str, str], t: int, v: float) -> Sample:
        return Sample(SeriesKey.of(f"{self.prefix}_{name}", labels), t, float(v))

    def _figures(self, acc: Any, labels: dict[str, str], t: int, g: _Group | None) -> list[Sample]:
        out: list[Sample] = []
        undefined: list[Undefined]
        if not self.classification:
            values, undefined = regression_figures(acc)
            out += [self._s(k, labels, t, v) for k, v in values.items()]
            out.append(self._s("samples", labels, t, acc.n))
        elif self.cfg.positive is not None:  # type: ignore[union-attr]
            fig = binary_figures(acc, self.cfg.positive)  # type: ignore[union-attr]
            out += [self._s(k, labels, t, v) for k, v in fig.values.items()]
            n = fig.tp + fig.fp + fig.tn + fig.fn
            out.append(self._s("samples", labels, t, n))
            undefined = fig.undefined
            out += self._interval(fig.tp + fig.tn, n, labels, t)
        else:
            mfig = multiclass_figures(acc)
            n = acc.total
            if mfig.accuracy is not None:
                out.append(self._s("accuracy", labels, t, mfig.accuracy))
                out += self._interval(mfig.accuracy * n, n, labels, t)
            for average, figs in mfig.averages.items():
                out += [self._s(k, {**labels, "average": average}, t, v) for k, v in figs.items()]
            if mfig.log_loss is not None:
                out.append(self._s("log_loss", labels, t, mfig.log_loss))
            for c, figs in mfig.per_class.items():
                out += [self._s(k, {**labels, "class": c}, t, v) for k, v in figs.items()]
            out.append(self._s("samples", labels, t, n))
            undefined = mfig.undefined
        if g is not None:
            for u in undefined:
                g.undefined[(u.metric, u.reason)] += 1
        return out

    def _interval(self, successes: float, n: int, labels: dict[str, str], t: int) -> list[Sample]:
        if not self._sampled or not n:
            return []
        lo_hi = wilson_interval(successes, n, self.cfg.confidence)  # type: ignore[union-attr]
        assert lo_hi is not None
        return [self._s("accuracy_lower", labels, t, lo_hi[0]), self._s("accuracy_upper", labels, t, lo_hi[1])]

    def _population(self, strata: BucketWindow[dict[str, list[int]]], labels: dict[str, str], t: int) -> list[Sample]:
        """The accuracy of the population, estimated from a stratified sample (each stratum's sample
        accuracy weighted by the stratum's share of all lines in the window)."""
        strata.evict(t)
        total: dict[str, list[int]] = {}
        for acc in strata.covering(t):
            for h, (n, k, c) in acc.items():
                cell = total.setdefault(h, [0, 0, 0])
                cell[0] += n
                cell[1] += k
                cell[2] += c
        counts = {h: StratumCounts(max(n, k), k, c) for h, (n, k, c) in total.items()}
        est = stratified_estimate(counts, self.cfg.confidence)  # type: ignore[union-attr]
        if est is None:
            return []
        names = ("accuracy_population", "accuracy_population_lower", "accuracy_population_upper")
        return [self._s(name, labels, t, v) for name, v in zip(names, est, strict=True)]

    def _counters(self, g: _Group, labels: dict[str, str], t: int) -> list[Sample]:
        out: list[Sample] = []
        if self.classification:
            if self.cfg.positive is not None:  # type: ignore[union-attr]
                fig = binary_figures(g.cum, self.cfg.positive)  # type: ignore[union-attr]
                counts = (fig.tp, fig.fp, fig.tn, fig.fn)
                out += [self._s(f"{name}_total", labels, t, counts[i]) for name, i in _BINARY_COUNTERS]
            else:
                for c, counts in class_counts(g.cum).items():
                    out += [
                        self._s(f"{name}_total", {**labels, "class": c}, t, counts[i]) for name, i in _BINARY_COUNTERS
                    ]
        else:
            s: RegressionSums = g.cum
            sums = {"outcomes_total": s.n, "abs_error_total": s.abs_err, "squared_error_total": s.sq_err,
                    "abs_percentage_error_total": s.abs_pct_err, "target_total": s.target_sum,
                    "target_squared_total": s.target_sq_sum}  # fmt: skip
            out += [self._s(k, labels, t, v) for k, v in sums.items()]
        for (metric, reason), n in sorted(g.undefined.items()):
            out.append(self._s("undefined_total", {**labels, "metric": metric, "reason": reason}, t, n))
        return out

    def _join_series(self, g: _Group, labels: dict[str, str], t: int) -> list[Sample]:
        out = [
            self._s("unlabeled_total", labels, t, g.unlabeled),
            self._s("pending_dropped_total", labels, t, g.pending_dropped),
        ]
        g.made.evict(t)
        made = labelled = 0
        for m in g.made.covering(t):
            made += m[0]
            labelled += m[1]
        if made:
            out.append(self._s("label_coverage", labels, t, labelled / made))
        acc = 0.0
        for le, n in zip(DELAY_BUCKETS_S, g.delays, strict=False):
            acc += n
            out.append(self._s("label_delay_seconds_bucket", {**labels, "le": _le(le)}, t, acc))
        count = acc + g.delays[len(DELAY_BUCKETS_S)]
        out.append(self._s("label_delay_seconds_bucket", {**labels, "le": "+Inf"}, t, count))
        out.append(self._s("label_delay_seconds_sum", labels, t, g.delays[-1]))
        out.append(self._s("label_delay_seconds_count", labels, t, count))
        return out

    def _matured(self, t: int) -> list[Sample]:
        """Tumbling windows by prediction time, written once after ``max_delay`` (``basis="prediction_time"``)."""
        if not self.cfg.by_prediction_time:
            return []
        out: list[Sample] = []
        for key, g in self.groups.items():
            for w in sorted(g.matured):
                end = (w + 1) * self._window
                if end + self._max_delay > t:
                    break
                labels = {**self._base, **dict(zip(self.cfg.by, key, strict=True)), "basis": "prediction_time"}
                out += self._figures(g.matured.pop(w), labels, end, None)
        return out

    def meta(self) -> dict[str, MetricMeta]:
        return self._meta

    # ---------------------------------------------------------------- state
    def snapshot(self) -> Any:
        dump = _dump_acc
        groups = []
        for key, g in self.groups.items():
            groups.append({
                "key": list(key),
                "window": g.window.snapshot(dump),
                "cum": dump(g.cum),
                "undefined": [[m, r, n] for (m, r), n in g.undefined.items()],
                "unlabeled": g.unlabeled,
                "pending_dropped": g.pending_dropped,
                "made": g.made.snapshot(list),
                "delays": list(g.delays),
                "matured": [[w, dump(a)] for w, a in g.matured.items()],
                "drift": {name: dw.snapshot() for name, dw in g.drift.items()},
                "strata": g.strata.snapshot(_dump_strata) if g.strata is not None else None,
            })  # fmt: skip
        return {
            "kind": self.name,
            "groups": groups,
            "pending": list(self.pending.items.items()),
            "orphans": self.orphans,
            "early": list(self.early.items.items()),
            "label_done": self.label_done,
            "newest": self.newest,
            "last_emit": self.last_emit,
        }

    def restore(self, state: Any) -> None:
        self._reset()
        if not state or state.get("kind") != self.name:
            return
        load = _load_classification if self.classification else RegressionSums.from_json
        for doc in state["groups"]:
            g = self._group(tuple(doc["key"]))
            g.window.restore(doc["window"], load)
            g.cum = load(doc["cum"])
            g.undefined = Counter({(m, r): int(n) for m, r, n in doc["undefined"]})
            g.unlabeled = int(doc["unlabeled"])
            g.pending_dropped = int(doc["pending_dropped"])
            g.made.restore(doc["made"], lambda m: [int(m[0]), int(m[1])])
            if len(doc["delays"]) == len(g.delays):
                g.delays = list(doc["delays"])
            g.matured = {int(w): load(a) for w, a in doc["matured"]}
            for name, dw in g.drift.items():
                dw.restore(doc.get("drift", {}).get(name))
            if g.strata is not None:
                g.strata.restore(doc.get("strata"), _load_strata)
        for k, entry in state["pending"]:
            self.pending.items[str(k)] = [*entry, None][:5]
        self.orphans = int(state["orphans"])
        for k, entry in state.get("early", []):
            self.early.items[str(k)] = list(entry)
        self.label_done = int(state["label_done"])
        self.newest = int(state["newest"])
        self.last_emit = int(state["last_emit"])


def _chunk_groups(chunk: LineChunk, by: list[FieldPath], n: int) -> tuple[np.ndarray, list[tuple[str, ...]]] | None:
    """Per line the index of its ``by`` combination, and the combinations; None when a line lacks one."""
    codes = np.zeros(n, dtype=np.intp)
    keys: list[tuple[str, ...]] = [()]
    for path in by:
        got = chunk.classes(path)
        if got is None:
            return None
        c, uniques = got
        codes = codes * len(uniques) + c
        keys = [k + (u,) for k in keys for u in uniques]
        if len(keys) > 1 and len(by) > 1:  # keep the codes dense: only combinations that occur
            present, codes = np.unique(codes, return_inverse=True)
            codes = codes.reshape(-1)
            keys = [keys[i] for i in present.tolist()]
    return codes, keys


def _slots(
    gcodes: np.ndarray, gkeys: list[tuple[str, ...]], buckets: np.ndarray
) -> tuple[np.ndarray, list[tuple[str, ...]], list[int]]:
    """Per line the index of its (group, bucket) pair, and the pairs' group keys and bucket numbers."""
    low = int(buckets.min())
    span = int(buckets.max()) - low + 1
    combined = gcodes.astype(np.int64) * span + (buckets - low)
    present, inverse = np.unique(combined, return_inverse=True)
    keys = [gkeys[int(c) // span] for c in present.tolist()]
    return inverse.reshape(-1).astype(np.intp), keys, [int(c) % span + low for c in present.tolist()]


class _ClassChunk:
    """A chunk's outcomes summed per slot (a group's window bucket or matured window): the confusion
    cells and, with scores, the log-loss sums and the positive/negative score bins."""

    __slots__ = ("cm", "loss", "neg", "pos", "scored", "slot_of", "slots")

    def __init__(self, slot_of: np.ndarray, slots: list[tuple[int, tuple[str, ...], int]], cm: np.ndarray) -> None:
        self.slot_of = slot_of
        self.slots = slots  # (slot index, group key, bucket or window number)
        self.cm = cm  # slots x cells
        self.loss: list[float] | None = None
        self.scored: list[int] = []
        self.pos: np.ndarray | None = None
        self.neg: np.ndarray | None = None

    @classmethod
    def of(
        cls, slots: tuple[np.ndarray, list[tuple[str, ...]], list[int]], cells: np.ndarray, ncells: int
    ) -> _ClassChunk:
        slot_of, keys, numbers = slots
        count = len(keys)
        cm = np.bincount(slot_of * ncells + cells, minlength=count * ncells).reshape(count, ncells)
        return cls(slot_of, [(i, k, b) for i, (k, b) in enumerate(zip(keys, numbers, strict=True))], cm)

    def score(self, loss: np.ndarray, bins: np.ndarray, positive: np.ndarray, nbins: int) -> None:
        count = len(self.slots)
        self.loss = np.bincount(self.slot_of, weights=loss, minlength=count).tolist()
        self.scored = np.bincount(self.slot_of, minlength=count).tolist()
        flat = self.slot_of * nbins + bins
        self.pos = np.bincount(flat[positive], minlength=count * nbins).reshape(count, nbins)
        self.neg = np.bincount(flat[~positive], minlength=count * nbins).reshape(count, nbins)

    def apply(self, slot: int, acc: ConfusionCounts, classes: list[str], *, scores: bool) -> None:
        ncls = len(classes)
        row = self.cm[slot]
        for cell in np.flatnonzero(row).tolist():
            acc.cm[(classes[cell // ncls], classes[cell % ncls])] += int(row[cell])
        if scores and self.loss is not None and self.pos is not None and self.neg is not None:
            acc.log_loss_sum += self.loss[slot]
            acc.scored += self.scored[slot]
            for target, counts in ((acc.pos_bins, self.pos[slot]), (acc.neg_bins, self.neg[slot])):
                for b in np.flatnonzero(counts).tolist():
                    target[b] += int(counts[b])


def _dump_strata(acc: dict[str, list[int]]) -> dict[str, list[int]]:
    return {h: list(cell) for h, cell in acc.items()}


def _load_strata(raw: Any) -> dict[str, list[int]]:
    return {str(h): [int(x) for x in cell] for h, cell in raw.items()}


def _dump_acc(acc: Any) -> Any:
    return acc.to_json()


def _load_classification(raw: Any) -> ConfusionCounts:
    return ConfusionCounts.from_json(raw)


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else repr(bound)


class LabelOperator:
    """The line operator of a ``labels_for`` source: each line's key and label go to the outbox."""

    name = "labels_for"

    def __init__(self, join: LabelsForConfig, label_fields: Sequence[str], outbox: LabelOutbox) -> None:
        self._key = FieldPath(join.key)
        self._fields = [(f, FieldPath(f)) for f in dict.fromkeys(label_fields)]
        self.outbox = outbox

    def feed(self, event: LineEvent) -> str | None:
        key = self._key.get(event.fields)
        if key is MISSING or key is None:
            return "missing_key"
        values = {}
        for name, path in self._fields:
            v = path.get(event.fields)
            if v is not MISSING and v is not None:
                values[name] = v
        if not values:
            return "missing_label"
        self.outbox.put(class_text(key), values, event.ts_ms)
        return None

    def samples(self, now_ms: int, full: bool) -> list[Sample]:
        return []

    def meta(self) -> dict[str, MetricMeta]:
        return {}

    def snapshot(self) -> Any:
        return self.outbox.snapshot()

    def restore(self, state: Any) -> None:
        self.outbox.restore(state)


class MlOperators:
    """``operators_for`` for the source manager: the ML operators of each log source of a config.

    One instance per source manager; it connects each ``labels_for`` source with its prediction
    source through a shared :class:`~mlwatch.ml.join.LabelOutbox`."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self._outboxes: dict[str, LabelOutbox] = {}
        self.reconfigure(sources)

    def reconfigure(self, sources: Sequence[Any]) -> None:
        """Take a reloaded config's sources (call before the source manager's ``reconfigure``);
        labels in transit are kept."""
        self._logs = {s.name: s for s in sources if isinstance(s, LogSourceConfig)}
        self._joins: dict[str, LabelsForConfig] = {}  # prediction source -> its labels_for
        for s in self._logs.values():
            if s.labels_for is not None:
                self._joins.setdefault(s.labels_for.source, s.labels_for)

    def outbox(self, prediction_source: str) -> LabelOutbox:
        box = self._outboxes.get(prediction_source)
        if box is None:
            join = self._joins.get(prediction_source)
            box = self._outboxes[prediction_source] = LabelOutbox(join.max_pending if join else 100_000)
        return box

    def __call__(self, src: LogSourceConfig) -> list[Any]:
        from mlwatch.sources.http import target_labels

        base = target_labels(src.name, src.path, src.labels)
        ops: list[Any] = []
        join = self._joins.get(src.name)
        outbox = (lambda: self.outbox(src.name)) if join is not None else None
        for cfg in (src.classification, src.regression):
            if cfg is not None:
                smp = src.sampling
                strat = smp.by if smp is not None and smp.strategy == "stratified" else None
                ops.append(
                    QualityOperator(cfg, base, join=join, outbox=outbox, sampled=smp is not None, stratify_by=strat)
                )
        if src.labels_for is not None:
            target = self._logs.get(src.labels_for.source)
            fields = []
            if target is not None:
                fields = [c.label for c in (target.classification,) if c] + [
                    r.target for r in (target.regression,) if r
                ]
            ops.append(LabelOperator(src.labels_for, fields, self.outbox(src.labels_for.source)))
        return ops
