"""Storing and reading backtest runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.backtest import store
from falcon.backtest.optimize import optimize_spec
from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import Outcome, backtest_spec
from falcon.backtest.walkforward import walkforward_spec
from falcon.config import Settings, load_settings
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade
from falcon.errors import NotFound
from falcon.strategy import builtin_document, builtin_spec

from .sample_home import sample_home

CONFIG = BacktestConfig(cash=10_000, commission=0.001)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_home(tmp_path_factory)


@pytest.fixture
def market(home: Path) -> Settings:
    return load_settings({"home": str(home)})


@pytest.fixture
def outcome(market: Settings) -> Outcome:
    # A long-short strategy over two tickers ends with positions open: both kinds of trade rows.
    spec = builtin_spec("sma_cross", {"fast": 5}, direction="long_short")
    return backtest_spec(market, spec, symbols=["AAPL", "NVDA"], start=date(2016, 1, 4),
                         end=date(2016, 12, 30), config=CONFIG)


def test_round_trip(sessions: sessionmaker[Session], outcome: Outcome) -> None:
    result = outcome.result
    assert result.trades.height > 0
    with sessions.begin() as s:
        run_id = store.save_outcome(s, outcome, job_id=41)
    with sessions() as s:
        trades = store.load_trades(s, run_id)
        closed = trades.filter(pl.col("exit_ts").is_not_null())
        expected = result.trades.with_columns(pl.col("entry_ts", "exit_ts").dt.cast_time_unit("us"))
        assert_frame_equal(closed, expected, check_dtypes=False)
        assert trades.height == result.trades.height + result.open_trades.height
        equity = store.load_equity(s, run_id)
        assert_frame_equal(equity, result.equity.with_columns(pl.col("ts").dt.cast_time_unit("us")))
        run = store.get_run(s, run_id)
        assert store.run_kind(run) == "backtest" and run.metrics is not None
        assert run.metrics["bars"] == equity.height and run.metrics["job_id"] == 41
        assert run.metrics["warmup_from"] == outcome.window.warmup_from.isoformat()  # type: ignore[union-attr]
        assert run.spec["direction"] == "long_short" and run.params == {"fast": 5, "slow": 20}
        assert store.find_by_job(s, 41, "backtest") is not None
        assert store.find_by_job(s, 41, "optimize") is None
        assert store.find_by_job(s, 42, "backtest") is None
        detail = store.run_detail(s, run_id)
        assert "trade_extras" not in detail["metrics"] and len(detail["trades"]) == trades.height
        summary = store.run_summary(run)
        assert summary["sharpe"] == result.metrics["sharpe"]
    with sessions.begin() as s:
        store.delete_run(s, run_id)
    with sessions() as s:
        for model in (BacktestRun, BacktestTrade, BacktestEquity):
            assert s.scalar(select(func.count()).select_from(model)) == 0
        with pytest.raises(NotFound):
            store.get_run(s, run_id)


def test_search_and_walkforward_rows(sessions: sessionmaker[Session], market: Settings) -> None:
    doc = builtin_document("sma_cross")
    grid: dict[str, list[float]] = {"fast": [5, 10], "slow": [20, 30]}
    search = optimize_spec(market, doc, symbols=["AAPL"], grid=grid, start=date(2016, 1, 4),
                           end=date(2016, 12, 30), config=CONFIG, jobs=1)
    wf = walkforward_spec(market, doc, symbols=["AAPL"], grid=grid, start=date(2015, 1, 2),
                          end=date(2016, 12, 30), train=250, test=100, config=CONFIG, jobs=1)
    with sessions.begin() as s:
        opt_id = store.save_search(s, search, document=doc, strategy_name="sma_cross",
                                   config={"cash": 10_000})
        wf_id = store.save_walkforward(s, wf, document=doc, strategy_name="sma_cross",
                                       config={"cash": 10_000})
    assert search.best is not None
    with sessions() as s:
        opt = store.get_run(s, opt_id)
        assert store.run_kind(opt) == "optimize" and opt.params == search.best.params
        assert store.run_summary(opt)["sharpe"] == search.best.metrics["sharpe"]  # type: ignore[index]
        parent = store.get_run(s, wf_id)
        folds = (parent.metrics or {})["folds"]
        assert len(folds) == len(wf.folds) == 2
        children = store.list_runs(s, kind="walkforward_oos")
        assert sorted(r.id for r in children) == sorted(f["run_id"] for f in folds)
        assert [r.id for r in store.list_runs(s, kind="walkforward")] == [wf_id]
        assert [r.id for r in store.list_runs(s, limit=2)] == sorted(
            [r.id for r in children], reverse=True)[:2]
    with sessions.begin() as s:
        store.delete_run(s, wf_id)
    with sessions() as s:
        assert [r.id for r in store.list_runs(s)] == [opt_id]
