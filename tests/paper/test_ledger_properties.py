"""Ledger invariants under random order streams, on SQLite and PostgreSQL (hypothesis).

A random stream mixes manual orders of every type (market, limit, stop, stop-limit; day or GTC;
buys beyond the cash, sells beyond the holding) with a strategy that opens brackets, over random
bars. After it, whatever happened:

* every ledger transaction sums to exactly zero, and the cash book is the account's cash;
* the positions stored equal the ledger replayed from the stored fills, never negative (long only);
* cash plus the marked positions is the equity, and equity = deposit + realized - fees + unrealized;
* each ``position:T`` book holds qty x average cost; the audit chain verifies.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit
from falcon.db.engine import transaction
from falcon.db.models import Fill, PaperAccount, Position
from falcon.domain.orders import OrderType, Side, TimeInForce
from falcon.paper.admin import submit_manual_order
from falcon.paper.persist import money
from falcon.paper.restore import load_state

from .helpers import bar, book_sum, days, make_account, slot, trader, unbalanced_txns

_names = itertools.count()
IN_SESSION = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)

order_st = st.tuples(
    st.sampled_from(["A", "B"]),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(1, 120),
    st.sampled_from(list(OrderType)[:4]),  # market, limit, stop, stop-limit
    st.floats(-0.1, 0.1),
    st.booleans(),
)
step_st = st.tuples(
    st.lists(st.tuples(st.floats(40, 160), st.floats(0, 0.08), st.floats(0, 0.08),
                       st.floats(0, 1)), min_size=2, max_size=2),
    st.lists(order_st, max_size=2),
)


def _submit(sessions: sessionmaker[Session], name: str, order: tuple, price: float) -> None:  # type: ignore[type-arg]
    ticker, side, qty, kind, offset, gtc = order
    level = round(price * (1 + offset), 2)
    limit = level if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    stop = level if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    with transaction(sessions) as s:
        submit_manual_order(s, name, ticker=ticker, side=side, qty=qty, kind=kind,
                            limit_price=limit, stop_price=stop,
                            tif=TimeInForce.GTC if gtc else TimeInForce.DAY, actor="test",
                            now=IN_SESSION)


@settings(max_examples=6, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=3, max_size=10))
def test_random_order_streams_keep_the_ledger_sound(
    sessions: sessionmaker[Session], steps: list
) -> None:
    name = f"p{next(_names)}"
    account_id = make_account(sessions, name, cash=10_000.0)
    strat = slot(entry="close > open", exit_="close < open",
                 stop_loss={"percent": 3}, take_profit={"percent": 4})
    t = trader(sessions, [strat], account=name)
    stamps = days(date(2024, 1, 2), len(steps))
    last = {"A": 100.0, "B": 100.0}
    for ts, (prices, orders) in zip(stamps, steps, strict=True):
        for order in orders:
            _submit(sessions, name, order, last[order[0]])
        batch = []
        for ticker, (o, up, down, where) in zip(("A", "B"), prices, strict=True):
            hi, lo = o * (1 + up), o * (1 - down)
            c = lo + (hi - lo) * where
            batch.append(bar(ticker, ts, o, hi, lo, c))
            last[ticker] = c
        t.process(batch)
    _check(sessions, account_id, t.state.ledger)


def _check(sessions: sessionmaker[Session], account_id: int, live: object) -> None:
    from falcon.execution.fills import CostModel
    from falcon.execution.ledger import Ledger

    assert isinstance(live, Ledger)
    with sessions() as s:
        account = s.get(PaperAccount, account_id)
        assert account is not None
        assert unbalanced_txns(s, account_id) == []
        assert book_sum(s, account_id, "cash") == account.cash
        replayed = load_state(s, account_id, CostModel()).ledger
        assert replayed.cash == live.cash
        assert dict(replayed.positions) == dict(live.positions)
        stored = {p.ticker: p for p in s.scalars(
            select(Position).where(Position.account_id == account_id))}
        assert all(p.qty > 0 for p in stored.values())
        assert {t: int(p.qty) for t, p in stored.items()} == {
            t: p.qty for t, p in live.positions.items()}
        fills = len(s.scalars(select(Fill.id).where(Fill.account_id == account_id)).all())
        assert abs(float(account.cash) - live.cash) <= 2e-6 * (fills + 1)
        for ticker, pos in live.positions.items():
            assert stored[ticker].avg_cost == money(pos.avg_cost)
            assert book_sum(s, account_id, f"position:{ticker}") == money(pos.qty * pos.avg_cost)
        marks = live.marks
        value = sum(p.qty * marks[t] for t, p in live.positions.items())
        assert live.equity() == pytest.approx(live.cash + value, abs=1e-9)
        unrealized = sum(p.qty * (marks[t] - p.avg_cost) for t, p in live.positions.items())
        fees = float(book_sum(s, account_id, "fees"))
        realized = -float(book_sum(s, account_id, "realized_pnl"))
        deposit = float(account.starting_cash)
        assert live.equity() == pytest.approx(deposit + realized - fees + unrealized, abs=1e-4)
        assert -book_sum(s, account_id, "equity") == Decimal(account.starting_cash)
        assert audit.verify(s).ok
