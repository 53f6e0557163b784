"""A long/short account restarts from its fills however its margin stood when they filled.

The account's ledger judges a fill on the marks of that moment (a margin account's room is
equity less exposure, both at the marks). Restored from the database, the fills are booked again
as they were, not judged again on marks a replay does not have: judged again, a valid history
(all in, long and short, stops and time-outs on flat and falling prices) was refused and the
account could not be loaded.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import transaction
from falcon.db.models import Fill
from falcon.domain.market import Bar
from falcon.execution.fills import CostModel
from falcon.paper.persist import create_account
from falcon.paper.signals import StrategySlot
from falcon.paper.trader import Trader
from falcon.strategy import load_spec

from .helpers import days, trader

DOC: dict[str, Any] = {
    "name": "margin", "version": "1", "timeframe": "day", "direction": "long_short",
    "entry": "close > sma(close, 3)", "exit": "close < sma(close, 3)",
    "short_entry": "close > sma(close, 6)", "short_exit": "close < sma(close, 6)",
    "max_positions": 3, "sizing": {"kind": "all_in"}, "stop_loss": {"percent": 2},
    "trailing_stop": {"percent": 3}, "max_bars": 2,
}
# Closes per day: falling with flat stretches (from the property test that found it).
CLOSES = {
    "AAA": [19.375, 18.7695, 18.183, 18.183, 18.183, 17.6148, 17.0643, 16.531, 16.0144, 15.514,
            15.514, 15.9988, 15.9988, 15.4988, 15.0145, 15.0145, 15.0145, 15.0145, 14.5453,
            14.0908, 14.0908, 14.0908, 14.0908, 13.6504, 13.6504, 13.2239, 13.2239, 13.2239],
    "BBB": [20.0, 20.0, 20.0, 20.0, 20.0, 19.375, 19.375, 19.375, 20.2832, 20.2832, 20.2832,
            19.9663, 19.3423, 18.7379, 18.7379, 18.1523, 17.5851, 17.5851, 17.5851, 17.5851,
            17.5851, 17.5851, 17.0355, 16.5032, 16.5032, 16.5032, 15.9874, 15.9874],
}
START = {"AAA": 20.0, "BBB": 20.0}


def _bars() -> list[list[Bar]]:
    stamps = days(date(2024, 1, 2), len(CLOSES["AAA"]))
    out: list[list[Bar]] = []
    prev = dict(START)
    for i, ts in enumerate(stamps):
        batch = []
        for tk in sorted(CLOSES):
            o, c = prev[tk], CLOSES[tk][i]
            batch.append(Bar(ticker=tk, ts=ts, open=o, high=max(o, c), low=min(o, c), close=c,
                             volume=1000.0))
            prev[tk] = c
        out.append(batch)
    return out


def _run(sessions: sessionmaker[Session], name: str, restart_every: int | None) -> list[Any]:
    with transaction(sessions) as s:
        create_account(s, name, 10_000.0, long_only=False)
    slot = StrategySlot(name="margin", spec=load_spec(DOC), margin=3)

    def fresh() -> Trader:
        return trader(sessions, [slot], account=name,
                      costs=CostModel(commission=0.001, slippage_bps=5.0))

    bars = _bars()
    t = fresh()
    for i, batch in enumerate(bars):
        if restart_every and i and i % restart_every == 0:
            t = fresh()  # a restart: the state is rebuilt from the stored fills, and the
            t.warm(b for seen in bars[:i] for b in seen)  # windows from the history, as the
        t.process(batch)  # service does from the store
    restored = fresh()
    assert restored.state.ledger.positions == t.state.ledger.positions
    assert abs(restored.state.ledger.cash - t.state.ledger.cash) < 1e-6
    with sessions() as s:
        account_fills = s.scalars(select(Fill).where(Fill.account_id == t.state.account_id)
                                  .order_by(Fill.id))
        return [(f.ticker, f.side, f.ts, int(f.qty), f.price) for f in account_fills]


def test_a_margin_account_restarts_from_fills_it_could_not_take_on_todays_marks(
    sessions: sessionmaker[Session],
) -> None:
    straight = _run(sessions, "straight", None)
    assert {side for _, side, *_ in straight} == {"buy", "sell"} and len(straight) >= 4
    assert _run(sessions, "restarted", 2) == straight
