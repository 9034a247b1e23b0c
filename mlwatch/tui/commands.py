"""The command palette (ctrl+p): screens, refresh, theme, and "explore <series>" for every stored series."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import Hit, Hits, Provider

from mlwatch.tui.messages import ShowSeries

if TYPE_CHECKING:
    from mlwatch.tui.app import MlwatchApp

_SCREENS = ("overview", "explorer", "alerts", "notifications", "sources")


class MlwatchCommands(Provider):
    def _actions(self) -> list[tuple[str, str, object]]:
        app: MlwatchApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, str, object]] = [
            (f"Go to {name}", f"switch to the {name} screen", partial(app.switch_mode, name)) for name in _SCREENS
        ]
        out += [
            ("Pause or resume auto-refresh", "p", app.action_pause),
            ("Refresh now", "R", app.action_reload),
            ("Toggle dark/light theme", "t", app.action_toggle_theme),
            ("Help: keys", "?", app.action_help),
        ]
        for selector in app.known_series:
            out.append(
                (f"Explore {selector}", "chart it in the explorer", partial(app.post_message, ShowSeries(selector)))
            )
        return out

    async def discover(self) -> Hits:
        for title, help_text, action in self._actions()[:9]:
            yield Hit(1.0, title, action, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), action, help=help_text)  # type: ignore[arg-type]
