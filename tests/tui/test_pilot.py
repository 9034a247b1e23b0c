"""Pilot tests: every screen and every key binding, on the seeded database."""

from __future__ import annotations

from typing import Any, cast

from textual.widgets import DataTable, Input, OptionList, Static

from mlwatch.readside import ReadSide
from mlwatch.storage import alertstore
from mlwatch.tui.app import MlwatchApp
from mlwatch.tui.screens.alerts import AlertsScreen, SilenceScreen
from mlwatch.tui.screens.explorer import ExplorerScreen
from mlwatch.tui.screens.help import HelpScreen
from mlwatch.tui.screens.notifications import NotificationsScreen
from mlwatch.tui.screens.overview import OverviewScreen
from mlwatch.tui.screens.sources import SourcesScreen
from mlwatch.tui.widgets.chart import SeriesChart
from tests.tui.conftest import make_app
from tests.tui.helpers import settle


def _text(app: MlwatchApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def _cells(table: DataTable[Any]) -> list[str]:
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def test_overview_shows_alerts_series_and_down_sources(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        alerts = _cells(app.screen.query_one("#ov-alerts", DataTable))
        assert "FIRING" in alerts[0] and "AccuracyLow" in alerts[0]
        assert "PENDING" in alerts[1] and "TargetDown" in alerts[1]
        series = _cells(app.screen.query_one("#ov-series", DataTable))
        assert len(series) == 5
        fraud = next(r for r in series if "model=fraud" in r and "accuracy" in r)
        assert "0.818" in fraud and "↓" in fraud and "bold red" in fraud  # coloured by its firing alert
        assert "model-api/127.0.0.1:8001" in _text(app, "#ov-down")


async def test_screens_switch_with_number_keys(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key, kind in (
            ("2", ExplorerScreen),
            ("3", AlertsScreen),
            ("4", NotificationsScreen),
            ("5", SourcesScreen),
            ("1", OverviewScreen),
        ):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, kind), key


async def test_filter_regex_and_inverted(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert app.screen.query_one("#filter", Input).has_focus
        await pilot.press(*"fraud", "enter")
        await settle(pilot)
        rows = _cells(app.screen.query_one("#ov-series", DataTable))
        assert len(rows) == 2 and all("fraud" in r for r in rows)
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"!^up |fraud", "enter")
        await settle(pilot)
        rows = _cells(app.screen.query_one("#ov-series", DataTable))
        assert len(rows) == 1 and "churn" in rows[0]
        await pilot.press("slash", "escape")
        await settle(pilot)
        assert len(_cells(app.screen.query_one("#ov-series", DataTable))) == 5


async def test_vim_keys_move_the_cursor(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#ov-series", DataTable)
        table.focus()
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == 4
        await pilot.press("g", "down")
        assert table.cursor_row == 1


async def test_enter_on_a_series_opens_the_explorer_chart(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#ov-series", DataTable)
        table.focus()
        await pilot.press("j", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ExplorerScreen)
        assert app.screen.expr == 'ai_model_accuracy{model="fraud"}'
        stats = _text(app, "#ex-stats")
        assert "min 0.818" in stats and "max 0.9453" in stats and "last 0.818" in stats
        assert "AccuracyLow: < 0.9" in stats  # the rule watching it


async def test_explorer_promql_range_keys_and_custom_range(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = cast(ExplorerScreen, app.screen)
        assert screen.query_one("#ex-list", OptionList).option_count == 5
        await pilot.press("colon", *"sum(rate(ai_model_predictions_total[5m]))", "enter")
        await settle(pilot)
        assert "min 2.667" in _text(app, "#ex-stats")
        screen.query_one("#ex-list").focus()
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert screen.range_text == "6h"
        await pilot.press("left_square_bracket", "left_square_bracket")
        await settle(pilot)
        assert screen.range_text == "15m"
        await pilot.press("r", "ctrl+a", "ctrl+k", *"90m", "enter")
        await settle(pilot)
        assert screen.range_text == "90m"
        assert "range 90m" in _text(app, "#ex-title")


async def test_explorer_search_list_and_pick(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("colon", *"^up")
        ol = app.screen.query_one("#ex-list", OptionList)
        assert ol.option_count == 2
        ol.focus()
        await pilot.press("j", "k", "enter")
        await settle(pilot)
        screen = cast(ExplorerScreen, app.screen)
        assert screen.expr.startswith("up{")
        chart = screen.query_one(SeriesChart)
        assert chart.plt is not None


async def test_explorer_marks_firing_periods(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = cast(ExplorerScreen, app.screen)
        screen.show_expr('ai_model_accuracy{model="fraud"}')
        await settle(pilot)
        payload = screen.collect()
        assert [(round(a), name) for a, _b, name in payload.firing] == [(1_764_000_000 - 1200, "AccuracyLow")]
        screen.show_expr('ai_model_accuracy{model="churn"}')
        payload = screen.collect()
        assert [(round(a), round(b)) for a, b, _ in payload.firing] == [(1_764_000_000 - 6700, 1_764_000_000 - 5400)]


async def test_alerts_screen_active_history_timeline(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        active = _cells(app.screen.query_one("#al-active", DataTable))
        assert "AccuracyLow" in active[0] and "accuracy of fraud is 82%" in active[0]
        assert 'ai_model_accuracy{model="fraud"} < 0.9' in _text(app, "#al-detail")
        history = _cells(app.screen.query_one("#al-history", DataTable))
        assert len(history) == 5 and "firing" in history[0]
        timeline = _text(app, "#al-timeline")
        assert "AccuracyLow" in timeline and "█" in timeline
        await pilot.press("slash", *"resolved", "enter")
        await settle(pilot)
        assert len(_cells(app.screen.query_one("#al-history", DataTable))) == 1
        await pilot.press("left_square_bracket")  # history 6h: the churn episode started earlier
        await settle(pilot)
        assert cast(AlertsScreen, app.screen).history == "6h"


async def test_silence_from_the_alerts_screen_without_daemon(writable_data: ReadSide) -> None:
    app = make_app(writable_data)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        app.screen.query_one("#al-active").focus()
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SilenceScreen)
        assert app.screen.matchers["alertname"] == "AccuracyLow"
        await pilot.press(*"retraining", "shift+tab", "ctrl+a", "ctrl+k", *"45m", "enter")
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen)
    conn = alertstore.open_direct(writable_data.db_path, readonly=True)
    silences = alertstore.load_silences(conn)
    conn.close()
    assert len(silences) == 1
    s = silences[0]
    assert s.comment == "retraining" and round(s.ends_at - s.starts_at) == 45 * 60
    assert {"name": "model", "value": "fraud", "isRegex": False, "isEqual": True} in s.matchers


async def test_silence_cancel_and_bad_duration(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        app.screen.query_one("#al-active").focus()
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("shift+tab", "ctrl+a", "ctrl+k", *"soon", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SilenceScreen)  # refused, still asking
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AlertsScreen)


async def test_notifications_show_attempts_and_errors(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        rows = _cells(app.screen.query_one("#nt-table", DataTable))
        assert "ops-hook" in rows[0] and "pending" in rows[0] and "connection refused" in rows[0]
        detail = _text(app, "#nt-detail")
        assert "attempt 1" in detail and "HTTP 503" in detail and "attempt 2" in detail
        app.screen.query_one("#nt-table").focus()
        await pilot.press("j")
        detail = _text(app, "#nt-detail")
        assert "oncall-email" in detail and "ok" in detail


async def test_sources_show_health_and_rejected_lines(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        rows = _cells(app.screen.query_one("#src-table", DataTable))
        assert len(rows) == 3 and "down" in rows[1] and "up" in rows[0]
        app.screen.query_one("#src-table").focus()
        await pilot.press("j")
        assert "connection refused" in _text(app, "#src-detail")
        await pilot.press("j")
        detail = _text(app, "#src-detail")
        assert "garbage line" in detail and '{"pred": 1, "label": ' in detail and "bad_json: 2" in detail


async def test_help_theme_pause_refresh_quit(app: MlwatchApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("t")
        assert app.theme == "textual-light"
        await pilot.press("t")
        assert app.theme == "textual-dark"
        await pilot.press("p")
        assert app.paused
        await pilot.press("R")
        await settle(pilot)
        assert app.paused
        await pilot.press("p")
        assert not app.paused
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_auto_refresh_reloads_until_paused(data: ReadSide) -> None:
    app = MlwatchApp(data, refresh_s=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        calls = []
        screen = app.screen
        original = screen.collect  # type: ignore[attr-defined]

        def counting() -> Any:
            calls.append(1)
            return original()

        screen.collect = counting  # type: ignore[attr-defined]
        await pilot.pause(0.7)
        assert calls
        app.action_pause()
        await pilot.pause(0.3)
        n = len(calls)
        await pilot.pause(0.7)
        assert len(calls) <= n + 1  # the one reload the key itself does
        assert "PAUSED" in _text(app, "#status")


async def test_an_error_is_shown_not_swallowed(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("colon", *"sum(", "enter")
        await settle(pilot)
        assert "error" in _text(app, "#status")


async def test_mouse_click_selects_a_row(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#src-table", DataTable)
        await pilot.click("#src-table", offset=(5, 3))
        await pilot.pause()
        assert table.cursor_row == 2


async def test_command_palette_switches_screens_and_explores(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to sources")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SourcesScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*'explore ai_model_accuracy{model="churn')
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ExplorerScreen)
        assert app.screen.expr == 'ai_model_accuracy{model="churn"}'


async def test_i_toggles_internal_series(app: MlwatchApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = cast(OverviewScreen, app.screen)
        assert not screen.show_internal
        await pilot.press("i")
        await settle(pilot)
        assert screen.show_internal
        assert "i hides internal" in _text(app, "#ov-series-title")


async def test_page_and_sideways_keys(app: MlwatchApp) -> None:
    """ctrl+d/ctrl+u page the cursor; h/l scroll a table wider than an 80x24 terminal."""
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#ov-series", DataTable)
        table.focus()
        await pilot.press("ctrl+d")
        assert table.cursor_row == table.row_count - 1  # a page is more than the seeded rows
        await pilot.press("ctrl+u")
        assert table.cursor_row == 0
        assert table.virtual_size.width > table.scrollable_content_region.width  # wider than the screen
        await pilot.press("l", "l")
        await settle(pilot)
        assert table.scroll_x > 0
        await pilot.press("h", "h")
        await settle(pilot)
        assert table.scroll_x == 0
