"""The ML operators inside a real log source: windows, multiclass labels, late labels, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mlwatch.config import LogSourceConfig, parse_config
from mlwatch.ml.classification import ConfusionCounts, multiclass_figures
from mlwatch.ml.operators import MlOperators
from mlwatch.model import Sample
from mlwatch.sources.logfile import LogFileSource

sklearn_metrics = pytest.importorskip("sklearn.metrics")

T0 = 1_700_000_000_000


def sources(tmp_path: Path, text: str) -> list[LogSourceConfig]:
    cfg = parse_config("sources:\n" + text.replace("{dir}", str(tmp_path)))
    return [s for s in cfg.sources if isinstance(s, LogSourceConfig)]


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    with open(path, "ab") as f:
        f.writelines(orjson.dumps(d) + b"\n" for d in docs)


def latest(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [
        s for s in samples if s.key.name == name and all(s.key.label_dict().get(k) == v for k, v in labels.items())
    ]
    if any(set(s.key.label_dict()) - {"job", "instance", *labels} for s in found):
        found = [s for s in found if set(s.key.label_dict()) == {"job", "instance", *labels}]
    return found[-1].value if found else None


def build(cfgs: list[LogSourceConfig], state: dict[str, bytes] | None = None) -> list[LogFileSource]:
    ops = MlOperators(cfgs)
    out = []
    for c in cfgs:
        src = LogFileSource(c, ops(c))
        src.restore((state or {}).get(src.state_key))
        out.append(src)
    return out


def collect(src: LogFileSource, now_ms: int, state: dict[str, bytes]) -> list[Sample]:
    col = src.collect_sync(now_ms)
    col.commit()
    state.update(col.state)
    return col.samples


BINARY = """
  - name: preds
    type: log
    path: {dir}/pred.jsonl
    timestamp: {field: ts, format: unix_ms}
    classification: {prediction: pred, label: label, score: score, positive: 1, window: 10s, resolution: 500ms, by: [model], prefix: m}
"""


def test_binary_window_matches_sklearn_on_the_window(tmp_path: Path) -> None:
    (src,) = build(sources(tmp_path, BINARY))
    rows = [{"ts": T0 + i * 500, "model": "a", "pred": (i * 7) % 3 == 0, "label": int(i % 2 == 0),
             "score": ((i * 37) % 100) / 100} for i in range(60)]  # fmt: skip
    for r in rows:
        r["pred"] = int(r["pred"])
    write(tmp_path / "pred.jsonl", rows)
    samples = collect(src, 0, {})
    t = rows[-1]["ts"]
    inside = [r for r in rows if t - 10_000 < r["ts"] <= t]
    y, p, s = [r["label"] for r in inside], [r["pred"] for r in inside], [r["score"] for r in inside]
    assert latest(samples, "m_accuracy", model="a") == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    assert latest(samples, "m_precision", model="a") == pytest.approx(sklearn_metrics.precision_score(y, p), abs=1e-12)
    assert latest(samples, "m_recall", model="a") == pytest.approx(sklearn_metrics.recall_score(y, p), abs=1e-12)
    assert latest(samples, "m_f1", model="a") == pytest.approx(sklearn_metrics.f1_score(y, p), abs=1e-12)
    assert latest(samples, "m_log_loss", model="a") == pytest.approx(sklearn_metrics.log_loss(y, s), abs=1e-12)
    assert latest(samples, "m_samples", model="a") == len(inside)
    assert all(x.ts == t for x in samples if x.key.name.startswith("m_"))
    # the counters count every outcome since the start, not just the window
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix([r["label"] for r in rows], [r["pred"] for r in rows]).ravel()
    assert [latest(samples, f"m_{c}_total", model="a") for c in ("tp", "fp", "tn", "fn")] == [tp, fp, tn, fn]
    assert latest(samples, "m_accuracy_lower", model="a") is None  # not sampled: no interval


def test_undefined_figures_are_absent_and_counted(tmp_path: Path) -> None:
    (src,) = build(sources(tmp_path, BINARY))
    write(tmp_path / "pred.jsonl", [{"ts": T0, "model": "a", "pred": 0, "label": 0}])
    samples = collect(src, 0, {})
    assert latest(samples, "m_accuracy", model="a") == 1.0
    assert latest(samples, "m_precision", model="a") is None
    assert latest(samples, "m_undefined_total", model="a", metric="precision", reason="no_positive_predictions") == 1


MULTI = """
  - name: preds
    type: log
    path: {dir}/pred.jsonl
    timestamp: {field: ts, format: unix_ms}
    sampling: {strategy: random, rate: 1}
    classification: {prediction: pred, label: label, score: probs, window: 1m, prefix: mc}
"""


def test_multiclass_averages_and_classes(tmp_path: Path) -> None:
    (src,) = build(sources(tmp_path, MULTI))
    classes = ["cat", "dog", "eel"]
    rows = [{"ts": T0 + i, "pred": classes[(i * 5) % 3], "label": classes[(i * 2 + i // 4) % 3]} for i in range(40)]
    for i, r in enumerate(rows):  # a probability for every class, the highest for the prediction
        rest = [c for c in classes if c != r["pred"]]
        r["probs"] = {r["pred"]: 0.6, rest[0]: 0.1 + (i % 5) / 20, rest[1]: 0.3 - (i % 5) / 20}
    write(tmp_path / "pred.jsonl", rows)
    samples = collect(src, 0, {})
    y, p = [r["label"] for r in rows], [r["pred"] for r in rows]
    assert latest(samples, "mc_accuracy") == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    for average in ("macro", "micro", "weighted"):
        ref = sklearn_metrics.precision_recall_fscore_support(y, p, average=average)
        assert latest(samples, "mc_precision", average=average) == pytest.approx(ref[0], abs=1e-12)
        assert latest(samples, "mc_f1", average=average) == pytest.approx(ref[2], abs=1e-12)
    per = sklearn_metrics.precision_recall_fscore_support(y, p, labels=classes)
    for i, c in enumerate(classes):
        assert latest(samples, "mc_recall", **{"class": c}) == pytest.approx(per[1][i], abs=1e-12)
    cm = sklearn_metrics.confusion_matrix(y, p, labels=classes)
    assert latest(samples, "mc_tp_total", **{"class": "dog"}) == cm[1, 1]
    proba = [[r["probs"][c] for c in classes] for r in rows]
    assert latest(samples, "mc_log_loss") == pytest.approx(
        sklearn_metrics.log_loss(y, proba, labels=classes), abs=1e-12
    )
    lo, hi = latest(samples, "mc_accuracy_lower"), latest(samples, "mc_accuracy_upper")
    assert lo is not None and hi is not None and lo < latest(samples, "mc_accuracy") < hi  # type: ignore[operator]
    # one-vs-rest binned ROC AUC (default 100 bins), within the binning's bound of sklearn's exact one
    ref = ConfusionCounts()
    for r in rows:
        ref.add_class_scores(r["label"], r["probs"], 100)
    bound = multiclass_figures(ref).auc_error_bound
    for average in ("macro", "weighted"):
        exact = sklearn_metrics.roc_auc_score(y, proba, multi_class="ovr", average=average, labels=classes)
        got = latest(samples, "mc_roc_auc", average=average)
        assert got is not None and abs(got - exact) <= bound[average] + 1e-12
    for i, c in enumerate(classes):
        exact = sklearn_metrics.roc_auc_score([t == c for t in y], [row[i] for row in proba])
        got = latest(samples, "mc_roc_auc", **{"class": c})
        assert got is not None and abs(got - exact) <= bound[c] + 1e-12
    assert latest(samples, "mc_roc_auc", average="micro") is None


JOIN = """
  - name: preds
    type: log
    path: {dir}/pred.jsonl
    timestamp: {field: ts, format: unix_ms}
    classification: {prediction: pred, label: label, positive: 1, window: 1h, prefix: j}
  - name: truth
    type: log
    path: {dir}/labels.jsonl
    timestamp: {field: ts, format: unix_ms}
    labels_for: {source: preds, key: id, max_delay: 10m}
"""


def test_late_labels_join_expire_and_survive_restarts(tmp_path: Path) -> None:
    cfgs = sources(tmp_path, JOIN)
    state: dict[str, bytes] = {}
    preds, truth = build(cfgs)
    write(tmp_path / "pred.jsonl", [{"ts": T0 + i * 1000, "id": f"r{i}", "pred": i % 2} for i in range(10)])
    s = collect(preds, 0, state)
    assert latest(s, "j_samples") is None or latest(s, "j_samples") == 0
    # labels for r0..r5 (r5 wrong) plus one for a prediction never made
    write(tmp_path / "labels.jsonl", [{"ts": T0 + 60_000 + i, "id": f"r{i}", "label": i % 2 if i != 5 else 0}
                                      for i in range(6)] + [{"ts": T0 + 61_000, "id": "nope", "label": 1}])  # fmt: skip
    collect(truth, 0, state)
    # restart both before the prediction source took the labels: nothing lost
    preds, truth = build(cfgs, state)
    s = collect(preds, 0, state)
    assert latest(s, "j_samples") == 6
    assert latest(s, "j_accuracy") == pytest.approx(5 / 6)
    assert latest(s, "j_orphan_labels_total") == 0  # kept: its prediction may still be read
    assert latest(s, "j_label_coverage") == pytest.approx(6 / 10)
    assert latest(s, "j_label_delay_seconds_count") == 6
    # restart again: the same labels are not applied twice
    preds, truth = build(cfgs, state)
    collect(truth, 0, state)
    write(tmp_path / "pred.jsonl", [{"ts": T0 + 62_000, "id": "r10", "pred": 1}])
    s = collect(preds, 0, state)
    assert latest(s, "j_tp_total") + latest(s, "j_tn_total") + latest(s, "j_fn_total") + latest(s, "j_fp_total") == 6  # type: ignore[operator]
    # time moves past max_delay: r6..r9 never got labels; r10 is still within max_delay
    write(tmp_path / "pred.jsonl", [{"ts": T0 + 11 * 60_000, "id": "late", "pred": 1}])
    s = collect(preds, 0, state)
    assert latest(s, "j_unlabeled_total") == 4
    assert latest(s, "j_orphan_labels_total") == 0
    write(tmp_path / "pred.jsonl", [{"ts": T0 + 12 * 60_000, "id": "later", "pred": 1}])
    s = collect(preds, 0, state)
    assert latest(s, "j_unlabeled_total") == 5
    assert latest(s, "j_orphan_labels_total") == 1  # "nope" never met its prediction


def test_a_label_read_before_its_prediction_is_matched(tmp_path: Path) -> None:
    cfgs = sources(tmp_path, JOIN)
    state: dict[str, bytes] = {}
    preds, truth = build(cfgs)
    write(tmp_path / "labels.jsonl", [{"ts": T0 + 5000, "id": "a", "label": 1}])
    collect(truth, 0, state)
    collect(preds, 0, state)
    preds, truth = build(cfgs, state)  # and across a restart
    write(tmp_path / "pred.jsonl", [{"ts": T0 + 1000, "id": "a", "pred": 1}])
    s = collect(preds, 0, state)
    assert latest(s, "j_tp_total") == 1
    assert latest(s, "j_label_delay_seconds_sum") == 4.0
    assert latest(s, "j_orphan_labels_total") == 0


def test_labels_rolled_back_by_storage_are_applied_once(tmp_path: Path) -> None:
    cfgs = sources(tmp_path, JOIN)
    state: dict[str, bytes] = {}
    preds, truth = build(cfgs)
    write(tmp_path / "pred.jsonl", [{"ts": T0 + i, "id": f"r{i}", "pred": 1} for i in range(3)])
    collect(preds, 0, state)
    write(tmp_path / "labels.jsonl", [{"ts": T0 + 10 + i, "id": f"r{i}", "label": 1} for i in range(3)])
    col = truth.collect_sync(0)  # the label batch is refused by storage ...
    s = collect(preds, 0, state)  # ... after the prediction source already took its labels
    col.abort()
    assert latest(s, "j_tp_total") == 3
    collect(truth, 0, state)  # re-read: the same labels with the same numbers
    write(tmp_path / "pred.jsonl", [{"ts": T0 + 100, "id": "x", "pred": 1}])
    s = collect(preds, 0, state)
    assert latest(s, "j_tp_total") == 3
    assert latest(s, "j_orphan_labels_total") == 0


REGRESSION = """
  - name: preds
    type: log
    path: {dir}/pred.jsonl
    timestamp: {field: ts, format: unix_ms}
    regression:
      prediction: y_hat
      target: y
      window: 10s
      resolution: 100ms
      prefix: r
      by_prediction_time: true
      drift: {numeric: [y_hat], categorical: [region], reference: previous}
"""


def test_regression_window_counters_matured_windows_and_drift(tmp_path: Path) -> None:
    (src,) = build(sources(tmp_path, REGRESSION))
    rows = [{"ts": T0 + i * 100, "y": float((i * 13) % 17), "y_hat": float((i * 7) % 19) / 2,
             "region": "eu" if i % 3 else "us"} for i in range(300)]  # fmt: skip
    write(tmp_path / "pred.jsonl", rows)
    state: dict[str, bytes] = {}
    s = collect(src, 0, state)
    t = rows[-1]["ts"]
    inside = [r for r in rows if t - 10_000 < r["ts"] <= t]
    y, yhat = [r["y"] for r in inside], [r["y_hat"] for r in inside]
    assert latest(s, "r_mae") == pytest.approx(sklearn_metrics.mean_absolute_error(y, yhat), abs=1e-12)
    assert latest(s, "r_rmse") == pytest.approx(sklearn_metrics.mean_squared_error(y, yhat) ** 0.5, abs=1e-12)
    assert latest(s, "r_r2") == pytest.approx(sklearn_metrics.r2_score(y, yhat), abs=1e-12)
    assert latest(s, "r_outcomes_total") == 300
    assert latest(s, "r_abs_error_total") == pytest.approx(sum(abs(r["y"] - r["y_hat"]) for r in rows))
    # tumbling windows by prediction time: [T0, T0+10s), [T0+10s, T0+20s) are complete (no labels_for: no delay)
    matured = [x for x in s if x.key.name == "r_mae" and x.key.label_dict().get("basis") == "prediction_time"]
    assert sorted(x.ts for x in matured) == [T0 + 10_000, T0 + 20_000]
    first = [r for r in rows if r["ts"] < T0 + 10_000]
    assert matured[0].value == pytest.approx(
        sklearn_metrics.mean_absolute_error([r["y"] for r in first], [r["y_hat"] for r in first]), abs=1e-12
    )
    # drift of the prediction and of a categorical field, current 10 s against the 10 s before
    stats = pytest.importorskip("scipy.stats")
    before = [r["y_hat"] for r in rows if t - 20_000 < r["ts"] <= t - 10_000]
    assert latest(s, "r_drift_ks", field="y_hat") == pytest.approx(stats.ks_2samp(before, yhat).statistic, abs=1e-12)
    assert latest(s, "r_drift_psi", field="region") is not None
    # a restart continues the same windows
    (again,) = build(sources(tmp_path, REGRESSION), state)
    write(tmp_path / "pred.jsonl", [{"ts": t + 100, "y": 1.0, "y_hat": 1.0, "region": "eu"}])
    s2 = collect(again, 0, state)
    assert latest(s2, "r_outcomes_total") == 301
    assert latest(s2, "r_samples") == len(inside)  # one in, one out of the 10 s window


def test_labels_for_must_name_a_prediction_source(tmp_path: Path) -> None:
    import pytest

    from mlwatch.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        sources(
            tmp_path,
            JOIN
            + """
  - name: stray
    type: log
    path: {dir}/other.jsonl
    labels_for: {source: nowhere, key: id}
""",
        )
    assert [p.message for p in err.value.problems] == [
        "sources[2].labels_for.source: 'nowhere' is not a log source with classification or regression"
    ]


STRATIFIED = """
  - name: preds
    type: log
    path: {dir}/pred.jsonl
    timestamp: {field: ts, format: unix_ms}
    sampling: {strategy: stratified, by: segment, per_stratum: 50, window: 1m}
    classification: {prediction: pred, label: label, window: 1m, prefix: s}
"""


def test_stratified_sample_is_reweighted_to_the_population(tmp_path: Path) -> None:
    (src,) = build(sources(tmp_path, STRATIFIED))
    rows = []
    for i in range(900):  # the common segment: 95% right
        rows.append({"ts": T0 + i, "segment": "common", "pred": "a", "label": "b" if i % 20 == 0 else "a"})
    for i in range(100):  # the rare one: 50% right
        rows.append({"ts": T0 + 900 + i, "segment": "rare", "pred": "a", "label": "a" if i % 2 == 0 else "b"})
    write(tmp_path / "pred.jsonl", rows)
    state: dict[str, bytes] = {}
    s = collect(src, 0, state)
    sample_common = [r["pred"] == r["label"] for r in rows[:50]]
    sample_rare = [r["pred"] == r["label"] for r in rows[900:950]]
    assert latest(s, "s_accuracy") == pytest.approx((sum(sample_common) + sum(sample_rare)) / 100)
    expected = 0.9 * sum(sample_common) / 50 + 0.1 * sum(sample_rare) / 50
    assert latest(s, "s_accuracy_population") == pytest.approx(expected, abs=1e-12)
    lo, hi = latest(s, "s_accuracy_population_lower"), latest(s, "s_accuracy_population_upper")
    assert lo is not None and hi is not None and lo < expected < hi
    assert latest(s, "s_accuracy_lower") is not None  # sampled: the Wilson interval of the sample figure too


def test_a_refused_batch_rolls_every_figure_back(tmp_path: Path) -> None:
    text = JOIN.replace(
        "prefix: j}", "prefix: j, by_prediction_time: true, drift: {numeric: [x], categorical: [pred]}}"
    )
    text = text.replace(
        "    timestamp: {field: ts, format: unix_ms}\n    classification",
        "    timestamp: {field: ts, format: unix_ms}\n    sampling: {strategy: stratified, by: pred, rate: 1}\n    classification",
    )
    cfgs = sources(tmp_path, text)
    once: dict[str, bytes] = {}
    twice: dict[str, bytes] = {}
    rows = [{"ts": T0 + i * 100, "id": f"r{i}", "pred": i % 2, "x": i % 7, **({"label": 1} if i % 3 else {})}
            for i in range(50)]  # fmt: skip
    labels = [{"ts": T0 + 6000 + i, "id": f"r{i}", "label": i % 2} for i in range(0, 50, 3)]
    a_preds, a_truth = build(cfgs)
    b_preds, b_truth = build(cfgs)
    for part in (0, 1):
        write(tmp_path / "pred.jsonl", rows[part * 25 : part * 25 + 25])
        write(tmp_path / "labels.jsonl", [d for d in labels if int(d["id"][1:]) // 25 == part])
        collect(a_truth, 0, once)
        s1 = collect(a_preds, 0, once)
        collect(b_truth, 0, twice)
        if part:
            b_preds.collect_sync(0).abort()  # storage refused the batch: everything as before
        s2 = collect(b_preds, 0, twice)
    assert sorted((s.key, s.ts, s.value) for s in s1) == sorted((s.key, s.ts, s.value) for s in s2)
    assert orjson.loads(once["log/preds"])["ops"] == orjson.loads(twice["log/preds"])["ops"]
