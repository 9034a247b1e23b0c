"""The read side: reduction to the screen, rollups for long ranges, thresholds, silences without a daemon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlwatch.promql.selector import parse_selector
from mlwatch.readside import ReadSide, metric_names, minmax_columns, threshold_of
from tests.tui.seed import T0, build


def test_minmax_columns_keeps_every_columns_extremes() -> None:
    ts = np.arange(10_000, dtype=np.float64)
    vals = np.sin(ts / 100)
    vals[1234] = 5.0  # a spike survives
    t, lo, hi = minmax_columns(ts, vals, vals, 0, 10_000, 100)
    assert len(t) == 100 and hi.max() == 5.0 and lo.min() == vals.min()
    _t2, lo2, hi2 = minmax_columns(ts[:50], vals[:50], vals[:50], 0, 10_000, 100)  # few points: untouched
    assert np.array_equal(lo2, vals[:50]) and np.array_equal(hi2, vals[:50])


def test_long_range_comes_from_rollups_and_fits_the_width(tmp_path: Path) -> None:
    path = build(tmp_path / "long.db", hours=1, long_days=4)
    rs = ReadSide(path, clock=lambda: T0)
    try:
        (line,) = rs.chart('node_load{host="a"}', T0 - 4 * 86400, T0, 120)
        assert line.from_rollup
        assert len(line.ts) <= 2 * 120
        (info,) = rs.reader.series(parse_selector("node_load"))
        _raw_t, raw_v = rs.reader.read_range(info.id, int((T0 - 4 * 86400) * 1000), int(T0 * 1000))
        mn, avg, mx, last = line.stats
        assert mn == raw_v.min() and mx == raw_v.max() and last == raw_v[-1]
        assert avg == pytest.approx(raw_v.mean())
        assert line.hi.max() == raw_v.max() and line.lo.min() == raw_v.min()
        (short,) = rs.chart('node_load{host="a"}', T0 - 3600, T0, 120)
        assert not short.from_rollup
    finally:
        rs.close()


def test_threshold_parsing() -> None:
    assert threshold_of('ai_model_accuracy{model="m"} < 0.9') == ('ai_model_accuracy{model="m"}', "<", 0.9)
    assert threshold_of("sum(rate(x[1m])) > 6000") == ("sum(rate(x[1m]))", ">", 6000.0)
    assert threshold_of("absent(x)") is None
    assert "ai_model_accuracy" in metric_names('avg(ai_model_accuracy{model="a"})')


def test_thresholds_only_for_watched_series(data: ReadSide) -> None:
    assert [t.alertname for t in data.thresholds('ai_model_accuracy{model="fraud"}')] == ["AccuracyLow"]
    assert data.thresholds("up") == []


def test_open_readside_needs_an_existing_database(tmp_path: Path) -> None:
    from mlwatch.errors import MlwatchError

    with pytest.raises(MlwatchError, match="no database"):
        ReadSide(tmp_path / "missing.db")


def test_silence_without_daemon_goes_to_the_database(writable_data: ReadSide) -> None:
    from mlwatch.storage import alertstore

    sid = writable_data.add_silence({"alertname": "AccuracyLow"}, 600, "why")
    conn = alertstore.open_direct(writable_data.db_path, readonly=True)
    (s,) = alertstore.load_silences(conn)
    conn.close()
    assert s.id == sid and s.comment == "why"
