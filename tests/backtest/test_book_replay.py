"""The backtester and the paper trader's order book make the same trades.

The same random bars and signals are run through :func:`run_backtest` and, bar by bar, through
:class:`OrderBook` (what the paper trader does live). Sizing is a fixed share count because the
live trader cannot know the next open when it sizes; levels are set from the entry fill price in
both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.domain.events import OrderFilled
from falcon.domain.market import Bar
from falcon.domain.orders import Order, Side
from falcon.domain.rules import Level, RiskRules, Sizing, SizingKind, StopKind
from falcon.execution.book import OrderBook, bracket
from falcon.execution.ledger import Ledger

QTY = 10
CONFIG = BacktestConfig(cash=100_000, commission=0.001, commission_per_share=0.005, slippage_bps=5)


def random_frame(seed: int, n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.01, n)))
    return pl.DataFrame(
        {
            "ticker": "T",
            "ts": [datetime(2020, 1, 1) + timedelta(days=i) for i in range(n)],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "entry_long": rng.random(n) < 0.08,
            "exit_long": rng.random(n) < 0.04,
            "entry_short": False,
            "exit_short": False,
        }
    )


def replay(frame: pl.DataFrame, risk: RiskRules) -> list[tuple[datetime, str, float]]:
    book = OrderBook(ledger=Ledger(cash=CONFIG.cash), costs=CONFIG.costs)
    rows = frame.rows(named=True)
    out: list[tuple[datetime, str, float]] = []
    for t, row in enumerate(rows):
        bar = Bar(
            ticker="T",
            ts=row["ts"],
            open=row["open"],
            high=row["high"],
            low=row["low"],
            close=row["close"],
        )
        for event in book.on_bar(bar):
            if isinstance(event, OrderFilled):
                out.append((event.fill.ts, event.fill.side.value, event.fill.price))
        if t == len(rows) - 1:
            break
        held = book.ledger.qty("T")
        if held and row["exit_long"]:
            book.submit(Order(id=f"x{t}", ticker="T", side=Side.SELL, qty=held), bar.ts)
        elif not held and row["entry_long"] and not row["exit_long"]:
            # Levels from the entry fill price, as the engine sets them.
            price = float(CONFIG.costs.slipped(rows[t + 1]["open"], buy=True))
            sl, tp, tr = risk.stop_loss, risk.take_profit, risk.trailing_stop
            book.submit(
                bracket(
                    Order(id=f"e{t}", ticker="T", side=Side.BUY, qty=QTY),
                    stop_loss=price * (1 - sl.value) if sl else None,
                    take_profit=price * (1 + tp.value) if tp else None,
                    trail_percent=tr.value if tr else None,
                ),
                bar.ts,
            )
    return out


def pct(v: float) -> Level:
    return Level(kind=StopKind.PERCENT, value=v)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "levels",
    [
        {"stop_loss": pct(0.03), "take_profit": pct(0.05)},
        {"trailing_stop": pct(0.04), "take_profit": pct(0.08)},
        {"stop_loss": pct(0.02)},
        {},
    ],
    ids=["stop+target", "trail+target", "stop", "signals"],
)
def test_engine_and_order_book_agree(seed: int, levels: dict[str, Level]) -> None:
    frame = random_frame(seed)
    risk = RiskRules(sizing=Sizing(kind=SizingKind.SHARES, value=QTY), **levels)  # type: ignore[arg-type]
    result = run_backtest(frame, risk=risk, config=CONFIG)
    engine: list[tuple[datetime, str, float]] = []
    for tr in result.trades.iter_rows(named=True):
        engine += [
            (tr["entry_ts"], "buy", tr["entry_price"]),
            (tr["exit_ts"], "sell", tr["exit_price"]),
        ]
    for tr in result.open_trades.iter_rows(named=True):
        engine.append((tr["entry_ts"], "buy", tr["entry_price"]))
    book = replay(frame, risk)
    assert len(engine) == len(book) > 10
    for (ts_a, side_a, px_a), (ts_b, side_b, px_b) in zip(
        sorted(engine), sorted(book), strict=True
    ):
        assert (ts_a, side_a) == (ts_b, side_b)
        assert px_a == pytest.approx(px_b, rel=1e-12)
