"""The Textual app: five screens as modes, one refresh timer, keys, themes and the command palette."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType

from mlwatch.readside import TuiData
from mlwatch.tui.commands import MlwatchCommands
from mlwatch.tui.messages import ShowSeries
from mlwatch.tui.screens.alerts import AlertsScreen
from mlwatch.tui.screens.base import DataScreen
from mlwatch.tui.screens.explorer import ExplorerScreen
from mlwatch.tui.screens.help import HelpScreen
from mlwatch.tui.screens.notifications import NotificationsScreen
from mlwatch.tui.screens.overview import OverviewScreen
from mlwatch.tui.screens.sources import SourcesScreen


class MlwatchApp(App[None]):
    """``data`` is the read side (a fixed seeded one in tests); ``refresh_s`` 0 turns auto-refresh off."""

    CSS_PATH = "mlwatch.tcss"
    COMMANDS = App.COMMANDS | {MlwatchCommands}
    TITLE = "mlwatch"
    MODES: ClassVar[dict[str, type[DataScreen]]] = {  # type: ignore[assignment]
        "overview": OverviewScreen,
        "explorer": ExplorerScreen,
        "alerts": AlertsScreen,
        "notifications": NotificationsScreen,
        "sources": SourcesScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('overview')", "Overview"),
        Binding("2", "switch_mode('explorer')", "Explorer"),
        Binding("3", "switch_mode('alerts')", "Alerts"),
        Binding("4", "switch_mode('notifications')", "Notifs"),
        Binding("5", "switch_mode('sources')", "Sources"),
        Binding("p", "pause", "Pause"),
        Binding("R", "reload", "Refresh", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        data: TuiData,
        *,
        refresh_s: float = 5.0,
        tz: dt.tzinfo | None = None,
        theme: str = "textual-dark",
        source: str = "",
    ) -> None:
        super().__init__()
        self.data = data
        self.refresh_s = refresh_s
        self.tz = tz
        self.paused = False
        self.source = source
        self._theme_name = theme
        self.known_series: list[str] = []  # selectors the screens last saw, for the command palette

    def on_mount(self) -> None:
        self.theme = self._theme_name
        self.sub_title = self.source
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self._tick)
        self.switch_mode("overview")

    def status_text(self) -> str:
        if self.refresh_s <= 0:
            refresh = "auto-refresh off"
        elif self.paused:
            refresh = "[b yellow]PAUSED[/] (p resumes)"
        else:
            refresh = f"refresh every {self.refresh_s:g}s (p pauses)"
        return f"{refresh}  ·  / filter  ·  ? help"

    def _tick(self) -> None:
        if not self.paused and isinstance(self.screen, DataScreen):
            self.screen.reload()

    def action_reload(self) -> None:
        if isinstance(self.screen, DataScreen):
            self.screen.reload()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.notify("auto-refresh paused" if self.paused else "auto-refresh resumed")
        if isinstance(self.screen, DataScreen):
            self.screen.reload()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    @on(ShowSeries)
    def _show_series(self, msg: ShowSeries) -> None:
        self.switch_mode("explorer")
        screen = self.screen
        if isinstance(screen, ExplorerScreen):
            screen.show_expr(msg.expr)
