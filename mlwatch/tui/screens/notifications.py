"""Notifications: every notification with each delivery attempt, its outcome and error."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from mlwatch.readside import NotificationInfo
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.widgets.fmt import keep, when
from mlwatch.tui.widgets.table import VimTable, add_columns

_STYLE = {"delivered": "green", "pending": "yellow", "failed": "bold red", "expired": "red"}


class NotificationsScreen(DataScreen):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[NotificationInfo] = []

    def compose_body(self) -> ComposeResult:
        yield Static("Notifications (newest first)", classes="section")
        yield VimTable(id="nt-table")
        yield Static("", id="nt-detail")

    def on_mount(self) -> None:
        add_columns(
            self.query_one("#nt-table", DataTable),
            ("CREATED", 14),
            ("NOTIFIER", 16),
            ("STATUS", 10),
            ("ATTEMPTS", 8),
            ("ALERTS", 20),
            ("LAST ERROR", 50),
        )
        super().on_mount()

    def collect(self) -> list[NotificationInfo]:
        d = self.data
        return d.notifications(d.now() - 30 * 86400)

    def draw(self, payload: Any) -> None:
        tz = self.mlapp.tz
        self.items = [
            n
            for n in reversed(payload)
            if keep(f"{n.notifier} {n.status} {' '.join(n.alerts)} {n.last_error}", self.flt)
        ]
        t = self.query_one("#nt-table", DataTable)
        row = t.cursor_row
        t.clear()
        for n in self.items:
            st = _STYLE.get(n.status, "")
            t.add_row(
                when(n.created_at, tz),
                n.notifier,
                f"[{st}]{n.status}[/]",
                str(len(n.attempts)),
                ",".join(sorted(set(n.alerts))),
                n.last_error[:80],
            )
        if row < t.row_count:
            t.move_cursor(row=row)
        self._detail()

    def _detail(self) -> None:
        t = self.query_one("#nt-table", DataTable)
        box = self.query_one("#nt-detail", Static)
        if not self.items or t.cursor_row >= len(self.items):
            box.update("(no notifications)" if not self.items else "")
            return
        n = self.items[t.cursor_row]
        tz = self.mlapp.tz
        lines = [f"[b]#{n.id}[/b] {n.notifier}  group {n.group_key}  delivered {when(n.delivered_at, tz)}"]
        for i, a in enumerate(n.attempts, 1):
            outcome = "[green]ok[/]" if a.ok else "[red]failed[/]"
            lines.append(f"  attempt {i}  {when(a.ts, tz)}  {outcome}  {a.seconds:.2f}s  {a.error}")
        if not n.attempts:
            lines.append("  no attempt yet")
        box.update("\n".join(lines))

    @on(DataTable.RowHighlighted, "#nt-table")
    def _highlighted(self) -> None:
        self._detail()
