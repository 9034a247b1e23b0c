"""Messages posted by collecting workers to the screens that draw them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


class Collected(Message):
    """A screen's worker finished: ``payload`` to draw, or ``error`` to show."""

    def __init__(self, payload: Any = None, error: str = "") -> None:
        super().__init__()
        self.payload = payload
        self.error = error


@dataclass
class SilenceRequest:
    matchers: dict[str, str]
    duration_s: float
    comment: str


class ShowSeries(Message):
    """Open the explorer on an expression (posted by the overview)."""

    def __init__(self, expr: str) -> None:
        super().__init__()
        self.expr = expr
