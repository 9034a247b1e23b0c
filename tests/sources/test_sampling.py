"""Sampling: random by hash holds its rate, stratified keeps every stratum, reservoir keeps its budget."""

from __future__ import annotations

import collections
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatch.config.parts import SamplingConfig
from mlwatch.sources.sampling import LineEvent, ReservoirSampler, make_sampler


def ev(i: int, **fields: object) -> LineEvent:
    return LineEvent(dict(fields), 1_000_000 + i, f"fp:{i * 10}")


def test_random_rate_holds_statistically_and_is_deterministic() -> None:
    s = make_sampler(SamplingConfig(strategy="random", rate=0.1, key="id"))
    n = 100_000
    kept = sum(len(s.offer(ev(i, id=f"req-{i}"))) for i in range(n))
    sd = math.sqrt(n * 0.1 * 0.9)
    assert abs(kept - n * 0.1) < 4 * sd
    again = make_sampler(SamplingConfig(strategy="random", rate=0.1, key="id"))
    assert [len(again.offer(ev(i, id=f"req-{i}"))) for i in range(1000)] == [
        len(make_sampler(SamplingConfig(strategy="random", rate=0.1, key="id")).offer(ev(i, id=f"req-{i}")))
        for i in range(1000)
    ]


def test_random_without_key_uses_the_position() -> None:
    s = make_sampler(SamplingConfig(strategy="random", rate=0.5))
    kept = sum(len(s.offer(ev(i))) for i in range(20_000))
    assert 9_400 < kept < 10_600


def test_stratified_keeps_every_stratum_and_caps_each() -> None:
    s = make_sampler(SamplingConfig(strategy="stratified", by="label", per_stratum=50, window=60_000))
    rng = random.Random(1)
    labels = ["common"] * 10_000 + ["rare"] * 3 + ["medium"] * 200
    rng.shuffle(labels)
    kept = collections.Counter(e.fields["label"] for i, lab in enumerate(labels) for e in s.offer(ev(0, label=lab)))
    assert kept == {"common": 50, "rare": 3, "medium": 50}


def test_stratified_rate_thins_each_stratum_and_keeps_its_first() -> None:
    s = make_sampler(SamplingConfig(strategy="stratified", by="label", rate=0.1, window=60_000))
    kept = collections.Counter(e.fields["label"] for lab in ["a"] * 1000 + ["b"] * 1 for e in s.offer(ev(0, label=lab)))
    assert kept == {"a": 100, "b": 1}


def test_stratified_windows_reset_and_state_round_trips() -> None:
    cfg = SamplingConfig(strategy="stratified", by="label", per_stratum=2, window=1000)
    s = make_sampler(cfg)
    assert sum(len(s.offer(LineEvent({"label": "a"}, t, "p"))) for t in (0, 1, 2)) == 2
    s2 = make_sampler(cfg)
    s2.restore(s.snapshot())
    assert s2.offer(LineEvent({"label": "a"}, 3, "p")) == []
    assert len(s2.offer(LineEvent({"label": "a"}, 1000, "p"))) == 1  # a new window


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 500), size=st.integers(1, 20))
def test_reservoir_keeps_min_of_n_and_size_per_window(n: int, size: int) -> None:
    s = ReservoirSampler(size, 1000)
    released = []
    for i in range(n):
        released += s.offer(LineEvent({"i": i}, 5, f"p{i}"))
    released += s.offer(LineEvent({"i": -1}, 1005, "next"))  # closes the first window
    assert len(released) == min(n, size)
    assert len({e.fields["i"] for e in released}) == len(released)


def test_reservoir_is_roughly_uniform() -> None:
    counts = collections.Counter[int]()
    for w in range(400):
        s = ReservoirSampler(10, 1000)
        for i in range(100):
            s.offer(LineEvent({"i": i}, w * 1000, f"{w}:{i}"))
        counts.update(e.fields["i"] // 10 for e in s.flush((w + 1) * 1000))
    # 400 windows x 10 kept = 4000, spread over 10 deciles of the input
    assert all(300 < c < 500 for c in counts.values()), counts
