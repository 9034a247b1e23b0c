"""Alerts: active alerts, the history as a timeline and a table (filter by label, state, time); silence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from mlwatch.model import parse_duration_ms
from mlwatch.readside import AlertEvent, AlertInfo
from mlwatch.tui.messages import SilenceRequest
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.timerange import parse_range
from mlwatch.tui.widgets.fmt import ago, keep, labels, num, when
from mlwatch.tui.widgets.table import VimTable, add_columns

HISTORY = ("1h", "6h", "24h", "7d", "30d")
STATES = (None, "firing", "pending", "resolved")  # `f` cycles the history's state filter
_STATE_STYLE = {"firing": "bold red", "pending": "yellow", "resolved": "green"}


@dataclass
class AlertsData:
    active: list[AlertInfo]
    events: list[AlertEvent]
    now: float
    since: float
    until: float


def timeline(events: list[AlertEvent], since: float, now: float, width: int) -> list[tuple[str, str]]:
    """(alertname, one char per time bucket: █ firing, ▒ pending, · clear) for each alert with history."""
    span = max(now - since, 1.0)
    rows: dict[str, list[int]] = {}
    state: dict[tuple[str, str], tuple[str, float]] = {}
    rank = {"firing": 2, "pending": 1}

    def paint(name: str, st: str, a: float, b: float) -> None:
        cells = rows.setdefault(name, [0] * width)
        lo = max(0, int((a - since) / span * width))
        hi = min(width - 1, int((b - since) / span * width))
        for i in range(lo, hi + 1):
            cells[i] = max(cells[i], rank.get(st, 0))

    for e in events:
        key = (e.name, labels(e.labels))
        name = f"{e.name} {labels(e.labels, ('alertname', 'severity'))}".strip()
        rows.setdefault(name, [0] * width)
        if key in state:
            st, t0 = state.pop(key)
            paint(name, st, t0, e.ts)
        if e.event in rank:
            state[key] = (e.event, e.ts)
    for (alertname, lbl), (st, t0) in state.items():
        paint(f"{alertname} {labels(json_labels(lbl), ('alertname', 'severity'))}".strip(), st, t0, now)
    chars = "·▒█"
    return [(n, "".join(chars[c] for c in cells)) for n, cells in sorted(rows.items())]


def json_labels(text: str) -> dict[str, str]:
    """The inverse of :func:`labels` (``k=v,k=v``)."""
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


class SilenceScreen(ModalScreen[SilenceRequest | None]):
    """Duration and comment for a silence of one alert's labels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, matchers: dict[str, str]) -> None:
        super().__init__()
        self.matchers = matchers

    def compose(self) -> ComposeResult:
        with Vertical(id="silence-box"):
            yield Label(
                "[b]Silence alerts matching[/b] " + ", ".join(f'{k}="{v}"' for k, v in sorted(self.matchers.items()))
            )
            yield Label("Duration (30m, 2h, 1d; shift+tab):")
            yield Input("2h", id="sil-duration")
            yield Label("Comment:")
            yield Input(placeholder="why", id="sil-comment")
            yield Button("Silence", variant="primary", id="sil-ok")

    def on_mount(self) -> None:
        self.query_one("#sil-comment", Input).focus()  # the duration has a default; shift+tab reaches it

    @on(Input.Submitted)
    @on(Button.Pressed, "#sil-ok")
    def _ok(self) -> None:
        text = self.query_one("#sil-duration", Input).value
        try:
            ms = parse_duration_ms(text)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self.dismiss(SilenceRequest(self.matchers, ms / 1000, self.query_one("#sil-comment", Input).value))

    def action_cancel(self) -> None:
        self.dismiss(None)


class AlertsScreen(DataScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "silence", "Silence"),
        Binding("left_square_bracket", "history(-1)", "Shorter"),
        Binding("right_square_bracket", "history(1)", "Longer"),
        Binding("r", "custom_history", "Range"),
        Binding("f", "cycle_state", "State"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history = "24h"  # a preset, a duration or START..END (see parse_range)
        self.state_filter: str | None = None
        self.active: list[AlertInfo] = []
        self.events: list[AlertEvent] = []

    def compose_body(self) -> ComposeResult:
        yield Static("Active alerts  [dim](s: silence the selected alert)[/dim]", classes="section")
        yield VimTable(id="al-active")
        yield Static("", id="al-detail")
        yield Static("", classes="section", id="al-history-title")
        yield Static("", id="al-timeline")
        yield VimTable(id="al-history")
        yield Input(placeholder="history: 2h, 3d or START..END (RFC 3339, Unix s, -2h..-1h; Enter, Esc)", id="al-range")

    def on_mount(self) -> None:
        add_columns(
            self.query_one("#al-active", DataTable),
            ("STATE", 9),
            ("ALERT", 20),
            ("SINCE", 9),
            ("VALUE", 8),
            ("LABELS", 36),
            ("SUMMARY", 40),
        )
        add_columns(
            self.query_one("#al-history", DataTable),
            ("TIME", 14),
            ("EVENT", 9),
            ("ALERT", 20),
            ("VALUE", 8),
            ("LABELS", 60),
        )
        super().on_mount()
        self.query_one("#al-range", Input).display = False

    def collect(self) -> AlertsData:
        d = self.data
        now = d.now()
        since, until = parse_range(self.history, now)  # checked when typed
        events = [e for e in d.events(since) if e.ts <= until]
        return AlertsData(d.alerts(), events, now, since, until)

    def draw(self, payload: Any) -> None:
        p: AlertsData = payload
        tz = self.mlapp.tz
        self.active = [a for a in p.active if keep(f"{a.state} {a.name} {labels(a.labels)}", self.flt)]
        self.events = [
            e
            for e in reversed(p.events)
            if keep(f"{e.event} {e.name} {labels(e.labels)}", self.flt)
            and (self.state_filter is None or e.event == self.state_filter)
        ]
        t = self.query_one("#al-active", DataTable)
        row = t.cursor_row
        t.clear()
        for a in self.active:
            st = _STATE_STYLE.get(a.state, "")
            t.add_row(
                f"[{st}]{a.state.upper()}[/]",
                a.name,
                ago(a.active_at, p.now),
                num(a.value),
                labels(a.labels),
                a.annotations.get("summary", ""),
            )
        if row < t.row_count:
            t.move_cursor(row=row)
        self._detail()
        span = (
            f"{when(p.since, tz)} → {when(p.until, tz)} ({escape(self.history)})"
            if ".." in self.history
            else f"last {self.history}"
        )
        state = f", {self.state_filter} only" if self.state_filter else ""
        self.query_one("#al-history-title", Static).update(
            f"History, {span}{state}  [dim]\\[ ] shorter/longer, r range, f state; █ firing ▒ pending[/dim]"
        )
        width = max(20, self.size.width - 26)
        names = {e.name for e in self.events}
        lines = [
            f"{n[:30]:<30} {cells}"
            for n, cells in timeline(p.events, p.since, min(p.now, p.until), width - 8)
            if n.split(" ")[0] in names
        ]
        self.query_one("#al-timeline", Static).update("\n".join(lines) or "(no alert events in this range)")
        h = self.query_one("#al-history", DataTable)
        h.clear()
        for e in self.events:
            st = _STATE_STYLE.get(e.event, "")
            h.add_row(when(e.ts, tz), f"[{st}]{e.event}[/]", e.name, num(e.value), labels(e.labels))

    def _detail(self) -> None:
        t = self.query_one("#al-active", DataTable)
        box = self.query_one("#al-detail", Static)
        if not self.active or t.cursor_row >= len(self.active):
            box.update("")
            return
        a = self.active[t.cursor_row]
        extra = "  ".join(f"{k}: {v}" for k, v in sorted(a.annotations.items()) if k != "summary")
        box.update(f"[b]{a.name}[/b]  expr: [i]{a.condition or '?'}[/i]" + (f"\n{extra}" if extra else ""))

    @on(DataTable.RowHighlighted, "#al-active")
    def _highlighted(self) -> None:
        self._detail()

    def action_history(self, delta: int) -> None:
        i = HISTORY.index(self.history) if self.history in HISTORY else 2
        self.history = HISTORY[max(0, min(len(HISTORY) - 1, i + delta))]
        self.reload()

    def action_custom_history(self) -> None:
        box = self.query_one("#al-range", Input)
        box.display = True
        box.value = self.history
        box.focus()

    @on(Input.Submitted, "#al-range")
    def _range_submitted(self, event: Input.Submitted) -> None:
        try:
            parse_range(event.value, self.data.now())
        except ValueError as exc:
            self.notify(str(exc), title="Range", severity="error")  # the box stays open to fix it
            return
        self.history = event.value.strip()
        event.input.display = False
        self.query_one("#al-history").focus()
        self.reload()

    def action_cycle_state(self) -> None:
        self.state_filter = STATES[(STATES.index(self.state_filter) + 1) % len(STATES)]
        self.reload()

    def action_silence(self) -> None:
        matchers: dict[str, str] | None = None
        if self.focused is self.query_one("#al-history") and self.events:
            row = self.query_one("#al-history", DataTable).cursor_row
            if row < len(self.events):
                matchers = dict(self.events[row].labels)
        elif self.active:
            row = self.query_one("#al-active", DataTable).cursor_row
            if row < len(self.active):
                matchers = dict(self.active[row].labels)
        if not matchers:
            self.notify("select an alert to silence", severity="warning")
            return

        def done(req: SilenceRequest | None) -> None:
            if req is not None:
                self._add_silence(req)

        self.app.push_screen(SilenceScreen(matchers), done)

    @work(thread=True, group="silence")
    def _add_silence(self, req: SilenceRequest) -> None:
        try:
            sid = self.data.add_silence(req.matchers, req.duration_s, req.comment)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.app.call_from_thread(self.notify, f"silence failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"silenced: {sid}")
