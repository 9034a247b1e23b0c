"""Explorer: a searchable series list or any PromQL, charted over a preset or custom range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from mlwatch.readside import AlertEvent, ChartSeries, SeriesRow, Threshold
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.timerange import parse_range
from mlwatch.tui.widgets.chart import COLORS, SeriesChart, fmt_stats
from mlwatch.tui.widgets.fmt import INTERNAL, keep, labels, row_filter, when
from mlwatch.tui.widgets.table import VimOptionList

PRESETS = ("15m", "1h", "6h", "24h", "7d", "30d")


@dataclass
class ExplorerData:
    series: list[SeriesRow]
    lines: list[ChartSeries]
    thresholds: list[Threshold]
    firing: list[tuple[float, float, str]]
    start: float
    end: float


def _compatible(alert: dict[str, str], series: list[dict[str, str]]) -> bool:
    """The alert's labels agree with some charted series on every label both carry."""
    if not series:
        return True
    return any(all(s[k] == v for k, v in alert.items() if k in s and k != "__name__") for s in series)


def firing_periods(
    events: list[AlertEvent], names: set[str], end: float, series: list[dict[str, str]] | None = None
) -> list[tuple[float, float, str]]:
    """(from, to, alertname) of each period an alert in ``names`` was firing; an open one ends at ``end``."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for e in events:
        if e.name not in names or not _compatible(e.labels, series or []):
            continue
        key = (e.name, labels(e.labels))
        if e.event == "firing":
            open_.setdefault(key, e.ts)
        elif e.event == "resolved" and key in open_:
            out.append((open_.pop(key), e.ts, e.name))
    out += [(t, end, k[0]) for k, t in open_.items()]
    return sorted(out)


class ExplorerScreen(DataScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "range(-1)", "Shorter"),
        Binding("right_square_bracket", "range(1)", "Longer"),
        Binding("r", "custom_range", "Range"),
        Binding("colon", "edit_expr", "PromQL"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.expr = ""
        self.range_text = "1h"
        self.all_series: list[SeriesRow] = []

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="ex-main"):
            with Vertical(id="ex-left"):
                yield Input(placeholder="PromQL, or type to search series", id="ex-expr")
                yield VimOptionList(id="ex-list")
            with Vertical(id="ex-right"):
                yield Static("", id="ex-title")
                yield SeriesChart(id="ex-chart")
                yield Static("", id="ex-stats")
        yield Input(placeholder="range: 15m, 2h, 3d or START..END (RFC 3339, Unix s, -2h..-1h; Enter)", id="ex-range")

    def on_mount(self) -> None:
        self.query_one("#ex-range", Input).display = False
        self.query_one("#ex-expr", Input).value = self.expr
        super().on_mount()
        self.query_one("#ex-list").focus()

    def show_expr(self, expr: str) -> None:
        self.expr = expr
        if self.is_mounted:
            self.query_one("#ex-expr", Input).value = expr
            self.reload()
        # else on_mount shows it

    def collect(self) -> ExplorerData:
        d = self.data
        start, end = parse_range(self.range_text, d.now())  # checked when typed; START..END may be relative
        series = d.series()
        if not self.expr:
            return ExplorerData(series, [], [], [], start, end)
        width = max(40, self.query_one("#ex-chart").size.width)  # one point (or min/max pair) per cell
        lines = d.chart(self.expr, start, end, width)
        thresholds = d.thresholds(self.expr)
        names = {t.alertname for t in thresholds}
        events = [e for e in d.events(start - 30 * 86400) if e.ts <= end] if names else []  # none after the range
        firing = firing_periods(events, names, end, [s.labels for s in lines]) if names else []
        return ExplorerData(series, lines, thresholds, firing, start, end)

    def draw(self, payload: Any) -> None:
        p: ExplorerData = payload
        self.all_series = p.series
        self._fill_list()
        title = self.query_one("#ex-title", Static)
        shown = self.range_text
        if ".." in shown:
            shown = f"{shown} ({when(p.start, self.mlapp.tz)} → {when(p.end, self.mlapp.tz)})"
        title.update(
            f"[b]{self.expr or 'pick a series or type PromQL'}[/b]   range {escape(shown)}"
            "   [dim]\\[ ] shorter/longer, r custom[/dim]"
        )
        self.query_one("#ex-chart", SeriesChart).show(p.lines, p.thresholds, p.firing, p.start, p.end, self.mlapp.tz)
        stats = []
        for i, s in enumerate(p.lines[:8]):
            src = " (rollup)" if s.from_rollup else ""
            stats.append(f"[{COLORS[i % len(COLORS)]}]━━[/] {s.name}  {fmt_stats(s)}{src}")
        if len(p.lines) > 8:
            stats.append(f"... and {len(p.lines) - 8} more series")
        for t in p.thresholds:
            stats.append(f"[red]──[/] {t.alertname}: {t.op} {t.value:g}")
        self.query_one("#ex-stats", Static).update("\n".join(stats))

    def _fill_list(self) -> None:
        ol = self.query_one("#ex-list", OptionList)
        typed = self.query_one("#ex-expr", Input).value
        search = row_filter(typed) if typed and typed != self.expr else (False, None)
        highlighted = ol.highlighted
        ol.clear_options()
        for s in sorted(self.all_series, key=lambda s: bool(INTERNAL.match(s.name))):
            text = f"{s.name} {labels(s.labels, ())}"
            if keep(text, search) and keep(text, self.flt):
                ol.add_option(Option(text, id=s.selector))
        if ol.option_count:
            ol.highlighted = highlighted if highlighted is not None and highlighted < ol.option_count else 0

    @on(Input.Changed, "#ex-expr")
    def _typed(self) -> None:
        self._fill_list()

    @on(Input.Submitted, "#ex-expr")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.show_expr(event.value.strip())

    @on(OptionList.OptionSelected, "#ex-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.show_expr(event.option.id)

    def action_range(self, delta: int) -> None:
        i = PRESETS.index(self.range_text) if self.range_text in PRESETS else 1
        self.range_text = PRESETS[max(0, min(len(PRESETS) - 1, i + delta))]
        self.reload()

    def action_custom_range(self) -> None:
        box = self.query_one("#ex-range", Input)
        box.display = True
        box.value = self.range_text
        box.focus()

    def action_edit_expr(self) -> None:
        self.query_one("#ex-expr", Input).focus()

    @on(Input.Submitted, "#ex-range")
    def _range_submitted(self, event: Input.Submitted) -> None:
        try:
            parse_range(event.value, self.data.now())
        except ValueError as exc:
            self.notify(str(exc), title="Range", severity="error")  # the box stays open to fix it
            return
        self.range_text = event.value.strip()
        event.input.display = False
        self.query_one("#ex-list").focus()
        self.reload()
