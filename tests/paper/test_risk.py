"""Each risk limit, enforced: every test runs with and without the limit and sees the difference."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit
from falcon.db.engine import transaction
from falcon.db.models import AuditEntry, Event, Order, PaperAccount, Position, Ticker
from falcon.domain.orders import Side
from falcon.paper.admin import halt_account, resume_account, submit_manual_order

from .helpers import LOOSE, bar, days, make_account, minutes, slot, trader

D = days(date(2024, 1, 2), 8)


def _held(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s:
        return {p.ticker: int(p.qty) for p in s.scalars(select(Position))}


def _rejected(sessions: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    with sessions() as s:
        return [(o.ticker, o.reject_reason)
                for o in s.scalars(select(Order).where(Order.status == "rejected"))]


def _two_days(t, tickers, price=100.0) -> None:  # type: ignore[no-untyped-def]
    t.process([bar(k, D[0], price) for k in tickers])
    t.process([bar(k, D[1], price) for k in tickers])


@pytest.mark.parametrize("limit", [2, None])
def test_max_open_positions(sessions: sessionmaker[Session], limit: int | None) -> None:
    make_account(sessions)
    limits = LOOSE.merged({"max_open_positions": limit})
    t = trader(sessions, [slot(sizing={"kind": "fraction", "value": 0.1})], limits=limits)
    _two_days(t, ["A", "B", "C"])
    if limit:
        assert sorted(_held(sessions)) == ["A", "B"]
        assert _rejected(sessions) == [("C", "risk_limit")]
    else:
        assert sorted(_held(sessions)) == ["A", "B", "C"]


@pytest.mark.parametrize("limit", [2, None])
def test_strategy_max_positions(sessions: sessionmaker[Session], limit: int | None) -> None:
    make_account(sessions)
    # Each strategy counts only its own positions: "other" holds D, which does not use up
    # "capped"'s allowance.
    capped = slot("capped", tickers=["A", "B", "C"], sizing={"kind": "fraction", "value": 0.1},
                  max_positions=limit or 10)
    other = slot("other", tickers=["D"], sizing={"kind": "fraction", "value": 0.1})
    t = trader(sessions, [capped, other])
    _two_days(t, ["A", "B", "C", "D"])
    if limit:
        assert sorted(_held(sessions)) == ["A", "B", "D"]
        assert _rejected(sessions) == [("C", "risk_limit")]
        with sessions() as s:
            why = s.scalars(select(Order.reason).where(Order.status == "rejected")).one()
        assert "strategy max_positions 2" in why
    else:
        assert sorted(_held(sessions)) == ["A", "B", "C", "D"]
        assert _rejected(sessions) == []


@pytest.mark.parametrize("limit", [0.1, None])
def test_max_position_pct(sessions: sessionmaker[Session], limit: float | None) -> None:
    make_account(sessions)
    t = trader(sessions, [slot()], limits=LOOSE.merged({"max_position_pct": limit}))
    _two_days(t, ["A"])
    assert _held(sessions) == {"A": 10 if limit else 50}
    with sessions() as s:
        capped = s.scalars(select(AuditEntry).where(AuditEntry.action == "risk.capped")).all()
    assert len(capped) == (1 if limit else 0)


@pytest.mark.parametrize("limit", [0.15, None])
def test_max_sector_pct(sessions: sessionmaker[Session], limit: float | None) -> None:
    make_account(sessions)
    with transaction(sessions) as s:
        s.add_all([Ticker(ticker="A", sector="Tech"), Ticker(ticker="B", sector="Tech"),
                   Ticker(ticker="C", sector="Energy")])
    limits = LOOSE.merged({"max_position_pct": 0.1, "max_sector_pct": limit})
    t = trader(sessions, [slot(sizing={"kind": "fraction", "value": 0.1})], limits=limits)
    _two_days(t, ["A", "B", "C"])
    assert _held(sessions) == ({"A": 10, "B": 5, "C": 10} if limit else
                               {"A": 10, "B": 10, "C": 10})


@pytest.mark.parametrize("limit", [0.15, None])
def test_max_strategy_pct(sessions: sessionmaker[Session], limit: float | None) -> None:
    make_account(sessions)
    limits = LOOSE.merged({"max_position_pct": 0.1, "max_strategy_pct": limit})
    slots = [slot("s1", ["A", "B"], sizing={"kind": "fraction", "value": 0.1}),
             slot("s2", ["C"], sizing={"kind": "fraction", "value": 0.1})]
    t = trader(sessions, slots, limits=limits)
    _two_days(t, ["A", "B", "C"])
    assert _held(sessions) == ({"A": 10, "B": 5, "C": 10} if limit else
                               {"A": 10, "B": 10, "C": 10})


@pytest.mark.parametrize("limit", [0.03, None])
def test_daily_loss_limit_stops_entries_for_the_day(
    sessions: sessionmaker[Session], limit: float | None
) -> None:
    make_account(sessions)
    m = minutes(date(2024, 3, 4), 4) + minutes(date(2024, 3, 5), 3)
    strat = slot(timeframe="minute")
    t = trader(sessions, [strat], kind="minute",
               limits=LOOSE.merged({"daily_loss_pct": limit}))
    t.process([bar("A", m[0], 100)])
    t.process([bar("A", m[1], 100)])            # A bought: 50 shares
    t.process([bar("A", m[2], 90), bar("B", m[2], 100)])  # -5 % of equity; B signals
    t.process([bar("B", m[3], 100)])            # B's entry would fill here
    if limit:
        assert _held(sessions) == {"A": 50}
        assert _rejected(sessions) == [("B", "risk_limit")]
        with sessions() as s:
            assert s.scalar(select(AuditEntry.id).where(
                AuditEntry.action == "risk.daily_loss_stop")) is not None
        # The next session trades again.
        t.process([bar("C", m[4], 10)])
        t.process([bar("C", m[5], 10)])
        assert "C" in _held(sessions)
    else:
        assert set(_held(sessions)) == {"A", "B"}


@pytest.mark.parametrize("limit", [0.2, None])
def test_max_drawdown_halts_the_account(
    sessions: sessionmaker[Session], limit: float | None
) -> None:
    make_account(sessions)
    t = trader(sessions, [slot(sizing={"kind": "fraction", "value": 0.9})],
               limits=LOOSE.merged({"max_drawdown_pct": limit}))
    _two_days(t, ["A"])                                    # 90 shares of A at 100
    t.process([bar("A", D[2], 70), bar("B", D[2], 50)])    # -27 %; B signals
    t.process([bar("B", D[3], 50)])
    with sessions() as s:
        account = s.scalar(select(PaperAccount))
        assert account is not None
        assert account.halted is bool(limit)
    if limit:
        assert _rejected(sessions) == [("B", "halted")]
        assert "max drawdown" in (account.halt_reason or "")
    else:
        assert "B" in _held(sessions)


def test_kill_switch_flatten_and_resume_through_the_database(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions)
    t = trader(sessions, [slot(sizing={"kind": "fraction", "value": 0.2})])
    _two_days(t, ["A"])
    assert _held(sessions) == {"A": 20}
    with transaction(sessions) as s:   # what `falcon paper halt --flatten` does
        halt_account(s, "t", reason="drill", actor="test", flatten=True,
                     now=datetime(2024, 1, 4, 15, tzinfo=UTC))
    t.process([bar("A", D[2], 100), bar("B", D[2], 100)])  # A flattened at the open; B signals
    t.process([bar("B", D[3], 100)])
    assert _held(sessions) == {}
    assert _rejected(sessions) == [("B", "halted")]
    with transaction(sessions) as s:
        resume_account(s, "t", reason="ok", actor="test")
    t.process([bar("B", D[4], 100)])
    t.process([bar("B", D[5], 100)])
    assert "B" in _held(sessions)
    with sessions() as s:
        kinds = set(s.scalars(select(Event.kind)))
        assert {"order", "fill", "account_halted", "account_resumed"} <= kinds
        actions = set(s.scalars(select(AuditEntry.action)))
        assert {"paper.halted", "paper.resumed", "order.filled", "order.rejected"} <= actions
        assert audit.verify(s).ok


def test_manual_orders_are_refused_when_the_market_is_closed_or_nothing_is_held(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions)
    saturday = datetime(2024, 3, 9, 15, tzinfo=UTC)
    monday = datetime(2024, 3, 11, 15, tzinfo=UTC)
    with transaction(sessions) as s:
        closed = submit_manual_order(s, "t", ticker="A", side=Side.BUY, qty=1, actor="t",
                                     now=saturday)
        short = submit_manual_order(s, "t", ticker="A", side=Side.SELL, qty=1, actor="t",
                                    now=monday)
        big = submit_manual_order(s, "t", ticker="A", side=Side.BUY, qty=10_000, actor="t",
                                  now=monday)
    assert (closed.status, closed.reject_reason) == ("rejected", "market_closed")
    assert (short.status, short.reject_reason) == ("rejected", "no_shares")
    assert big.status == "pending"
    t = trader(sessions, [])
    t.process([bar("A", D[0], 100)])
    assert _rejected(sessions) == [("A", "market_closed"), ("A", "no_shares"),
                                   ("A", "insufficient_cash")]


def test_bars_outside_the_session_do_not_trade(sessions: sessionmaker[Session]) -> None:
    make_account(sessions)
    t = trader(sessions, [slot(timeframe="minute")], kind="minute")
    pre = minutes(date(2024, 3, 4), 3, first=-30)  # 09:00-09:02 New York
    for ts in pre:
        t.process([bar("A", ts, 100)])
    assert _held(sessions) == {}
    with sessions() as s:
        assert s.scalar(select(Order.id)) is None
        assert s.scalar(select(PaperAccount.last_bar_ts)) == pre[-1]


def test_bracket_stop_loss_and_take_profit_are_one_oco_group(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions)
    strat = slot(stop_loss={"percent": 5}, take_profit={"percent": 10})
    t = trader(sessions, [strat])
    _two_days(t, ["A"])
    t.process([bar("A", D[2], 100, 101, 94, 95)])  # touches the stop at 95
    with sessions() as s:
        orders: dict[str, Order] = {}
        for o in s.scalars(select(Order).order_by(Order.id)):
            orders.setdefault(o.client_order_id.rsplit(":", 1)[-1], o)  # the first bracket
        assert orders["entry"].status == "filled"
        assert (orders["sl"].status, orders["sl"].avg_fill_price) == ("filled", 95.0)
        assert orders["tp"].status == "canceled"
        assert orders["sl"].oco_group == orders["tp"].oco_group
        assert orders["sl"].parent_id == orders["entry"].id
    assert "A" not in _held(sessions)


def test_orders_canceled_from_outside_leave_the_book_on_the_next_batch(
    sessions: sessionmaker[Session],
) -> None:
    """A cancel from the dashboard (the row's status set to canceled) reaches the trader's book:
    the canceled take-profit never fills, although the next bar trades through it."""
    make_account(sessions)
    strat = slot(stop_loss={"percent": 5}, take_profit={"percent": 10})
    t = trader(sessions, [strat])
    _two_days(t, ["A"])  # entry filled at D[1]; its stop and target rest in the book
    live = {o.tag: o.id for o in t.state.book.open_orders}
    assert set(live) == {"stop_loss", "take_profit"}
    with transaction(sessions) as s:
        tp = s.scalars(select(Order).where(Order.client_order_id == live["take_profit"])).one()
        tp.status = "canceled"
    t.process([bar("A", D[2], 100, 120, 99, 118)])  # through the 110 target
    assert [o.tag for o in t.state.book.open_orders] == ["stop_loss"]
    assert _held(sessions) == {"A": t.state.ledger.qty("A")} and t.state.ledger.qty("A") > 0
    with sessions() as s:
        assert s.scalars(select(Order.status).where(
            Order.client_order_id == live["take_profit"])).one() == "canceled"
