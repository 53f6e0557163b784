"""``falcon backtest`` end to end on the bundled sample: JSON, stored rows, CSV, errors."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path
from typing import Any

import click
import polars as pl
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from falcon.backtest import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.calendar import trading_days
from falcon.cli import main
from falcon.config import load_settings
from falcon.data.reader import read_bars
from falcon.db.engine import make_engine, session_factory
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade
from falcon.strategy import builtin_names, builtin_spec, compile_signals

from .sample_home import sample_home

FIELDS = ("final_equity", "return_pct", "cagr_pct", "max_drawdown_pct", "sharpe", "sortino",
          "calmar", "trades", "win_rate_pct", "profit_factor", "expectancy", "exposure_pct",
          "avg_trade_pct", "buy_and_hold_return_pct", "run_id")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_home(tmp_path_factory)


def _invoke(runner: CliRunner, home: Path, db_url: str | None, *args: str) -> Any:
    base = ["--home", str(home)]
    if db_url:
        base += ["--database-url", db_url]
    return runner.invoke(main, [*base, *args], catch_exceptions=False)


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_run_json_agrees_with_stored_rows_and_csv(home: Path, db_url: str, runner: CliRunner,
                                                  tmp_path: Path) -> None:
    trades_csv, equity_csv = tmp_path / "trades.csv", tmp_path / "equity.csv"
    out = _json(_invoke(runner, home, db_url, "backtest", "run", "--strategy", "sma_cross",
                        "--param", "fast=5", "--symbols", "AAPL,MSFT", "--start", "2016-01-04",
                        "--end", "2017-12-29", "--cash", "10000", "--commission", "0.002",
                        "--json", "--trades-csv", str(trades_csv), "--equity-csv",
                        str(equity_csv)))
    assert all(key in out for key in FIELDS)
    assert (out["symbols"], out["params"]) == (["AAPL", "MSFT"], {"fast": 5, "slow": 20})
    assert (out["start"], out["end"], out["first_bar"]) == ("2016-01-04", "2017-12-29",
                                                            "2016-01-04")
    assert out["warmup_bars"] == 20 and out["warmup_from"] < "2016-01-04"
    assert out["final_equity"] == pytest.approx(10_000 * (1 + out["return_pct"] / 100))

    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        run = s.get(BacktestRun, out["run_id"])
        assert run is not None and run.status == "done"
        assert (run.strategy_name, run.params, run.symbols) == ("sma_cross",
                                                                 {"fast": 5, "slow": 20},
                                                                 ["AAPL", "MSFT"])
        assert (run.start, run.end) == (date(2016, 1, 4), date(2017, 12, 29))
        assert run.spec["entry"] == "sma(close, 5) crosses_above sma(close, 20)"
        assert run.metrics is not None
        assert run.metrics["kind"] == "backtest" and run.metrics["config"]["commission"] == 0.002
        for key in FIELDS[:-1]:
            assert run.metrics[key] == out[key]
        closed = s.scalar(select(func.count()).select_from(BacktestTrade).where(
            BacktestTrade.run_id == run.id, BacktestTrade.exit_ts.is_not(None)))
        every = s.scalar(select(func.count()).select_from(BacktestTrade)
                         .where(BacktestTrade.run_id == run.id))
        points = s.scalar(select(func.count()).select_from(BacktestEquity)
                          .where(BacktestEquity.run_id == run.id))
    engine.dispose()
    assert closed == out["trades"] > 0 and every == closed + out["open_trades"]
    sessions = trading_days(date(2016, 1, 4), date(2017, 12, 29))
    assert points == out["bars"] == len(sessions)  # one point per session: no gaps in sample
    with equity_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == points and rows[0]["ts"].startswith("2016-01-04T05:00:00")
    assert float(rows[-1]["equity"]) == pytest.approx(out["final_equity"])
    with trades_csv.open() as f:
        trades = list(csv.DictReader(f))
    assert len(trades) == every
    assert sum(float(t["pnl"]) for t in trades if t["exit_ts"]) == pytest.approx(
        out["expectancy"] * out["trades"])

    shown = _json(_invoke(runner, home, db_url, "backtest", "show", str(out["run_id"]), "--json"))
    assert shown["metrics"]["sharpe"] == out["sharpe"] and len(shown["trades"]) == every
    assert shown["equity_points"] == points and shown["trades"][0]["bars_held"] >= 0
    listed = _json(_invoke(runner, home, db_url, "backtest", "list", "--json"))
    assert [r["id"] for r in listed] == [out["run_id"]] and listed[0]["kind"] == "backtest"
    text = _invoke(runner, home, db_url, "backtest", "show", str(out["run_id"]))
    assert text.exit_code == 0 and "sharpe" in text.output


def test_warmup_makes_the_first_session_tradeable(home: Path, runner: CliRunner,
                                                  tmp_path: Path) -> None:
    """With warm-up, a run from --start equals signals computed on all history, cut at start
    (SMAs have a finite window, so their values do not depend on where the data begins)."""
    out = _json(_invoke(runner, home, f"sqlite:///{tmp_path / 'x.db'}", "backtest", "run",
                        "-s", "sma_cross", "--symbols", "AAPL,MSFT", "--start", "2016-01-04",
                        "--end", "2016-12-30", "--cash", "10000", "--no-store", "--json"))
    settings = load_settings({"home": str(home)})
    bars = read_bars(settings, "day", ["AAPL", "MSFT"], None, date(2016, 12, 30)).collect()
    spec = builtin_spec("sma_cross")
    signals = compile_signals(spec, bars).filter(
        pl.col("ts") >= pl.datetime(2016, 1, 4, time_zone="UTC")).collect()
    direct = run_backtest(signals, risk=spec.risk, config=BacktestConfig(cash=10_000))
    assert out["run_id"] is None
    assert out["trades"] == direct.trades.height
    assert out["final_equity"] == pytest.approx(direct.final_equity, rel=1e-12)


def test_spec_file_universe_and_no_store(home: Path, db_url: str, runner: CliRunner,
                                         tmp_path: Path) -> None:
    from falcon.strategy import builtin_document

    doc = builtin_document("rsi_reversion") | {"universe": {"tickers": ["NVDA", "AMZN"]}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    out = _json(_invoke(runner, home, db_url, "backtest", "run", str(path), "--start",
                        "2017-01-03", "--end", "2018-06-29", "--no-store", "--json"))
    assert out["symbols"] == ["AMZN", "NVDA"] and out["run_id"] is None
    listed = _json(_invoke(runner, home, db_url, "backtest", "list", "--json"))
    assert listed == []


def test_clear_errors(home: Path, runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = _invoke(runner, home, url, "backtest", "run", "-s", "nope", "--symbols", "AAPL")
    assert result.exit_code == 66
    assert all(name in result.output for name in builtin_names())
    result = _invoke(runner, home, url, "backtest", "run", "-s", "sma_cross", "--symbols",
                     "AAPL,ZZZZ")
    assert result.exit_code == 66 and "unknown symbol(s) ZZZZ" in result.output
    result = _invoke(runner, home, url, "backtest", "run", "-s", "sma_cross", "--symbols",
                     "AAPL", "--start", "2018-01-02", "--end", "2017-01-03")
    assert result.exit_code == 65 and "empty date range" in result.output
    result = _invoke(runner, home, url, "backtest", "run", "-s", "sma_cross", "--symbols",
                     "AAPL", "--start", "2027-01-04")
    assert result.exit_code == 65 and "no day bars for AAPL" in result.output
    result = _invoke(runner, home, url, "backtest", "run", "--symbols", "AAPL")
    assert result.exit_code == 2 and "SPEC_FILE or --strategy" in result.output
    result = _invoke(runner, home, url, "backtest", "run", "-s", "sma_cross")
    assert result.exit_code == 65 and "no symbols" in result.output
    result = _invoke(runner, home, url, "backtest", "show", "99")
    assert result.exit_code == 66 and "backtest run 99 does not exist" in result.output


def test_every_command_has_an_example(runner: CliRunner) -> None:
    from falcon.cli.backtest import cli

    assert isinstance(cli, click.Group)
    assert "Example" in (cli.help or "")
    for name, command in cli.commands.items():
        result = runner.invoke(main, ["backtest", name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name
        assert "Example" in (command.help or ""), name


@pytest.mark.parametrize("name", builtin_names())
def test_lookahead_clean_for_builtins(home: Path, runner: CliRunner, name: str) -> None:
    minute = builtin_spec(name).timeframe == "minute"
    symbols = "AAPL" if minute else "AAPL,MSFT,NVDA"
    dates = [] if minute else ["--start", "2016-01-04", "--end", "2017-06-30"]
    out = _json(_invoke(runner, home, None, "backtest", "lookahead", "-s", name, "--symbols",
                        symbols, *dates, "--cut-points", "8", "--json"))
    assert out["clean"] is True and out["differences"] == 0 and out["bars"] > 100


def test_lookahead_exits_nonzero_when_signals_peek(home: Path, runner: CliRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec language cannot peek, so a peeking signal function stands in for a compiler
    bug: the command must report it and fail."""
    import falcon.strategy as strategy

    real = strategy.lookahead_check

    def peeking(spec: Any, bars: Any, cut_points: int = 20) -> list[dict[str, Any]]:
        def signals(frame: pl.DataFrame) -> pl.LazyFrame:
            tomorrow = pl.col("close").shift(-1).over("ticker")
            return compile_signals(spec, frame).with_columns(
                entry_long=(tomorrow > pl.col("close")).fill_null(False))
        return real(signals, bars, cut_points)

    monkeypatch.setattr(strategy, "lookahead_check", peeking)
    result = _invoke(runner, home, None, "backtest", "lookahead", "-s", "sma_cross",
                     "--symbols", "AAPL", "--start", "2016-01-04", "--end", "2016-12-30",
                     "--cut-points", "5", "--json")
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out["clean"] is False and out["differences"] >= 1
    assert out["examples"][0]["column"] == "entry_long"


def test_optimize_and_walkforward_are_stored(home: Path, db_url: str, runner: CliRunner) -> None:
    out = _json(_invoke(runner, home, db_url, "backtest", "optimize", "-s", "sma_cross",
                        "--symbols", "AAPL", "--start", "2016-01-04", "--end", "2017-12-29",
                        "--grid", "fast=5,10", "--grid", "slow=10,20", "--constraint",
                        "fast < slow", "--objective", "return_pct", "--jobs", "1", "--json"))
    assert (out["candidates"], out["ran"], out["skipped"]) == (4, 3, 1)
    assert out["best"]["return_pct"] == max(r["metrics"]["return_pct"] for r in out["results"])
    wf = _json(_invoke(runner, home, db_url, "backtest", "walkforward", "-s", "sma_cross",
                       "--symbols", "AAPL", "--start", "2015-01-02", "--end", "2017-12-29",
                       "--grid", "fast=5,10", "--grid", "slow=20,30", "--train", "250",
                       "--test", "120", "--jobs", "1", "--json"))
    assert len(wf["folds"]) == 4 and all(f["run_id"] for f in wf["folds"])
    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        runs = {r.id: r for r in s.scalars(select(BacktestRun))}
        assert runs[out["run_id"]].params == out["best_params"]
        assert runs[wf["run_id"]].metrics["kind"] == "walkforward"  # type: ignore[index]
        for fold in wf["folds"]:
            child = runs[fold["run_id"]]
            assert child.metrics is not None and child.metrics["parent_run_id"] == wf["run_id"]
            assert child.metrics["sharpe"] == fold["out_of_sample"]["sharpe"]
            assert (child.start, child.end) == (date.fromisoformat(fold["test_start"]),
                                                date.fromisoformat(fold["test_end"]))
    engine.dispose()
    listed = _json(_invoke(runner, home, db_url, "backtest", "list", "--kind", "optimize",
                           "--json"))
    assert [r["id"] for r in listed] == [out["run_id"]]
    assert listed[0]["return_pct"] == out["best"]["return_pct"]
