"""`?`: the keys."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """[b]mlwatch tui[/b]

[b]Overview[/b]  Enter explores the series   i shows/hides internal series (mlwatch_*, ALERTS, buckets)
[b]Screens[/b]   1 overview   2 explorer   3 alerts   4 notifications   5 sources   ctrl+p commands
[b]Move[/b]      j/k or ↓/↑   g/G top/bottom   h/l or ←/→ scroll   ctrl+d/ctrl+u page   tab next pane
[b]Filter[/b]    /  regex over the rows (!regex inverts), Esc clears
[b]Refresh[/b]   p  pause/resume auto-refresh   R  refresh now
[b]Explorer[/b]  Enter on a series or PromQL   \\[ ] shorter/longer range (15m 1h 6h 24h 7d 30d)   r custom range (90m or START..END)   : edit PromQL
[b]Alerts[/b]    s  silence the selected alert (duration, comment)   \\[ ] history range   r START..END   f state (firing/pending/resolved)
[b]Other[/b]     t  dark/light theme   ?  this help   q  quit

Press Esc or ? to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help-box")
