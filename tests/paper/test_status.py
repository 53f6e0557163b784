"""``account_status``: positions valued at the marks given, else at their latest fill."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import transaction
from falcon.db.models import Fill
from falcon.domain.orders import Side
from falcon.paper.admin import account_status, submit_manual_order

from .helpers import LOOSE, bar, days, make_account, slot, trader

D = days(date(2024, 1, 2), 5)


def test_positions_are_marked_at_the_marks_given_else_at_their_latest_fill(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions, cash=100_000.0)
    t = trader(sessions, [slot("always", ["A", "B"], sizing={"kind": "fraction", "value": 0.2})])
    t.process([bar("A", D[0], 100.0), bar("B", D[0], 50.0)])
    t.process([bar("A", D[1], 110.0), bar("B", D[1], 55.0)])  # both entered at these opens
    with transaction(sessions) as s:  # one more A, filled at the next open
        submit_manual_order(s, "t", ticker="A", side=Side.BUY, qty=1, actor="t",
                            now=datetime(2024, 1, 3, 15, tzinfo=UTC))
    t.process([bar("A", D[2], 120.0), bar("B", D[2], 56.0)])
    with sessions() as s:
        fills = s.execute(select(Fill.ticker, Fill.price).order_by(Fill.id)).tuples().all()
        plain = account_status(s, "t", LOOSE)
        marked = account_status(s, "t", LOOSE, marks={"A": 130.0})
    assert [t_ for t_, _ in fills] == ["A", "B", "A"]
    latest = {"A": fills[2][1], "B": fills[1][1]}
    assert latest["A"] != fills[0][1]
    assert {p["ticker"]: p["mark"] for p in plain["positions"]} == latest
    assert {p["ticker"]: p["mark"] for p in marked["positions"]} == {"A": 130.0,
                                                                     "B": latest["B"]}
