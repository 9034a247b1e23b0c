"""What every data screen shares: a worker that collects, a Collected message that draws, a `/` filter."""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from mlwatch.tui.messages import Collected
from mlwatch.tui.widgets.fmt import row_filter

if TYPE_CHECKING:
    from mlwatch.readside import TuiData
    from mlwatch.tui.app import MlwatchApp


class DataScreen(Screen[None]):
    """A screen whose content comes from :meth:`collect` (run in a thread) and goes to :meth:`draw`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._drawn = False

    @property
    def mlapp(self) -> MlwatchApp:
        return self.app  # type: ignore[return-value]

    @property
    def data(self) -> TuiData:
        return self.mlapp.data

    @abstractmethod
    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the header and the filter/status/footer every screen has."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_body()
        yield Input(placeholder="filter: regex, !regex inverts (Enter applies, Esc clears)", id="filter")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False

    def on_screen_resume(self) -> None:
        self.reload()  # also the first load: a screen resumes when first shown

    # ------------------------------------------------------------ collect apart from draw

    @abstractmethod
    def collect(self) -> Any:
        """Read what the screen shows (runs in a worker thread; may block)."""

    @abstractmethod
    def draw(self, payload: Any) -> None:
        """Render what :meth:`collect` returned (on the UI thread)."""

    def reload(self) -> None:
        self._fetch()

    def collect_first(self) -> Any:
        """A cheaper first part of :meth:`collect` drawn before it, or None (the first frame comes sooner)."""
        return None

    @work(thread=True, exclusive=True, group="collect")
    def _fetch(self) -> None:
        try:
            if not self._drawn:
                first = self.collect_first()
                if first is not None:
                    self.post_message(Collected(first))
            payload = self.collect()
        except Exception as exc:  # noqa: BLE001 - shown on the status line, never swallowed
            self.post_message(Collected(error=f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(Collected(payload))

    @on(Collected)
    def _collected(self, msg: Collected) -> None:
        status = self.query_one("#status", Static)
        if msg.error:
            status.update(f"[b]error:[/b] {msg.error}")
            status.add_class("error")
            return
        status.remove_class("error")
        status.update(self.mlapp.status_text())
        self.draw(msg.payload)
        self._drawn = True

    # ------------------------------------------------------------ the / filter

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        if self.filter_text:
            self.filter_text = ""
            self.reload()
        self.focus_next()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value
        event.input.display = False
        self.focus_next()
        self.reload()

    @property
    def flt(self) -> tuple[bool, re.Pattern[str] | None]:
        return row_filter(self.filter_text)
