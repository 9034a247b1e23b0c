"""Overview: firing and pending alerts at the top, every series with value, sparkline and trend, sources down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from mlwatch.readside import AlertInfo, SeriesRow, SourceInfo
from mlwatch.tui.messages import ShowSeries
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.widgets.fmt import INTERNAL, ago, keep, labels, num, sparkline, trend
from mlwatch.tui.widgets.table import VimTable, add_columns


@dataclass
class OverviewData:
    alerts: list[AlertInfo]
    series: list[SeriesRow]
    down: list[SourceInfo]
    now: float
    first: bool = False  # the quick first part: values without sparklines, only as many rows as fit


class OverviewScreen(DataScreen):
    """Internal series (mlwatch's own, ALERTS, scrape bookkeeping, histogram buckets) only with ``i``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("i", "toggle_internal", "Internal series")]

    def __init__(self) -> None:
        super().__init__()
        self.show_internal = False

    def action_toggle_internal(self) -> None:
        self.show_internal = not self.show_internal
        self.reload()

    def compose_body(self) -> ComposeResult:
        yield Static("Alerts", classes="section")
        yield VimTable(id="ov-alerts")
        yield Static("Series (Enter: explore)", classes="section", id="ov-series-title")
        yield VimTable(id="ov-series")
        yield Static("", id="ov-down")

    def on_mount(self) -> None:
        add_columns(
            self.query_one("#ov-alerts", DataTable),
            ("STATE", 9),
            ("ALERT", 22),
            ("SINCE", 9),
            ("VALUE", 9),
            ("LABELS", 60),
        )
        add_columns(
            self.query_one("#ov-series", DataTable),
            ("SERIES", 28),
            ("LABELS", 38),
            ("VALUE", 9),
            ("TREND", 5),
            ("LAST HOUR", 20),
        )
        super().on_mount()

    def collect_first(self) -> OverviewData:
        d = self.data
        down = [s for s in d.sources() if s.health == "down"]
        return OverviewData(d.alerts(), d.series(history_s=0), down, d.now(), first=True)

    def collect(self) -> OverviewData:
        d = self.data
        return OverviewData(d.alerts(), d.series(), [s for s in d.sources() if s.health == "down"], d.now())

    def draw(self, payload: Any) -> None:
        p: OverviewData = payload
        firing = {a.name for a in p.alerts if a.state == "firing"}
        pending = {a.name for a in p.alerts if a.state == "pending"}
        at = self.query_one("#ov-alerts", DataTable)
        at.clear()
        for a in sorted(p.alerts, key=lambda a: (a.state != "firing", a.name)):
            text = f"{a.state} {a.name} {labels(a.labels)}"
            if keep(text, self.flt):
                style = "bold red" if a.state == "firing" else "yellow"
                at.add_row(
                    f"[{style}]{a.state.upper()}[/]", a.name, ago(a.active_at, p.now), num(a.value), labels(a.labels)
                )
        if not at.row_count:
            at.add_row("[green]OK[/]", "no active alerts", "", "", "")
        self.mlapp.known_series = [s.selector for s in p.series]
        st = self.query_one("#ov-series", DataTable)
        keep_row = st.cursor_row
        st.clear()
        room = self.size.height * 2 if p.first else len(p.series)  # the rest comes with the full draw
        hidden = 0
        for s in p.series:
            if st.row_count >= room:
                break
            if not self.show_internal and INTERNAL.match(s.name):
                hidden += 1
                continue
            lbl = labels(s.labels, ())
            if not keep(f"{s.name} {lbl}", self.flt):
                continue
            name = s.name
            if any(a.name in firing and _alert_matches(a, s) for a in p.alerts):
                name = f"[bold red]{s.name}[/]"
            elif any(a.name in pending and _alert_matches(a, s) for a in p.alerts):
                name = f"[yellow]{s.name}[/]"
            st.add_row(name, lbl, num(s.value), trend(s.history), sparkline(s.history), key=s.selector)
        if keep_row < st.row_count:
            st.move_cursor(row=keep_row)
        note = (
            f" · {hidden} internal hidden (i shows)"
            if hidden
            else (" · i hides internal" if self.show_internal else "")
        )
        self.query_one("#ov-series-title", Static).update(f"Series (Enter: explore){note}")
        down = self.query_one("#ov-down", Static)
        if p.down:
            down.update(
                "[b red]Sources down:[/] "
                + "  ".join(f"{s.job}/{s.instance} ({s.last_error or 'no data'})" for s in p.down)
            )
        else:
            down.update("[green]All sources up[/]" if p.series else "")

    @on(DataTable.RowSelected, "#ov-series")
    def _explore(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(ShowSeries(event.row_key.value))


def _alert_matches(a: AlertInfo, s: SeriesRow) -> bool:
    """An alert concerns a series when its expression names the metric and shared labels agree."""
    if s.name not in a.condition:
        return False
    return all(a.labels.get(k, v) == v for k, v in s.labels.items())
