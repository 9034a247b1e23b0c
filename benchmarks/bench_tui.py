"""B8: the TUI's time to first full frame on a 10M-sample database, and a 30-day chart redraw.

Data: 1000 gauges written through the real Writer (15 s apart, compacted), plus one 15 s series
over 30 days rolled up by ``maintain`` (5 m rollups after 2 d), 10M samples in all (--quick: 1M).

- First frame: ``MlwatchApp`` headless at 120x40 from start until the overview has drawn its data
  (the read side opened, every series' latest value and last-hour sparkline read). Peer, same run:
  the same app over an empty data source (Textual's own floor).
- Chart redraw: the explorer's chart of the 30-day series (read from rollups + raw tail, min/max per
  column, plotext build) in the running app. Peer, same run: the same series over 1 hour.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, median, parser, row

from mlwatch.model import Sample, SeriesKey
from mlwatch.readside import ReadSide, SeriesRow
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.retention import RetentionPolicy
from mlwatch.storage.writer import WriteBatch, Writer
from mlwatch.tui.app import MlwatchApp
from mlwatch.tui.screens.explorer import ExplorerScreen
from mlwatch.tui.screens.overview import OverviewScreen
from mlwatch.tui.widgets.chart import SeriesChart

NOW = 1_764_000_000.0
STEP = 15


def build(path: Path, total: int) -> None:
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    w = Writer(eng, clock=lambda: NOW, out_of_order_window_ms=10**13, compact_threshold=2_000_000)
    w.start()
    month = int(30 * 86400 / STEP)
    per_series = (total - month) // 1000
    rng = np.random.default_rng(8)
    keys = [SeriesKey.of("bench_gauge", {"i": str(i), "model": f"m{i % 10}"}) for i in range(1000)]
    start_ms = int((NOW - per_series * STEP) * 1000)
    block = 500
    for lo in range(0, per_series, block):
        n = min(block, per_series - lo)
        ts = (start_ms + (lo + np.arange(n)) * STEP * 1000).tolist()
        vals = np.round(rng.random((1000, n)) * 100, 2).tolist()
        w.write_sync(
            WriteBatch(
                [Sample(k, t, v) for k, vs in zip(keys, vals, strict=True) for t, v in zip(ts, vs, strict=True)],
                backfill=True,
            )
        )
    key = SeriesKey.of("bench_month", {"host": "a"})
    mts = (int((NOW - 30 * 86400) * 1000) + np.arange(month) * STEP * 1000).tolist()
    mvals = np.round(50 + 10 * np.sin(np.arange(month) / 500) + rng.normal(0, 1, month), 3).tolist()
    for lo in range(0, month, 50_000):
        w.write_sync(
            WriteBatch(
                [Sample(key, t, v) for t, v in zip(mts[lo : lo + 50_000], mvals[lo : lo + 50_000], strict=True)],
                backfill=True,
            )
        )
    w.compact().result()
    policy = RetentionPolicy(retention_ms=10**13, downsample=[(2 * 86400_000, 300_000)])
    for _ in range(20):  # a long history catches up over several maintenance runs
        if w.maintain(policy, int(NOW * 1000)).result().rollup_rows == 0:
            break
    w.stop()
    eng.dispose()


class EmptyData:
    """A data source with nothing in it: the floor of drawing the app at all."""

    def now(self) -> float:
        return NOW

    def daemon(self) -> str | None:
        return None

    def series(self, history_s: float = 3600, points: int = 20) -> list[SeriesRow]:
        return []

    def chart(self, *a: Any) -> list[Any]:
        return []

    def thresholds(self, expr: str) -> list[Any]:
        return []

    def alerts(self) -> list[Any]:
        return []

    def events(self, since: float) -> list[Any]:
        return []

    def notifications(self, since: float) -> list[Any]:
        return []

    def sources(self) -> list[Any]:
        return []

    def add_silence(self, *a: Any) -> str:
        raise NotImplementedError


async def first_frame(path: Path | None, expect_rows: int) -> tuple[float, float]:
    """(seconds to the first full frame: every visible row with its value; seconds until every row and
    sparkline is there)."""
    t0 = time.perf_counter()
    data: Any = ReadSide(path, clock=lambda: NOW) if path else EmptyData()
    app = MlwatchApp(data, refresh_s=0, tz=dt.UTC)
    first = 0.0
    async with app.run_test(size=(120, 40)) as pilot:
        while True:
            screen = app.screen
            if isinstance(screen, OverviewScreen) and screen.query_one("#ov-alerts").row_count:
                table: Any = screen.query_one("#ov-series")
                visible = min(expect_rows, table.size.height - 1)
                if table.row_count >= visible:
                    if not first:
                        # rows are in the table; the compositor paints them on its next refresh (pilot.pause()
                        # here would also wait for the complete draw queued behind it)
                        await asyncio.sleep(1 / 60)
                        first = time.perf_counter() - t0
                    if table.row_count >= expect_rows and (not expect_rows or str(table.get_row_at(0)[-1]).strip()):
                        await pilot.pause()
                        break
            await asyncio.sleep(0.002)
        full = time.perf_counter() - t0
    if path:
        data.close()
    return first, full


async def redraws(path: Path, runs: int) -> tuple[list[float], list[float], int]:
    data = ReadSide(path, clock=lambda: NOW)
    app = MlwatchApp(data, refresh_s=0, tz=dt.UTC)
    month, hour = [], []
    points = 0
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        await app.workers.wait_for_complete()
        screen = app.screen
        assert isinstance(screen, ExplorerScreen)
        chart = screen.query_one(SeriesChart)
        width = chart.size.width

        def once(span: float) -> float:
            t = time.perf_counter()
            lines = data.chart('bench_month{host="a"}', NOW - span, NOW, width)
            chart.show(lines, [], [], NOW - span, NOW, dt.UTC)
            chart.render()
            nonlocal points
            points = len(lines[0].ts) if lines else 0
            if not lines or (span > 86400 and not lines[0].from_rollup):
                raise SystemExit("check failed: the 30-day chart was not drawn from the rollups")
            return (time.perf_counter() - t) * 1000

        once(30 * 86400), once(3600)  # warm-up
        for _ in range(runs):
            month.append(median([once(30 * 86400) for _ in range(5)]))
            hour.append(median([once(3600) for _ in range(5)]))
    data.close()
    return month, hour, points


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    total = 1_000_000 if args.quick else 10_000_000
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b8.db"
        t = time.perf_counter()
        build(path, total)
        built = time.perf_counter() - t
        rs = ReadSide(path, clock=lambda: NOW)
        stored = rs.reader.count_samples()
        rs.close()
        if stored < total * 0.99:
            raise SystemExit(f"check failed: {stored} samples stored, expected {total}")
        print(f"# built {stored:,} samples in {built:.1f}s", file=sys.stderr)
        asyncio.run(first_frame(path, 1001))  # warm-up
        ours, full, floor = [], [], []
        for _ in range(args.runs):
            a, b = asyncio.run(first_frame(path, 1001))
            ours.append(a * 1000)
            full.append(b * 1000)
            floor.append(asyncio.run(first_frame(None, 0))[0] * 1000)
        month, hour, points = asyncio.run(redraws(path, args.runs))
    emit(
        [
            row(
                f"B8 TUI first full frame, {stored / 1e6:.0f}M samples (ms)",
                ours,
                floor,
                unit="ms",
                peer_name="same app, empty data source",
                note="every visible row with its value",
                better="lower",
                target="< 1000 ms",
                ok=median(ours) < 1000,
            ),
            row(
                "B8 TUI overview complete: all rows, sparklines (ms)",
                full,
                floor,
                unit="ms",
                peer_name="same app, empty data source",
                better="lower",
            ),
            row(
                "B8 chart redraw, 30 d of a 15 s series (ms)",
                month,
                hour,
                unit="ms",
                peer_name="same series, 1 h",
                note=f"{points} points drawn",
                better="lower",
                target="< 100 ms",
                ok=median(month) < 100,
            ),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
