"""Replay equals backtest: sma_cross on a year of real AAPL day bars, both engines, same trades.

The backtester runs over ``compile_signals`` of the whole year; ``falcon paper replay`` feeds the
same bars one at a time through the trader (rolling windows, pending entries sized at the next
open, the order book, the database). Same commission, slippage and all-in sizing; the paper
account's risk limits are opened up so that they do not cut the all-in size.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.cli import main
from falcon.config import load_settings
from falcon.data.reader import read_bars
from falcon.db.engine import make_engine, session_factory
from falcon.db.models import Fill, PaperAccount
from falcon.strategy import builtin_spec, compile_signals

COMMISSION, SLIPPAGE = 0.001, 5.0
START, END = date(2019, 1, 2), date(2019, 12, 31)


def _backtest_trades(home: Path, ticker: str, params: dict[str, float]) -> list[tuple]:  # type: ignore[type-arg]
    settings = load_settings({"home": str(home)}, environ={})
    bars = read_bars(settings, kind="day", tickers=[ticker], start=START, end=END).collect()
    spec = builtin_spec("sma_cross", params or None)
    result = run_backtest(compile_signals(spec, bars), risk=spec.risk,
                          config=BacktestConfig(cash=10_000, commission=COMMISSION,
                                                slippage_bps=SLIPPAGE))
    trades = result.trades.sort("entry_ts")
    out = []
    for row in trades.iter_rows(named=True):
        out.append(("buy", row["qty"], row["entry_ts"], row["entry_price"]))
        out.append(("sell", row["qty"], row["exit_ts"], row["exit_price"]))
    for row in result.open_trades.iter_rows(named=True):
        out.append(("buy", row["qty"], row["entry_ts"], row["entry_price"]))
    return out


@pytest.mark.parametrize(("ticker", "params"), [
    ("AAPL", {}),
    ("NVDA", {"fast": 5, "slow": 12}),
])
def test_paper_replay_makes_the_backtests_trades(
    sample_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
    ticker: str, params: dict[str, float],
) -> None:
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    monkeypatch.setenv("FALCON_HOME", str(sample_home))
    monkeypatch.setenv("FALCON_DATABASE_URL", url)
    monkeypatch.setenv("FALCON_TRADING__COMMISSION", str(COMMISSION))
    monkeypatch.setenv("FALCON_TRADING__SLIPPAGE_BPS", str(SLIPPAGE))
    result = runner.invoke(main, [
        "-q", "paper", "replay", "--start", str(START), "--end", str(END),
        "--strategy", "sma_cross", "--tickers", ticker, "--account", "bt", "--cash", "10000",
        "--max-position-pct", "1", "--max-sector-pct", "1", "--max-strategy-pct", "1",
        "--daily-loss-pct", "1", "--max-drawdown-pct", "1", "--no-picks",
        *[f"--param={k}={v}" for k, v in params.items()],
    ])
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    with session_factory(engine)() as s:
        account = s.scalar(select(PaperAccount).where(PaperAccount.name == "bt"))
        assert account is not None
        fills = [
            (f.side, int(f.qty), f.ts, f.price)
            for f in s.scalars(select(Fill).where(Fill.account_id == account.id).order_by(Fill.id))
        ]
    engine.dispose()
    expected = _backtest_trades(sample_home, ticker, params)
    assert len(fills) >= 3, "a year of sma_cross should trade"
    assert [(s, q, t) for s, q, t, _ in fills] == [
        (s, q, t.replace(tzinfo=fills[0][2].tzinfo) if t.tzinfo is None else t)
        for s, q, t, _ in expected]
    assert [p for *_, p in fills] == pytest.approx([p for *_, p in expected], rel=1e-12)
