"""Chart data: times, drawdown, indicator overlays from specs, trade markers, paper equity."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from flask import Flask
from flask.testing import FlaskClient

from falcon import indicators as ind
from falcon.config import load_settings
from falcon.db.models import BacktestTrade, PaperAccount
from falcon.strategy.library import builtin_document
from falcon.web import charts, serialize
from falcon.web.equity import _rebuild
from falcon.web.queries import account_summaries, accounts_with_positions

from .conftest import SQLITE_ONLY, AuthActions, csrf, sessions_of
from .factories import (
    gen_account,
    gen_backtest,
    gen_fill,
    gen_order,
    gen_position,
    gen_strategy,
)


def test_times_are_new_york_dates_or_new_york_wall_clock() -> None:
    late = datetime(2024, 3, 1, 2, 30, tzinfo=UTC)  # 21:30 on Feb 29 in New York
    assert charts.chart_time(late, intraday=False) == "2024-02-29"
    summer = datetime(2024, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 EDT
    assert charts.chart_time(summer, intraday=True) == int(
        datetime(2024, 7, 1, 9, 30, tzinfo=UTC).timestamp()
    )


def test_drawdown_is_percent_below_the_running_peak() -> None:
    pairs = [(date(2024, 1, d), v) for d, v in ((2, 100.0), (3, 120.0), (4, 90.0), (5, 130.0))]
    assert [round(v, 6) for _, v in charts.drawdown(pairs)] == [0.0, 0.0, -25.0, 0.0]


def test_line_drops_repeated_times_and_non_finite_values() -> None:
    t = datetime(2024, 1, 2, 5, tzinfo=UTC)
    series = charts.line("x", [(t, 1.0), (t, 2.0), (t, float("nan"))], intraday=False,
                         color="#000")
    assert series["data"] == [{"time": "2024-01-02", "value": 2.0}]


def test_overlays_come_from_the_rules_with_their_parameters() -> None:
    spec = builtin_document("sma_cross")
    assert charts.overlay_calls(spec, {"fast": 5}) == [
        ("sma", "close", [5.0]), ("sma", "close", [20.0])
    ]
    # A resolved document (as the backtest store keeps it) has "value" beside each default.
    resolved = spec | {"params": {"fast": {"default": 10, "value": 7},
                                  "slow": {"default": 20, "value": 30}}}
    assert charts.overlay_calls(resolved) == [("sma", "close", [7.0]), ("sma", "close", [30.0])]
    mixed = {"entry": {"all": ["close > ema(close, 50)", "rsi(close, 14) < 30",
                                {"left": "bollinger(close, 20, 2.5).lower", "op": ">",
                                 "right": "low"}]},
             "exit": "sma(volume, 20) > 1"}
    assert charts.overlay_calls(mixed) == [("ema", "close", [50.0]),
                                           ("bollinger", "close", [20.0, 2.5])]
    assert charts.overlay_calls({"entry": "this is not ) an expression"}) == []
    assert charts.overlay_calls(None) == []


def test_overlay_lines_are_falcon_indicators() -> None:
    ts = pl.datetime_range(datetime(2024, 1, 1, 5, tzinfo=UTC), datetime(2024, 3, 1, 5,
                           tzinfo=UTC), "1d", eager=True).dt.cast_time_unit("ns")
    close = [100 + (i % 7) - i * 0.1 for i in range(len(ts))]
    frame = pl.DataFrame({"ts": ts, "open": close, "high": close, "low": close, "close": close})
    lines = charts.overlays(frame, [("sma", "close", [5.0]), ("bollinger", "close", [10.0])],
                            intraday=False)
    assert [s["name"] for s in lines] == [
        "sma(close, 5)", "bollinger(close, 10, 2).upper", "bollinger(close, 10, 2).middle",
        "bollinger(close, 10, 2).lower",
    ]
    expected = frame.select(ind.sma("close", 5)).to_series().drop_nulls().to_list()
    assert [p["value"] for p in lines[0]["data"]] == [round(v, 6) for v in expected]
    assert len(lines[1]["data"]) == len(ts) - 9  # TA-Lib: first value on bar n-1
    assert lines[1]["color"] == lines[3]["color"] != lines[0]["color"]


def test_markers_show_entries_below_and_exits_above_in_time_order() -> None:
    def trade(ticker: str, day: int, side: str = "long", exit_day: int | None = None) -> Any:
        return BacktestTrade(
            ticker=ticker, side=side, qty=5, entry_ts=datetime(2024, 1, day, 5, tzinfo=UTC),
            entry_price=10.0, exit_ts=datetime(2024, 1, exit_day, 5, tzinfo=UTC)
            if exit_day else None, exit_price=11.0 if exit_day else None,
            exit_reason="stop_loss" if exit_day else None,
        )

    markers = charts.trade_markers(
        [trade("AAPL", 10, exit_day=12), trade("MSFT", 3), trade("AAPL", 2, "short", 4)],
        "AAPL", intraday=False,
    )
    assert [(m["time"], m["position"], m["text"]) for m in markers] == [
        ("2024-01-02", "aboveBar", "Short"),
        ("2024-01-04", "belowBar", "Cover (stop_loss)"),
        ("2024-01-10", "belowBar", "Buy"),
        ("2024-01-12", "aboveBar", "Sell (stop_loss)"),
    ]


def test_account_summaries_agree_with_loading_the_positions(app: Flask) -> None:
    with sessions_of(app).begin() as s:
        main = gen_account(s)
        gen_account(s, name="empty")
        gen_position(s, main, ticker="AAPL", qty=10, avg_cost=Decimal("180.123456"))
        gen_position(s, main, ticker="MSFT", qty=-3, avg_cost=Decimal("410.5"))
        gen_position(s, main, ticker="NVDA", qty=0, avg_cost=Decimal("99"))
    with sessions_of(app)() as s:
        loaded = [serialize.account(a, p) for a, p in accounts_with_positions(s)]
        assert account_summaries(s) == loaded
        assert loaded[0]["open_positions"] == 2


@SQLITE_ONLY
def test_paper_equity_replays_fills_and_marks_at_the_last_price(
    app: Flask, tmp_path: Path
) -> None:
    settings = load_settings({"home": str(tmp_path / "empty-home")}, environ={},
                             config_file=_empty(tmp_path))
    with sessions_of(app).begin() as s:
        account = gen_account(s, starting_cash=Decimal(1000), cash=Decimal(1000))
        buy = gen_order(s, account, n=1, qty=10)
        gen_fill(s, buy, price=50.0, fee=Decimal("1"), ts=datetime(2024, 3, 1, 15, tzinfo=UTC))
        sell = gen_order(s, account, n=2, side="sell", qty=4)
        gen_fill(s, sell, price=60.0, fee=Decimal("1"), ts=datetime(2024, 3, 4, 15, tzinfo=UTC))
    with sessions_of(app)() as s:
        acc = s.get(PaperAccount, account.id)
        assert acc is not None
        history = _rebuild(s, settings, acc, None)  # no store: marks are the fill prices
    # Day 1: 1000 - 500 - 1 cash + 10 * 50 held; day 2: + 240 - 1 cash, 6 * 60 held.
    assert history.points == [(date(2024, 3, 1), 999.0), (date(2024, 3, 4), 1098.0)]
    assert history.fills == 2


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "falcon.toml"
    path.write_text("")
    return path


@pytest.mark.parametrize("precision", [0, None])
def test_money_lines_are_rounded_to_the_cent(precision: int | None) -> None:
    series = charts.line("x", [(date(2024, 1, 2), 1.23456789)], intraday=False, color="#000",
                         precision=precision)
    assert series["data"][0]["value"] == (1.23 if precision == 0 else 1.234568)


@SQLITE_ONLY
def test_overview_falls_back_to_the_latest_backtest(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "No equity history yet" in page
    with sessions_of(app).begin() as s:
        gen_backtest(s, gen_strategy(s))
    page = client.get("/").get_data(as_text=True)
    assert "No paper trading history yet: backtest #1" in page
    assert 'id="equity-chart-data"' in page and "Strategy equity" in page
    assert "vendor/lightweight-charts/lightweight-charts.standalone.production.js" in page


@SQLITE_ONLY
def test_a_queued_backtest_is_followed_on_the_strategy_page(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    with sessions_of(app).begin() as s:
        gen_strategy(s)
    form = {"csrf_token": csrf(client), "symbols": "AAPL", "start": "2016-01-04", "end": ""}
    response = client.post("/strategies/1/backtest", data=form)
    assert response.headers["Location"].endswith("/strategies/1?job=1")
    page = client.get("/strategies/1?job=1").get_data(as_text=True)
    assert 'data-job-url="/api/v1/jobs/1"' in page and "queued" in page
    assert "static/charts.js" in page
