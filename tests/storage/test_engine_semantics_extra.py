"""The out-of-order window is per series: a new series may start in the past (matured ML windows rely on it)."""

from __future__ import annotations

import time

from mlwatch.model import Sample, SeriesKey
from mlwatch.storage.writer import WriteBatch, Writer


def test_out_of_order_window_is_per_series(engine: object) -> None:
    w = Writer(engine, out_of_order_window_ms=3600_000)  # type: ignore[arg-type]
    w.start()
    try:
        now = int(time.time() * 1000)
        first = w.write_sync(WriteBatch(samples=[Sample(SeriesKey.of("a"), now, 1.0),
                                                 Sample(SeriesKey.of("b", {"basis": "p"}), now - 7200_000, 2.0)]))
        assert (first.appended, first.out_of_order) == (2, 0)
        later = w.write_sync(WriteBatch(samples=[Sample(SeriesKey.of("b", {"basis": "p"}), now - 5400_000, 3.0)]))
        assert (later.appended, later.out_of_order) == (1, 0)
        old = w.write_sync(WriteBatch(samples=[Sample(SeriesKey.of("a"), now - 7200_000, 4.0)]))
        assert (old.appended, old.out_of_order) == (0, 1)  # older than a's newest minus the window
    finally:
        w.stop()
