"""Every window figure against scikit-learn on hypothesis-generated outcomes (sklearn is the oracle)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sklearn_metrics = pytest.importorskip("sklearn.metrics")

import itertools

from mlwatch.ml.classification import ConfusionCounts, binary_figures, class_counts, multiclass_figures
from mlwatch.ml.regression import RegressionSums, regression_figures
from mlwatch.ml.windows import BucketWindow

TOL = 1e-12


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def split_into_buckets(pairs: list[tuple[str, str]], cuts: list[int]) -> ConfusionCounts:
    """Sum of several buckets: the window is a sum of buckets, so test it as one."""
    parts = []
    bounds = sorted({0, len(pairs), *(c % (len(pairs) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        part = ConfusionCounts()
        for t, p in pairs[lo:hi]:
            part.add(t, p)
        parts.append(part)
    return ConfusionCounts.sum_of(parts)


binary_data = st.lists(st.tuples(st.sampled_from("01"), st.sampled_from("01")), min_size=1, max_size=200)


@given(binary_data, st.lists(st.integers(0, 300), max_size=4))
@settings(max_examples=100, deadline=None)
def test_binary_figures(pairs: list[tuple[str, str]], cuts: list[int]) -> None:
    counts = split_into_buckets(pairs, cuts)
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    fig = binary_figures(counts, "1")
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=["0", "1"]).ravel()
    assert (fig.tp, fig.fp, fig.tn, fig.fn) == (tp, fp, tn, fn)
    assert close(fig.values["accuracy"], sklearn_metrics.accuracy_score(y_true, y_pred))
    p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, pos_label="1", average="binary", zero_division=np.nan
    )
    for name, ref in (("precision", p), ("recall", r), ("f1", f)):
        if math.isnan(ref):
            assert name not in fig.values
            assert name in {u.metric for u in fig.undefined}
        else:
            assert close(fig.values[name], ref), name


multiclass_data = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["a", "b", "c", "d", "e"])),
    min_size=1,
    max_size=200,
)


@given(multiclass_data, st.lists(st.integers(0, 300), max_size=4))
@settings(max_examples=100, deadline=None)
def test_multiclass_figures(pairs: list[tuple[str, str]], cuts: list[int]) -> None:
    counts = split_into_buckets(pairs, cuts)
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    labels = sorted(set(y_true) | set(y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class only: sklearn warns about the matrix's shape
        cm = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels)
    per = class_counts(counts)
    for i, c in enumerate(labels):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        assert per[c] == (tp, fp, cm.sum() - tp - fp - fn, fn)
    fig = multiclass_figures(counts)
    assert fig.accuracy is not None
    assert close(fig.accuracy, sklearn_metrics.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes with no support
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=np.nan
        )
        for i, c in enumerate(labels):
            for name, ref in (("precision", p[i]), ("recall", r[i]), ("f1", f[i])):
                if math.isnan(ref):
                    assert name not in fig.per_class[c]
                else:
                    assert close(fig.per_class[c][name], ref), (c, name)
        for average in ("macro", "micro", "weighted"):
            refs = sklearn_metrics.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=average, zero_division=np.nan
            )
            for name, ref in zip(("precision", "recall", "f1"), refs[:3], strict=True):
                if math.isnan(ref):
                    assert name not in fig.averages[average]
                else:
                    assert close(fig.averages[average][name], ref), (average, name)


scored = st.lists(
    st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False) | st.sampled_from([0.0, 1.0, 0.5, 0.25])),
    min_size=1,
    max_size=200,
)


@given(scored, st.sampled_from([10, 100, 1000]))
@settings(max_examples=100, deadline=None)
def test_log_loss_and_binned_auc(data: list[tuple[bool, float]], bins: int) -> None:
    counts = ConfusionCounts()
    for positive, score in data:
        counts.add("1" if positive else "0", "1" if score >= 0.5 else "0")
        counts.add_score(positive, score, bins)
    fig = binary_figures(counts, "1")
    y = [int(positive) for positive, _ in data]
    s = [score for _, score in data]
    assert close(fig.values["log_loss"], sklearn_metrics.log_loss(y, s, labels=[0, 1]))
    if len(set(y)) < 2:
        assert "roc_auc" not in fig.values
        return
    exact = sklearn_metrics.roc_auc_score(y, s)
    assert fig.auc_error_bound is not None
    assert abs(fig.values["roc_auc"] - exact) <= fig.auc_error_bound + TOL


def test_binned_auc_is_exact_when_no_bin_mixes_classes() -> None:
    counts = ConfusionCounts()
    for positive, score in [(False, 0.05), (True, 0.15), (False, 0.25), (True, 0.95), (True, 0.55)]:
        counts.add_score(positive, score, 10)
    fig = binary_figures(counts, "1")
    assert fig.auc_error_bound == 0
    assert close(fig.values["roc_auc"], sklearn_metrics.roc_auc_score([0, 1, 0, 1, 1], [0.05, 0.15, 0.25, 0.95, 0.55]))


def test_undefined_ratios_give_no_figure_and_say_why() -> None:
    counts = ConfusionCounts()
    counts.add("0", "0", 5)  # no positives at all: precision, recall, F1 undefined; accuracy 1
    fig = binary_figures(counts, "1")
    assert fig.values == {"accuracy": 1.0}
    assert {(u.metric, u.reason) for u in fig.undefined} == {
        ("precision", "no_positive_predictions"),
        ("recall", "no_positive_labels"),
        ("f1", "no_positives"),
    }
    empty = binary_figures(ConfusionCounts(), "1")
    assert empty.values == {}


regression_data = st.lists(
    st.tuples(
        st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
        st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    ),
    min_size=1,
    max_size=200,
)


@given(regression_data, st.lists(st.integers(0, 300), max_size=4))
@settings(max_examples=100, deadline=None)
def test_regression_figures(pairs: list[tuple[float, float]], cuts: list[int]) -> None:
    bounds = sorted({0, len(pairs), *(c % (len(pairs) + 1) for c in cuts)})
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part = RegressionSums()
        for y, yhat in pairs[lo:hi]:
            part.add(y, yhat)
        parts.append(part)
    values, undefined = regression_figures(RegressionSums.sum_of(parts))
    y = np.array([a for a, _ in pairs])
    yhat = np.array([b for _, b in pairs])
    assert close(values["mae"], sklearn_metrics.mean_absolute_error(y, yhat))
    assert close(values["rmse"], math.sqrt(sklearn_metrics.mean_squared_error(y, yhat)))
    assert math.isclose(values["mape"], sklearn_metrics.mean_absolute_percentage_error(y, yhat), rel_tol=TOL)
    if np.var(y) > 1e-6 * max(1.0, float(np.mean(y * y))):
        # R² from merged (mean, M2) against sklearn's two-pass sums: relative to the size of 1 - R²
        ref = sklearn_metrics.r2_score(y, yhat)
        assert math.isclose(values["r2"], ref, rel_tol=1e-9, abs_tol=TOL * max(1.0, abs(ref)))
    elif np.ptp(y) == 0:
        assert "r2" not in values
        assert [u.reason for u in undefined] == ["constant_target"]


def test_bucket_window_covers_half_open_interval() -> None:
    w: BucketWindow[list[int]] = BucketWindow(10_000, 1000, list)
    for ts in (0, 1000, 1001, 5000, 10_000, 11_000):
        w.at(ts).append(ts)
    assert [x for acc in w.covering(10_000) for x in acc] == [1000, 1001, 5000, 10_000]  # (0, 10 s]
    assert [x for acc in w.covering(11_000) for x in acc] == [1001, 5000, 10_000, 11_000]
    w.evict(12_000)
    assert [x for acc in w.covering(12_000) for x in acc] == [5000, 10_000, 11_000]
    assert sorted(w.buckets) == [5, 10, 11]


multiclass_scored = st.lists(
    st.tuples(st.integers(0, 2), st.lists(st.floats(0.001, 1.0), min_size=3, max_size=3)), min_size=1, max_size=100
)


@given(multiclass_scored)
@settings(max_examples=100, deadline=None)
def test_multiclass_log_loss(data: list[tuple[int, list[float]]]) -> None:
    classes = ["a", "b", "c"]
    counts = ConfusionCounts()
    y, proba = [], []
    for true, weights in data:
        row = [w / sum(weights) for w in weights]
        counts.add(classes[true], classes[row.index(max(row))])
        counts.add_probability(row[true])
        y.append(classes[true])
        proba.append(row)
    fig = multiclass_figures(counts)
    assert fig.log_loss is not None
    assert close(fig.log_loss, sklearn_metrics.log_loss(y, proba, labels=classes))


multiclass_auc_data = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.lists(st.floats(0.001, 1.0) | st.sampled_from([0.25, 0.5, 1.0]), min_size=4, max_size=4),
    ),
    min_size=1,
    max_size=150,
)


@given(multiclass_auc_data, st.sampled_from([10, 100, 1000]), st.lists(st.integers(0, 200), max_size=4))
@settings(max_examples=100, deadline=None)
def test_multiclass_binned_auc_one_vs_rest(data: list[tuple[int, list[float]]], bins: int, cuts: list[int]) -> None:
    classes = ["a", "b", "c", "d"]
    y: list[str] = []
    proba: list[list[float]] = []
    for true, weights in data:
        y.append(classes[true])
        proba.append([w / sum(weights) for w in weights])
    # the window is a sum of buckets, each serialised and read back as a restart would
    bounds = sorted({0, len(y), *(c % (len(y) + 1) for c in cuts)})
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part = ConfusionCounts()
        for t, row in zip(y[lo:hi], proba[lo:hi], strict=True):
            part.add(t, classes[row.index(max(row))])
            part.add_probability(row[classes.index(t)])
            part.add_class_scores(t, dict(zip(classes, row, strict=True)), bins)
        parts.append(ConfusionCounts.from_json(orjson.loads(orjson.dumps(part.to_json()))))
    fig = multiclass_figures(ConfusionCounts.sum_of(parts))
    present = sorted(set(y))
    arr = np.array(proba)
    for i, c in enumerate(classes):
        if c not in present or len(present) < 2:  # no positives or no negatives: no figure, counted
            assert "roc_auc" not in fig.per_class.get(c, {})
            continue
        exact = sklearn_metrics.roc_auc_score([t == c for t in y], arr[:, i])
        assert abs(fig.per_class[c]["roc_auc"] - exact) <= fig.auc_error_bound[c] + TOL, c
    undefined = [u for u in fig.undefined if u.metric == "roc_auc"]
    if len(present) < 2:
        assert "roc_auc" not in fig.averages["macro"] and "roc_auc" not in fig.averages["weighted"]
        assert len(undefined) == len(classes) + 1  # each class, and no class to average
        return
    assert len(undefined) == len(classes) - len(present)
    assert "roc_auc" not in fig.averages["micro"]
    for average in ("macro", "weighted"):
        if len(present) == len(classes):
            exact = sklearn_metrics.roc_auc_score(y, arr, multi_class="ovr", average=average, labels=classes)
        else:  # sklearn refuses classes without positives: its one-vs-rest average over the classes present
            cols = [classes.index(c) for c in present]
            per = [
                sklearn_metrics.roc_auc_score([t == c for t in y], arr[:, i])
                for c, i in zip(present, cols, strict=True)
            ]
            w = [y.count(c) for c in present] if average == "weighted" else [1] * len(present)
            exact = float(np.average(per, weights=w))
        assert abs(fig.averages[average]["roc_auc"] - exact) <= fig.auc_error_bound[average] + TOL, average


def test_multiclass_auc_bound_is_zero_when_no_bin_mixes_outcomes() -> None:
    counts = ConfusionCounts()
    rows = [("a", [0.7, 0.2, 0.1]), ("b", [0.15, 0.8, 0.05]), ("c", [0.25, 0.35, 0.4]), ("a", [0.55, 0.45, 0.0])]
    for t, row in rows:
        counts.add_class_scores(t, dict(zip("abc", row, strict=True)), 100)
    fig = multiclass_figures(counts)
    y, arr = [t for t, _ in rows], np.array([r for _, r in rows])
    for average in ("macro", "weighted"):
        assert fig.auc_error_bound[average] == 0
        assert close(
            fig.averages[average]["roc_auc"], sklearn_metrics.roc_auc_score(y, arr, multi_class="ovr", average=average)
        )
    assert close(fig.per_class["c"]["roc_auc"], sklearn_metrics.roc_auc_score([t == "c" for t in y], arr[:, 2]))
