"""Replay equals backtest, as a property: random strategies over random markets, same fills.

Hypothesis draws a strategy (entry and exit rules over moving averages, RSI and the close;
percent stop loss, take profit and trailing stop; max_bars; max_positions; sizing; long only
or long/short) and a few tickers' day bars (random walks with gaps and wide ranges, so that
stops and targets fire inside bars and at gapped opens). The paper trader replays the bars one
day at a time through a SQLite account; the backtester runs over the same bars. Every fill of
the account must be a fill of the backtest: ticker, side, bar, quantity and price.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import Fill
from falcon.domain.market import Bar
from falcon.execution.fills import CostModel
from falcon.paper.persist import create_account
from falcon.paper.signals import StrategySlot
from falcon.strategy import compile_signals, load_spec

from .helpers import bars_frame, days, trader

START = date(2024, 1, 2)
CASH = 10_000.0
RULES = ["close > sma(close, {n})", "close < sma(close, {n})", "rsi(close, {n}) < 45",
         "rsi(close, {n}) > 55", "sma(close, 2) crosses_above sma(close, {n})",
         "sma(close, 2) crosses_below sma(close, {n})"]


@st.composite
def strategies(draw: st.DrawFn) -> dict[str, Any]:
    def rule() -> str:
        return draw(st.sampled_from(RULES)).format(n=draw(st.integers(3, 6)))

    # Sizes whose positions together stay within the equity, so that the paper account's own
    # sector and strategy caps (at most 100 % of equity; the backtester has none) never bind.
    max_positions, sizing = draw(st.sampled_from([
        (1, {"kind": "all_in"}), (3, {"kind": "all_in"}),
        (1, {"kind": "fraction", "value": 0.6}), (3, {"kind": "fraction", "value": 0.3}),
        (4, {"kind": "shares", "value": 7}), (2, {"kind": "shares", "value": 7})]))
    doc: dict[str, Any] = {
        "name": "prop", "version": "1", "timeframe": "day", "entry": rule(), "exit": rule(),
        "max_positions": max_positions, "sizing": sizing,
    }
    if draw(st.booleans()):
        doc["stop_loss"] = {"percent": draw(st.sampled_from([2, 4, 8]))}
    if draw(st.booleans()):
        doc["take_profit"] = {"percent": draw(st.sampled_from([3, 6, 12]))}
    if draw(st.booleans()):
        doc["trailing_stop"] = {"percent": draw(st.sampled_from([3, 5]))}
    if draw(st.booleans()):
        doc["max_bars"] = draw(st.integers(1, 6))
    if draw(st.booleans()):
        doc["direction"] = "long_short"
        doc["short_entry"], doc["short_exit"] = rule(), rule()
    return doc


@st.composite
def markets(draw: st.DrawFn) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per ticker, one (open, high, low, close) per day: a walk with gaps and wide ranges."""
    n_days = draw(st.integers(15, 35))
    tickers = ["AAA", "BBB", "CCC"][: draw(st.integers(1, 3))]
    step = st.floats(-0.06, 0.06, allow_nan=False)
    # A close moves by 0.2 % at least, or not at all: runs of equal closes, where an average
    # equals the close exactly and only the comparisons at 12 digits (falcon.strategy.snap)
    # keep the two engines' differently rounded rolling sums from deciding the tie apart.
    move = st.one_of(
        st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(0.002, 0.06)).map(
            lambda t: t[0] * t[1]),
        st.just(0.0),
    )
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for tk in tickers:
        price = draw(st.floats(20, 200))
        rows = []
        for _ in range(n_days):
            o = price * (1 + draw(step) / 2)  # a gap from the last close
            c = price * (1 + draw(move))
            wick = draw(st.floats(0, 0.05))
            h, lo = max(o, c) * (1 + wick), min(o, c) * (1 - wick)  # o: the gapped open
            rows.append((round(o, 4), round(h, 4), round(lo, 4), round(c, 4)))
            price = c
        out[tk] = rows
    return out


_TEMPLATE: list[Path] = []


def _migrated(tmp: Path) -> str:
    """A migrated SQLite database in ``tmp`` (copied from one migrated once: an upgrade per
    example would be most of the test's time)."""
    if not _TEMPLATE:
        base = Path(tempfile.mkdtemp(prefix="falcon-prop-")) / "template.db"
        engine = make_engine(f"sqlite:///{base}")
        upgrade(engine)
        engine.dispose()
        _TEMPLATE.append(base)
    target = tmp / "p.db"
    shutil.copyfile(_TEMPLATE[0], target)
    return f"sqlite:///{target}"


def _paper(doc: dict[str, Any], bars: list[list[Bar]], long_only: bool) -> list[tuple]:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(_migrated(Path(tmp)))
        sessions = session_factory(engine)
        with transaction(sessions) as s:
            create_account(s, "t", CASH, long_only=long_only)
        slot = StrategySlot(name="prop", spec=load_spec(doc), margin=3)
        t = trader(sessions, [slot], costs=CostModel(commission=0.001, slippage_bps=5.0))
        for batch in bars:
            t.process(batch)
        with sessions() as s:
            fills = [(f.ticker, f.side, f.ts, int(f.qty), f.price)
                     for f in s.scalars(select(Fill).order_by(Fill.id))]
        engine.dispose()
    return fills


def _backtest(doc: dict[str, Any], bars: list[list[Bar]]) -> list[tuple]:  # type: ignore[type-arg]
    frame = bars_frame(bars)
    spec = load_spec(doc)
    result = run_backtest(compile_signals(spec, frame), risk=spec.risk,
                          config=BacktestConfig(cash=CASH, commission=0.001, slippage_bps=5.0))
    fills = []
    for row in result.trades.iter_rows(named=True):
        long = row["side"] == "long"
        fills.append((row["ticker"], "buy" if long else "sell", _utc(row["entry_ts"]),
                      row["qty"], row["entry_price"]))
        fills.append((row["ticker"], "sell" if long else "buy", _utc(row["exit_ts"]),
                      row["qty"], row["exit_price"]))
    for row in result.open_trades.iter_rows(named=True):
        fills.append((row["ticker"], "buy" if row["side"] == "long" else "sell",
                      _utc(row["entry_ts"]), row["qty"], row["entry_price"]))
    return fills


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _key(fill: tuple) -> tuple:  # type: ignore[type-arg]
    # A bar's fills in any order (a flip's exit and entry, several tickers): compared as sets.
    return (fill[2], fill[0], fill[1], fill[3])


@pytest.mark.slow
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=strategies(), market=markets())
# Flat closes, long/short, all in: the second ledger that writes the rows judged a fill the
# account's own ledger had accepted on other marks, and refused it (the batch failed).
@example(
    doc={'name': 'prop',
         'version': '1',
         'timeframe': 'day',
         'entry': 'close > sma(close, 3)',
         'exit': 'close < sma(close, 3)',
         'max_positions': 3,
         'sizing': {'kind': 'all_in'},
         'stop_loss': {'percent': 2},
         'trailing_stop': {'percent': 3},
         'max_bars': 2,
         'direction': 'long_short',
         'short_entry': 'close > sma(close, 6)',
         'short_exit': 'close < sma(close, 6)'},
    market={'AAA': [(20.0, 20.0, 19.375, 19.375), (19.375, 19.375, 18.7695, 18.7695),
                    (18.7695, 18.7695, 18.183, 18.183), (18.183, 18.183, 18.183, 18.183),
                    (18.183, 18.183, 18.183, 18.183), (18.183, 18.183, 17.6148, 17.6148),
                    (17.6148, 17.6148, 17.0643, 17.0643), (17.0643, 17.0643, 16.531, 16.531),
                    (16.531, 16.531, 16.0144, 16.0144), (16.0144, 16.0144, 15.514, 15.514),
                    (15.514, 15.514, 15.514, 15.514), (15.514, 15.9988, 15.514, 15.9988),
                    (15.9988, 15.9988, 15.9988, 15.9988), (15.9988, 15.9988, 15.4988, 15.4988),
                    (15.4988, 15.4988, 15.0145, 15.0145), (15.0145, 15.0145, 15.0145, 15.0145),
                    (15.0145, 15.0145, 15.0145, 15.0145), (15.0145, 15.0145, 15.0145, 15.0145),
                    (15.0145, 15.0145, 14.5453, 14.5453), (14.5453, 14.5453, 14.0908, 14.0908),
                    (14.0908, 14.0908, 14.0908, 14.0908), (14.0908, 14.0908, 14.0908, 14.0908),
                    (14.0908, 14.0908, 14.0908, 14.0908), (14.0908, 14.0908, 13.6504, 13.6504),
                    (13.6504, 13.6504, 13.6504, 13.6504), (13.6504, 13.6504, 13.2239, 13.2239),
                    (13.2239, 13.2239, 13.2239, 13.2239),
                    (13.2239, 13.2239, 13.2239, 13.2239)],
            'BBB': [(20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 20.0, 20.0),
                    (20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 20.0, 20.0),
                    (20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 19.375, 19.375),
                    (19.375, 19.375, 19.375, 19.375), (19.375, 19.375, 19.375, 19.375),
                    (19.375, 20.2832, 19.375, 20.2832), (20.2832, 20.2832, 20.2832, 20.2832),
                    (20.2832, 20.2832, 20.2832, 20.2832), (20.2832, 20.2832, 19.9663, 19.9663),
                    (19.9663, 19.9663, 19.3423, 19.3423), (19.3423, 19.3423, 18.7379, 18.7379),
                    (18.7379, 18.7379, 18.7379, 18.7379), (18.7379, 18.7379, 18.1523, 18.1523),
                    (18.1523, 18.1523, 17.5851, 17.5851), (17.5851, 17.5851, 17.5851, 17.5851),
                    (17.5851, 17.5851, 17.5851, 17.5851), (17.5851, 17.5851, 17.5851, 17.5851),
                    (17.5851, 17.5851, 17.5851, 17.5851), (17.5851, 17.5851, 17.5851, 17.5851),
                    (17.5851, 17.5851, 17.0355, 17.0355), (17.0355, 17.0355, 16.5032, 16.5032),
                    (16.5032, 16.5032, 16.5032, 16.5032), (16.5032, 16.5032, 16.5032, 16.5032),
                    (16.5032, 16.5032, 15.9874, 15.9874),
                    (15.9874, 15.9874, 15.9874, 15.9874)]},
)
# Long/short, all in: an entry was sized on the room at the opens the bars worked so far had
# marked the short at, not at the previous closes the backtester marks positions at.
@example(
    doc={'name': 'prop',
         'version': '1',
         'timeframe': 'day',
         'entry': 'rsi(close, 3) < 45',
         'exit': 'close < sma(close, 3)',
         'max_positions': 3,
         'sizing': {'kind': 'all_in'},
         'stop_loss': {'percent': 2},
         'trailing_stop': {'percent': 3},
         'max_bars': 2,
         'direction': 'long_short',
         'short_entry': 'close > sma(close, 6)',
         'short_exit': 'close < sma(close, 6)'},
    market={'AAA': [(20.0, 20.0, 19.375, 19.375), (19.904, 19.904, 18.7695, 18.7695),
                    (18.9493, 18.9493, 18.183, 18.183), (18.183, 18.183, 18.183, 18.183),
                    (18.183, 18.183, 18.183, 18.183), (18.183, 18.183, 17.5763, 17.5763),
                    (17.5763, 17.5763, 16.7383, 16.7383), (16.7383, 16.7383, 16.6097, 16.6097),
                    (16.6097, 16.6097, 16.0906, 16.0906), (16.0906, 16.0906, 15.5878, 15.5878),
                    (15.5878, 15.5878, 15.5878, 15.5878), (15.5878, 15.9998, 15.5878, 15.9998),
                    (15.9998, 15.9998, 15.9998, 15.9998), (15.9998, 15.9998, 15.8416, 15.8416),
                    (15.8416, 15.8416, 15.6831, 15.6831), (15.6831, 15.6831, 15.6831, 15.6831),
                    (15.6831, 15.6831, 15.6831, 15.6831), (15.6831, 15.6831, 15.6831, 15.6831),
                    (15.6831, 15.6831, 15.1931, 15.1931), (15.1931, 15.1931, 14.7183, 14.7183),
                    (14.7183, 14.7183, 14.7183, 14.7183), (14.7183, 14.7183, 14.7183, 14.7183),
                    (14.7183, 14.7183, 14.7183, 14.7183), (14.7183, 14.7183, 14.2583, 14.2583),
                    (14.2583, 14.2583, 14.2583, 14.2583), (14.2583, 14.2583, 13.8127, 13.8127),
                    (13.8127, 13.8127, 13.8127, 13.8127),
                    (13.8127, 13.8127, 13.8127, 13.8127)],
            'BBB': [(20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 20.0, 20.0),
                    (20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 20.0, 20.0),
                    (20.0, 20.0, 20.0, 20.0), (20.0, 20.0, 19.375, 19.375),
                    (19.375, 19.375, 19.375, 19.375), (19.375, 19.375, 19.375, 19.375),
                    (19.375, 20.4346, 19.375, 20.4346), (20.4346, 20.4346, 20.4346, 20.4346),
                    (20.4346, 20.4346, 20.4346, 20.4346), (20.4346, 20.4346, 20.1153, 20.1153),
                    (20.4296, 20.4296, 19.4867, 19.4867), (19.4867, 19.4867, 18.8777, 18.8777),
                    (18.8777, 18.8777, 18.8777, 18.8777), (18.8777, 18.8777, 18.2878, 18.2878),
                    (18.2878, 18.2878, 17.7163, 17.7163), (17.7163, 17.7163, 17.7163, 17.7163),
                    (17.7163, 17.7163, 17.7163, 17.7163), (17.7163, 17.7163, 17.7163, 17.7163),
                    (17.7163, 17.7163, 17.7163, 17.7163), (17.7163, 17.7163, 17.7163, 17.7163),
                    (17.7163, 17.7163, 17.1627, 17.1627), (17.1627, 17.1627, 16.6263, 16.6263),
                    (16.6263, 16.6263, 16.6263, 16.6263), (16.6263, 16.6263, 16.6263, 16.6263),
                    (16.6263, 16.6263, 16.1068, 16.1068),
                    (16.1068, 16.1068, 16.1068, 16.1068)]},
)
def test_paper_replay_fills_are_the_backtests(doc: dict[str, Any],
                                              market: dict[str, list[tuple]]) -> None:  # type: ignore[type-arg]
    n_days = len(next(iter(market.values())))
    stamps = days(START, n_days)
    bars = [[Bar(ticker=tk, ts=ts, open=o, high=h, low=lo, close=c, volume=1000.0)
             for tk, rows in sorted(market.items())
             for o, h, lo, c in [rows[i]]]
            for i, ts in enumerate(stamps)]
    note(f"strategy: {doc}")
    note(f"market: {market}")
    expected = sorted(_backtest(doc, bars), key=_key)
    got = sorted(_paper(doc, bars, long_only=doc.get("direction") != "long_short"), key=_key)
    assert [f[:4] for f in got] == [f[:4] for f in expected], doc
    for g, e in zip(got, expected, strict=True):
        assert math.isclose(g[4], e[4], rel_tol=1e-9, abs_tol=1e-6), (doc, g, e)
