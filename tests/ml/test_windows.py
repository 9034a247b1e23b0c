"""BucketWindow snapshots reuse the dump of a bucket until the bucket is handed out for a change."""

from __future__ import annotations

from mlwatch.ml.classification import ConfusionCounts
from mlwatch.ml.windows import BucketWindow


def _dump(acc: ConfusionCounts) -> object:
    return acc.to_json()


def test_snapshot_follows_every_change() -> None:
    w: BucketWindow[ConfusionCounts] = BucketWindow(60_000, 1000, ConfusionCounts)
    w.at(1500).add("1", "1")
    w.at(2500).add("0", "1")
    first = w.snapshot(_dump)
    assert first == [[2, [[["1", "1", 1]], 0.0, 0, [], [], []]], [3, [[["0", "1", 1]], 0.0, 0, [], [], []]]]
    assert w.snapshot(_dump) == first
    assert w.snapshot(_dump)[0][1] is first[0][1]  # unchanged buckets are not dumped again
    w.at(1700).add_score(True, 0.9, 10)  # bucket 2 handed out and changed
    w.bucket(3).add("0", "1")
    second = w.snapshot(_dump)
    assert second[0][1][1] > 0 and second[0][1][2:4] == [1, [(9, 1)]]  # log-loss, scored, positive bins
    assert second[1][1][0] == [["0", "1", 2]]
    assert first[1][1][0] == [["0", "1", 1]]  # an earlier snapshot is left as it was
    w.evict(62_500)  # bucket 2 leaves every window
    assert [b for b, _ in w.snapshot(_dump)] == [3]
    w.restore(second, ConfusionCounts.from_json)
    assert w.snapshot(_dump) == second
    w.at(2200).add("1", "0")
    assert w.snapshot(_dump)[1][1][0] == [["0", "1", 2], ["1", "0", 1]]
