"""Exits of positions: by the strategy that opened them only, on an exit signal or on max_bars.

The trader looks only at positions that can lead to a decision on a bar (their own strategy's
exit signal, or every bar when the strategy has ``max_bars``): these tests fail if a position
that should be looked at is skipped, or if another strategy's signal closes it.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import polars as pl
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig, BacktestResult
from falcon.db.engine import transaction
from falcon.db.models import Fill, Position
from falcon.execution.fills import CostModel
from falcon.paper.persist import create_account
from falcon.paper.signals import StrategySlot
from falcon.strategy import compile_signals
from tests.paper.helpers import bar, bars_frame, days, make_account, slot, trader

START = date(2024, 3, 4)


def _fills(sessions: sessionmaker[Session]) -> list[tuple[str, str, int, int]]:
    with sessions() as s:
        rows = s.scalars(select(Fill).order_by(Fill.id)).all()
        stamps = {ts: i for i, ts in enumerate(days(START, 40))}
        return [(f.ticker, f.side, stamps[_utc(f.ts)], int(f.qty)) for f in rows]


@pytest.mark.parametrize("max_bars", [1, 3, 7])
def test_max_bars_exits_as_the_backtester_does(
    sessions: sessionmaker[Session], max_bars: int,
) -> None:
    make_account(sessions)
    # Enters when the close rises, never an exit signal: only max_bars closes the position.
    sl = slot(entry="close > sma(close, 2)", exit_="close < 0", max_bars=max_bars)
    result, index = _replay_and_backtest(sessions, sl)
    expected = _expected(result, index)
    assert len(expected) >= 6, "the path should make several trades"
    assert sorted(_fills(sessions), key=lambda f: (f[2], f[0])) == expected


def _replay_and_backtest(
    sessions: sessionmaker[Session], sl: StrategySlot, tickers: tuple[str, ...] = ("AAA",),
) -> tuple[BacktestResult, dict[datetime, int]]:
    """Day bars along sine waves (one phase per ticker) through a trader with ``sl`` (no
    costs), and the backtester's result over the same bars; with each bar time's index."""
    t = trader(sessions, [sl], costs=CostModel(commission=0.0, slippage_bps=0.0))
    stamps = days(START, 40)
    batches = [[bar(tk, ts, 10 + 3 * math.sin(i / 2.5 + k)) for k, tk in enumerate(tickers)]
               for i, ts in enumerate(stamps)]
    for batch in batches:
        t.process(batch)
    frame = bars_frame(batches)
    result = run_backtest(compile_signals(sl.spec, frame), risk=sl.spec.risk,
                          config=BacktestConfig(cash=10_000.0))
    return result, {ts: i for i, ts in enumerate(stamps)}


def _expected(result: BacktestResult, index: dict[datetime, int]
              ) -> list[tuple[str, str, int, int]]:
    """The backtest's trades as the paper account's fills: (ticker, side, bar, qty)."""
    out: list[tuple[str, str, int, int]] = []
    for row in result.trades.iter_rows(named=True):
        long = row["side"] == "long"
        out += [(row["ticker"], "buy" if long else "sell", index[_utc(row["entry_ts"])],
                 row["qty"]),
                (row["ticker"], "sell" if long else "buy", index[_utc(row["exit_ts"])],
                 row["qty"])]
    for row in result.open_trades.iter_rows(named=True):
        out.append((row["ticker"], "buy" if row["side"] == "long" else "sell",
                    index[_utc(row["entry_ts"])], row["qty"]))
    return sorted(out, key=lambda f: (f[2], f[0]))


def test_strategy_max_positions_as_the_backtester_counts_them(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions)
    # Six tickers whose entries come together, at most three held: which entries are refused,
    # and when a freed place is taken again, as in the backtest (an entry filled at this open
    # counts once, as the position it is).
    sl = slot(entry="close > sma(close, 2)", exit_="close < sma(close, 2)", max_positions=3,
              sizing={"kind": "fraction", "value": 0.1})
    result, index = _replay_and_backtest(sessions, sl, ("A", "B", "C", "D", "E", "F"))
    assert result.rejections.filter(pl.col("reason") == "risk_limit").height >= 3
    assert sorted(_fills(sessions), key=lambda f: (f[2], f[0])) == _expected(result, index)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def test_a_position_is_exited_by_its_own_strategy_only(sessions: sessionmaker[Session]) -> None:
    make_account(sessions)
    # "mine" enters on every bar and exits when the close falls under 10; "other" only ever
    # has exit signals for AAA (never an entry), and must not close mine's position.
    mine = slot("mine", entry="close >= 10", exit_="close < 10")
    other = slot("other", entry="close < 0", exit_="close > 0")
    t = trader(sessions, [other, mine])
    closes = [11.0, 12.0, 13.0, 14.0, 9.0, 9.0]
    for ts, c in zip(days(START, len(closes)), closes, strict=True):
        t.process([bar("AAA", ts, c)])
    assert [f[:3] for f in _fills(sessions)] == [("AAA", "buy", 1), ("AAA", "sell", 5)]
    with sessions() as s:
        assert s.scalars(select(Position)).all() == []


def test_a_long_short_flip_trades_as_the_backtester_does(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        create_account(s, "t", 10_000.0, long_only=False)
    # Long above the 3-bar average, short below it: every crossing exits one side and enters
    # the other at the same open (the exit first, so the entry is sized on the freed cash).
    sl = slot(entry="close > sma(close, 3)", exit_="close < sma(close, 3)",
              short_entry="close < sma(close, 3)", short_exit="close > sma(close, 3)",
              direction="long_short")
    result, index = _replay_and_backtest(sessions, sl)
    shorts = result.trades.filter(pl.col("side") == "short").height
    assert result.trades.height >= 4 and shorts >= 2, "the path should flip both ways"
    # A flip's exit and entry share a bar: both sorted by bar and ticker, stably.
    assert sorted(_fills(sessions), key=lambda f: (f[2], f[0])) == _expected(result, index)
