"""Summary quantiles of log-derived metrics: exact while small, bounded and close when large, windowed by
max_age, and committed (snapshot/restore) with the offsets like the other values."""

from __future__ import annotations

import math
import random

import orjson

from mlwatch.config import LogSourceConfig, parse_config
from mlwatch.config.sources import LogSourceMetricConfig
from mlwatch.model import Sample
from mlwatch.sources.linemetrics import AGE_BUCKETS, RESERVOIR, LineMetrics, QuantileWindow
from mlwatch.sources.sampling import LineEvent

MIN = 60_000


def metrics(extra: str = "") -> list[LogSourceMetricConfig]:
    cfg = parse_config(f"""
sources:
  - name: preds
    type: log
    path: /nonexistent/p.jsonl
    metrics:
      - {{name: lat_seconds, type: summary, field: ms, scale: 0.001, labels: {{model: "{{model}}"}}{extra}}}
""").sources[0]
    assert isinstance(cfg, LogSourceConfig)
    return cfg.metrics


def series(samples: list[Sample]) -> dict[tuple[str, str | None], float]:
    return {(s.key.name, s.key.label_dict().get("quantile")): s.value for s in samples}


def test_default_quantiles_are_exact_for_a_few_values() -> None:
    lm = LineMetrics(metrics(), {"job": "preds"})
    for ms in random.Random(1).sample(range(1, 101), 100):
        lm.feed(LineEvent({"model": "a", "ms": ms}, 10 * MIN, ""))
    got = series(lm.samples(10 * MIN, True))
    assert got[("lat_seconds", "0.5")] == 0.05
    assert got[("lat_seconds", "0.9")] == 0.09
    assert got[("lat_seconds", "0.99")] == 0.099
    assert got[("lat_seconds_count", None)] == 100 and math.isclose(got[("lat_seconds_sum", None)], 5.05)


def test_configured_quantiles_and_max_age() -> None:
    lm = LineMetrics(metrics(", quantiles: [0, 0.25, 1], max_age: 5m"), {})
    for i, ms in enumerate([10, 20, 30, 40]):
        lm.feed(LineEvent({"model": "a", "ms": ms}, i, ""))
    got = series(lm.samples(3, True))
    assert {q for _, q in got if q} == {"0", "0.25", "1"}
    assert (got[("lat_seconds", "0")], got[("lat_seconds", "0.25")], got[("lat_seconds", "1")]) == (0.01, 0.01, 0.04)
    lm.feed(LineEvent({"model": "a", "ms": 1000}, 5 * MIN + 1, ""))  # the first four have aged out
    got = series(lm.samples(5 * MIN + 1, True))
    assert got[("lat_seconds", "0")] == got[("lat_seconds", "1")] == 1.0
    assert got[("lat_seconds_count", None)] == 5  # _sum and _count keep everything
    got = series(lm.samples(11 * MIN, True))  # nothing in the window: no quantile, as 0/0 gives no sample
    assert ("lat_seconds", "0.5") not in got and got[("lat_seconds_count", None)] == 5


def test_the_window_is_bounded_and_its_error_is_as_documented() -> None:
    n = 200_000
    rng = random.Random(7)
    values = list(range(n))
    rng.shuffle(values)
    win = QuantileWindow(10 * MIN)
    for i, v in enumerate(values):
        win.add(i * 10 * MIN // n, float(v))  # spread over the whole window: every slot is full
    assert len(win.slots) == AGE_BUCKETS and all(len(kept) == RESERVOIR for _, kept in win.slots.values())
    qs = [0.5, 0.9, 0.99]
    est = win.quantiles(10 * MIN - 1, qs)
    assert est is not None
    kept = AGE_BUCKETS * RESERVOIR
    for q, x in zip(qs, est, strict=True):
        sigma = math.sqrt(q * (1 - q) / kept)
        assert abs(x / n - q) < 4 * sigma, (q, x / n, sigma)


def test_the_window_state_is_deterministic_and_rolls_back() -> None:
    """The state is a function of the lines: a refused batch read again gives what one pass gives."""
    docs = [{"model": "ab"[i % 2], "ms": (i * 37) % 1000} for i in range(3000)]
    one_pass = LineMetrics(metrics(), {})
    for i, d in enumerate(docs):
        one_pass.feed(LineEvent(d, i * 100, ""))
    lm = LineMetrics(metrics(), {})
    for i, d in enumerate(docs[:1000]):
        lm.feed(LineEvent(d, i * 100, ""))
    committed = orjson.loads(orjson.dumps(lm.snapshot()))  # as the log source stores it
    before = orjson.dumps(lm.snapshot())
    taken = lm.snapshot()
    for i, d in enumerate(docs[1000:2000], 1000):
        lm.feed(LineEvent(d, i * 100, ""))
    assert orjson.dumps(taken) == before  # the snapshot shares no list with the live window
    lm.restore(committed)  # that batch was refused ...
    for i, d in enumerate(docs[1000:], 1000):  # ... and its lines are read again
        lm.feed(LineEvent(d, i * 100, ""))
    assert orjson.dumps(lm.snapshot()) == orjson.dumps(one_pass.snapshot())
    t = len(docs) * 100
    assert series(lm.samples(t, True)) == series(one_pass.samples(t, True))


def test_a_changed_max_age_starts_the_quantiles_again() -> None:
    lm = LineMetrics(metrics(), {})
    lm.feed(LineEvent({"model": "a", "ms": 5}, 0, ""))
    state = lm.snapshot()
    other = LineMetrics(metrics(", max_age: 1m"), {})
    other.restore(state)
    got = series(other.samples(0, True))
    assert ("lat_seconds", "0.5") not in got and got[("lat_seconds_count", None)] == 1
