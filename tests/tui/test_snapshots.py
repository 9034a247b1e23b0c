"""Snapshots of every screen on the seeded database, fixed clock, UTC, 120x40 (and the overview at 80x24).

Review a diff (the HTML report) before ``--snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from mlwatch.readside import ReadSide
from tests.tui.conftest import make_app
from tests.tui.helpers import settle

SIZE = (120, 40)


def _keys(*keys: str) -> Callable[[Pilot[None]], Any]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for k in keys:
            await pilot.press(k)
            await settle(pilot)
        pilot.app.screen.set_focus(None)
        await settle(pilot)

    return run


@pytest.mark.parametrize(
    "name,keys",
    [
        ("overview", ()),
        ("alerts", ("3",)),
        ("notifications", ("4",)),
        ("sources", ("5",)),
        ("help", ("question_mark",)),
    ],
)
def test_screen(snap_compare: Any, data: ReadSide, name: str, keys: tuple[str, ...]) -> None:
    assert snap_compare(make_app(data), terminal_size=SIZE, run_before=_keys(*keys))


def test_explorer_chart(snap_compare: Any, data: ReadSide) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        pilot.app.screen.show_expr('ai_model_accuracy{model="fraud"}')  # type: ignore[attr-defined]
        await settle(pilot)
        pilot.app.screen.set_focus(None)
        await settle(pilot)

    assert snap_compare(make_app(data), terminal_size=SIZE, run_before=run)


def test_overview_80x24_light(snap_compare: Any, data: ReadSide) -> None:
    assert snap_compare(make_app(data), terminal_size=(80, 24), run_before=_keys("t"))
