"""Metrics: definitions, and no NaN or infinity when a figure does not exist."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from falcon.backtest.engine import run_backtest
from falcon.backtest.metrics import compute_metrics, daily_returns
from falcon.domain.rules import RiskRules

from .frames import bars

NO_TRADES = pl.DataFrame(schema={"pnl": pl.Float64, "return_pct": pl.Float64})


def curve(
    values: list[float], start: datetime = datetime(2024, 1, 1), step: timedelta = timedelta(days=1)
) -> pl.DataFrame:
    return pl.DataFrame({"ts": [start + i * step for i in range(len(values))], "equity": values})


def test_no_trades_and_flat_equity_give_none_not_nan() -> None:
    m = compute_metrics(equity=curve([100.0] * 5), trades=NO_TRADES, starting_cash=100.0)
    assert m["trades"] == 0
    for key in (
        "win_rate_pct",
        "profit_factor",
        "expectancy",
        "avg_trade_pct",
        "sharpe",
        "sortino",
        "calmar",
    ):
        assert m[key] is None, key
    assert (m["return_pct"], m["max_drawdown_pct"], m["cagr_pct"]) == (0.0, 0.0, 0.0)


def test_a_run_without_signals_has_clean_metrics() -> None:
    result = run_backtest(bars([(100, 101, 99, 100)] * 5), risk=RiskRules())
    values = [v for v in result.metrics.values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in values)
    assert result.metrics["exposure_pct"] == 0.0


def test_trade_statistics() -> None:
    trades = pl.DataFrame(
        {"pnl": [100.0, -50.0, 30.0, -10.0], "return_pct": [10.0, -5.0, 3.0, -1.0]}
    )
    m = compute_metrics(
        equity=curve([100.0, 110.0, 99.0, 120.0]), trades=trades, starting_cash=100.0
    )
    assert m["win_rate_pct"] == 50.0
    assert m["profit_factor"] == pytest.approx(130 / 60)
    assert m["expectancy"] == pytest.approx(17.5)
    assert m["avg_trade_pct"] == pytest.approx(1.75)
    assert m["max_drawdown_pct"] == pytest.approx(10.0)
    only_wins = pl.DataFrame({"pnl": [1.0], "return_pct": [1.0]})
    assert (
        compute_metrics(equity=curve([1.0, 2.0]), trades=only_wins, starting_cash=1.0)[
            "profit_factor"
        ]
        is None
    )


def test_sharpe_sortino_calmar_definitions() -> None:
    values = [100.0, 101.0, 99.0, 102.0, 104.0, 103.0]
    m = compute_metrics(equity=curve(values), trades=NO_TRADES, starting_cash=100.0)
    r = np.diff(values) / values[:-1]
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert m["sortino"] == pytest.approx(
        r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(252)
    )
    years = 5 / 365.25
    assert m["cagr_pct"] == pytest.approx(((103 / 100) ** (1 / years) - 1) * 100)
    assert m["calmar"] == pytest.approx(m["cagr_pct"] / m["max_drawdown_pct"])


def test_minute_equity_is_sampled_at_each_new_york_day_end() -> None:
    # 14:30 UTC is 09:30 in New York; two sessions of 390 minutes, equity ends 100 then 110.
    day1 = [datetime(2024, 3, 4, 14, 30, tzinfo=UTC) + timedelta(minutes=i) for i in range(390)]
    day2 = [datetime(2024, 3, 5, 14, 30, tzinfo=UTC) + timedelta(minutes=i) for i in range(390)]
    equity = pl.DataFrame(
        {"ts": day1 + day2, "equity": np.r_[np.linspace(90, 100, 390), np.linspace(105, 110, 390)]}
    )
    assert daily_returns(equity).tolist() == pytest.approx([0.10])
    # 23:00 New York is already the next day in UTC: it still belongs to its New York day.
    late = pl.DataFrame(
        {
            "ts": [
                datetime(2024, 3, 4, 20, tzinfo=UTC),
                datetime(2024, 3, 5, 3, tzinfo=UTC),
                datetime(2024, 3, 5, 20, tzinfo=UTC),
            ],
            "equity": [100.0, 120.0, 132.0],
        }
    )
    assert daily_returns(late).tolist() == pytest.approx([0.10])
