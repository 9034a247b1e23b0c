"""Sources: health of each target (up, last success, duration, samples, errors) and its last rejected lines."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from mlwatch.readside import SourceInfo
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.widgets.fmt import ago, keep
from mlwatch.tui.widgets.table import VimTable, add_columns

_STYLE = {"up": "green", "down": "bold red", "unknown": "yellow"}


class SourcesScreen(DataScreen):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[SourceInfo] = []
        self.now = 0.0

    def compose_body(self) -> ComposeResult:
        yield Static("Sources", classes="section")
        yield VimTable(id="src-table")
        yield Static("", id="src-detail")

    def on_mount(self) -> None:
        add_columns(
            self.query_one("#src-table", DataTable),
            ("JOB", 16),
            ("INSTANCE", 34),
            ("TYPE", 8),
            ("HEALTH", 8),
            ("LAST", 9),
            ("DURATION", 9),
            ("SAMPLES", 9),
            ("ERRORS", 7),
        )
        super().on_mount()

    def collect(self) -> tuple[list[SourceInfo], float]:
        return self.data.sources(), self.data.now()

    def draw(self, payload: Any) -> None:
        items, self.now = payload
        self.items = [s for s in items if keep(f"{s.job} {s.instance} {s.type} {s.health}", self.flt)]
        t = self.query_one("#src-table", DataTable)
        row = t.cursor_row
        t.clear()
        for s in self.items:
            st = _STYLE.get(s.health, "")
            t.add_row(
                s.job,
                s.instance,
                s.type,
                f"[{st}]{s.health}[/]",
                ago(s.last_scrape, self.now),
                f"{s.duration_s:.3f}s",
                str(s.samples),
                str(sum(s.errors.values())),
            )
        if row < t.row_count:
            t.move_cursor(row=row)
        self._detail()

    def _detail(self) -> None:
        t = self.query_one("#src-table", DataTable)
        box = self.query_one("#src-detail", Static)
        if not self.items or t.cursor_row >= len(self.items):
            box.update("(no sources reported yet)" if not self.items else "")
            return
        s = self.items[t.cursor_row]
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items())) or "none"
        lines = [f"[b]{s.job}/{s.instance}[/b]  errors: {errs}"]
        if s.last_error:
            lines.append(f"last error: [red]{escape(s.last_error)}[/red]")
        if s.rejected:
            lines.append("last rejected lines:")
            lines += [f"  {escape(line)}" for line in s.rejected[-8:]]
        box.update("\n".join(lines))

    @on(DataTable.RowHighlighted, "#src-table")
    def _highlighted(self) -> None:
        self._detail()
