"""The explorer's line chart: several series with a legend, threshold lines, firing periods marked."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
from textual_plotext import PlotextPlot

from mlwatch.readside import ChartSeries, Threshold

COLORS = ("cyan", "magenta", "green", "orange", "blue", "yellow", "white")


class SeriesChart(PlotextPlot):
    """Renders what it is given; no reads."""

    def show(
        self,
        lines: Sequence[ChartSeries],
        thresholds: Sequence[Threshold],
        firing: Sequence[tuple[float, float, str]],
        start: float,
        end: float,
        tz: dt.tzinfo | None,
    ) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        lows = [float(s.lo.min()) for s in lines if len(s.lo)]
        highs = [float(s.hi.max()) for s in lines if len(s.hi)]
        lows += [t.value for t in thresholds]
        highs += [t.value for t in thresholds]
        lo = min(lows) if lows else 0.0
        hi = max(highs) if highs else 1.0
        if hi == lo:
            hi, lo = hi + 0.5, lo - 0.5
        pad = (hi - lo) * 0.05
        for i, s in enumerate(lines[: len(COLORS) * 3]):
            if len(s.ts):
                color = COLORS[i % len(COLORS)]
                x = s.ts.tolist()
                plt.plot(x, s.hi.tolist(), label=_short(s.name), color=color, marker="braille")
                if not np.array_equal(s.lo, s.hi):  # min/max per column: the band's lower edge
                    plt.plot(x, s.lo.tolist(), color=color, marker="braille")
        for t in thresholds:
            plt.hline(t.value, "red")
        labelled: set[str] = set()
        for a, b, name in firing:
            a, b = max(a, start), min(b, end)
            if b > a:
                plt.plot(
                    [a, b],
                    [lo - pad / 2, lo - pad / 2],
                    color="red",
                    marker="hd",
                    label=None if name in labelled else f"{name} firing",
                )
                labelled.add(name)
        plt.xlim(start, end)
        plt.ylim(lo - pad, hi + pad)
        ticks = [start + (end - start) * k / 4 for k in range(5)]
        fmt = "%H:%M" if end - start <= 86400 else "%m-%d %H:%M"
        plt.xticks(ticks, [dt.datetime.fromtimestamp(t, tz or dt.UTC).strftime(fmt) for t in ticks])
        if not lines:
            plt.title("no data in this range")
        self.refresh()


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def fmt_stats(s: ChartSeries) -> str:
    def f(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.4g}"

    mn, avg, mx, last = s.stats
    return f"min {f(mn)}  avg {f(avg)}  max {f(mx)}  last {f(last)}"
