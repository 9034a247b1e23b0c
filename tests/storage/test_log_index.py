"""The readers' index of the log: newer records win, views stay valid while the index moves on."""

from __future__ import annotations

import numpy as np

from mlwatch.storage.head import LogIndex, LogRecord


def rec(rid: int, pairs: list[tuple[int, int, int]]) -> LogRecord:
    a = np.array(pairs, np.int64).reshape(-1, 3)
    return LogRecord(rid, a[:, 0].astype(np.int32), a[:, 1].copy(), a[:, 2].copy())


def test_newer_records_win_across_parts_and_folds() -> None:
    index = LogIndex()
    for rid in range(1, 21):  # more records than MAX_PARTS: parts get folded
        index.add([rec(rid, [(1, 100, rid), (1, rid, rid), (2, 5, -rid)])])
    view = index.view()
    ts, bits = view.series(1)
    assert ts.tolist() == sorted({100, *range(1, 21)})
    assert dict(zip(ts.tolist(), bits.tolist(), strict=True))[100] == 20
    assert view.series(2)[1].tolist() == [-20]
    assert view.count() == 22

    index.drop_before(15)
    assert view.series(1)[0].tolist() == sorted({100, *range(1, 21)})  # the old view is untouched
    after = index.view()
    assert after.series(1)[0].tolist() == sorted({100, *range(15, 21)})
    assert after.series(3)[0].tolist() == []
