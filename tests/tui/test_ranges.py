"""Pilot tests: START..END ranges in the explorer and the alerts history, the state filter, a backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from textual.widgets import DataTable, Input, Static

from mlwatch.readside import ReadSide
from mlwatch.storage.backup import backup
from mlwatch.tui.app import MlwatchApp
from mlwatch.tui.screens.alerts import AlertsScreen
from mlwatch.tui.screens.explorer import ExplorerScreen
from mlwatch.tui.timerange import parse_range
from tests.tui.conftest import make_app
from tests.tui.helpers import settle
from tests.tui.seed import T0


def _text(app: MlwatchApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def _cells(table: DataTable[Any]) -> list[str]:
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def _errors(app: MlwatchApp) -> list[str]:
    return [str(n.message) for n in app._notifications if n.severity == "error"]


def test_parse_range_forms() -> None:
    assert parse_range("90m", T0) == (T0 - 5400, T0)
    assert parse_range("-2h..-1h", T0) == (T0 - 7200, T0 - 3600)
    assert parse_range("2025-11-24T14:00:00Z..now", T0) == (T0 - 7200, T0)
    assert parse_range(f"{T0 - 600:.0f}..{T0 - 60:.3f}", T0) == (T0 - 600, T0 - 60)
    for bad, why in (
        ("soon", "want a duration"),
        ("-1h..-2h", "end must come after the start"),
        ("..now", "needs both ends"),
        ("yesterday..now", "cannot parse 'yesterday'"),
        ("2025-11-24T14:00:00..now", "cannot parse"),  # no zone
    ):
        with pytest.raises(ValueError, match=why):
            parse_range(bad, T0)


async def test_explorer_absolute_range_in_title_and_bad_range_error(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = cast(ExplorerScreen, app.screen)
        screen.show_expr('ai_model_accuracy{model="fraud"}')
        await settle(pilot)
        screen.query_one("#ex-list").focus()
        await pilot.press("r", "ctrl+a", "ctrl+k", *"-2h..-1h", "enter")
        await settle(pilot)
        assert screen.range_text == "-2h..-1h"
        title = _text(app, "#ex-title")
        assert "range -2h..-1h (11-24 14:00:00 → 11-24 15:00:00)" in title
        payload = screen.collect()
        assert (payload.start, payload.end) == (T0 - 7200, T0 - 3600)
        assert payload.lines and all(T0 - 7200 <= t <= T0 - 3600 for t in payload.lines[0].ts)
        assert payload.firing == []  # the fraud alert fired later

        await pilot.press("r", "ctrl+a", "ctrl+k", *"2025-11-24T15:30:00Z..1764000000", "enter")
        await settle(pilot)
        assert "(11-24 15:30:00 → 11-24 16:00:00)" in _text(app, "#ex-title")

        await pilot.press("r", "ctrl+a", "ctrl+k", *"-1h..yesterday", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ExplorerScreen)  # no traceback, the screen stays
        assert screen.query_one("#ex-range", Input).display  # the box stays open to fix the range
        assert screen.range_text == "2025-11-24T15:30:00Z..1764000000"  # unchanged
        assert any("bad range '-1h..yesterday'" in e and "cannot parse 'yesterday'" in e for e in _errors(app))
        await pilot.press("ctrl+a", "ctrl+k", *"-30m..-10m", "enter")
        await settle(pilot)
        assert not screen.query_one("#ex-range", Input).display
        assert screen.range_text == "-30m..-10m"


async def test_alerts_history_time_range_and_state_filter(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        screen = cast(AlertsScreen, app.screen)

        def history() -> list[str]:
            return _cells(screen.query_one("#al-history", DataTable))

        assert len(history()) == 5
        await pilot.press("f")  # firing only
        await settle(pilot)
        assert screen.state_filter == "firing"
        assert len(history()) == 2 and all("firing" in r for r in history())
        assert "firing only" in _text(app, "#al-history-title")
        await pilot.press("f")
        await settle(pilot)
        assert len(history()) == 2 and all("pending" in r for r in history())
        await pilot.press("f")
        await settle(pilot)
        assert len(history()) == 1 and "resolved" in history()[0]
        await pilot.press("f")  # back to every state
        await settle(pilot)
        assert screen.state_filter is None and len(history()) == 5

        await pilot.press("r", "ctrl+a", "ctrl+k", *"-2h..-1h", "enter")  # the churn episode only
        await settle(pilot)
        assert screen.history == "-2h..-1h"
        rows = history()
        assert len(rows) == 3 and all("model=churn" in r for r in rows)
        assert "11-24 14:00:00 → 11-24 15:00:00" in _text(app, "#al-history-title")
        timeline = _text(app, "#al-timeline")
        assert "AccuracyLow" in timeline and "█" in timeline
        await pilot.press("f")  # state and time together
        await settle(pilot)
        assert len(history()) == 1 and "churn" in history()[0] and "firing" in history()[0]

        await pilot.press("r", "ctrl+a", "ctrl+k", *"-1h..-2h", "enter")
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen) and screen.query_one("#al-range", Input).display
        assert screen.history == "-2h..-1h"
        assert any("end must come after the start" in e for e in _errors(app))
        await pilot.press("ctrl+a", "ctrl+k", *"30m", "enter")
        await settle(pilot)
        assert screen.history == "30m" and not screen.query_one("#al-range", Input).display
        assert len(history()) == 1 and "fraud" in history()[0]  # firing, the last 30 minutes
        await pilot.press("right_square_bracket")  # presets still work from a custom range
        await settle(pilot)
        assert screen.history == "7d"


async def test_tui_opens_a_backup_read_only_with_the_same_overview(seeded_db: Path, tmp_path: Path) -> None:
    copy = backup(f"sqlite:///{seeded_db}", tmp_path / "backup.db")
    copy.chmod(0o444)  # read-only: the TUI must not need to write
    tables: list[dict[str, list[str]]] = []
    for path in (seeded_db, copy):
        rs = ReadSide(path, clock=lambda: T0)
        try:
            app = make_app(rs)
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot)
                tables.append(
                    {sel: _cells(app.screen.query_one(sel, DataTable)) for sel in ("#ov-alerts", "#ov-series")}
                    | {"down": [_text(app, "#ov-down")]}
                )
        finally:
            rs.close()
    original, restored = tables
    assert restored == original
    assert "AccuracyLow" in original["#ov-alerts"][0] and len(original["#ov-series"]) == 5
