"""falcon.db.bulk stores exactly the rows SQLAlchemy Core would (both databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db import bulk
from falcon.db.engine import transaction
from falcon.db.models import AuditEntry, Event, Fill, Order, PaperAccount, Position

TS = datetime(2024, 3, 4, 15, 30, 0, 123456, tzinfo=UTC)


def _accounts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with transaction(sessions) as s:
        a = PaperAccount(name="a", starting_cash=Decimal(100), cash=Decimal(100))
        b = PaperAccount(name="b", starting_cash=Decimal(100), cash=Decimal(100))
        s.add_all([a, b])
        s.flush()
        return a.id, b.id


def _columns(row: Any, skip: set[str]) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.c if c.key not in skip}


def test_inserted_rows_equal_cores(sessions: sessionmaker[Session]) -> None:
    account, _ = _accounts(sessions)
    order = {"account_id": account, "ticker": "AAPL", "side": "buy", "type": "limit", "qty": 7,
             "limit_price": 101.25, "stop_price": None, "trail_pct": None,
             "time_in_force": "gtc", "status": "open", "parent_id": None, "oco_group": None,
             "strategy": "s", "reason": '{"x":1}', "reject_reason": None, "filled_qty": 0,
             "avg_fill_price": None}
    with transaction(sessions) as s:
        s.execute(insert(cast(Table, Order.__table__)), [{**order, "client_order_id": "core"}])
        bulk.insert_rows(s, cast(Table, Order.__table__), [{**order, "client_order_id": "bulk"}])
        events = [{"kind": "fill", "payload": {"price": 1.5, "ticker": "AAPL", "n": [1, 2]}}]
        s.execute(insert(cast(Table, Event.__table__)), events)
        bulk.insert_rows(s, cast(Table, Event.__table__), events)
        ids = dict(s.execute(select(Order.client_order_id, Order.id)).tuples().all())
        fill = {"account_id": account, "ticker": "AAPL", "side": "buy", "qty": 7, "price": 101.0,
                "fee": Decimal("1.234567"), "ts": TS}
        s.execute(insert(cast(Table, Fill.__table__)),
                  [{**fill, "order_id": ids["core"], "idempotency_key": "core"}])
        bulk.insert_rows(s, cast(Table, Fill.__table__),
                         [{**fill, "order_id": ids["bulk"], "idempotency_key": "bulk"}])
        # A New York time: stored as the same instant in UTC.
        audit = {"ts": TS.astimezone(ZoneInfo("America/New_York")), "actor": "t",
                 "action": "x", "subject": None, "prev_hash": "0" * 64, "hash": "1" * 64}
        bulk.insert_rows(s, cast(Table, AuditEntry.__table__),
                         [{**audit, "detail": json.dumps({"k": "v", "n": 1.5})}], raw=("detail",))
    with sessions() as s:
        core, mine = (s.scalars(select(Order).where(Order.client_order_id == c)).one()
                      for c in ("core", "bulk"))
        skip = {"id", "client_order_id", "created_at", "updated_at"}
        assert _columns(core, skip) == _columns(mine, skip)
        # The Python-side defaults were applied, as aware UTC times.
        assert mine.created_at.tzinfo is not None
        assert abs(mine.created_at - core.created_at) < timedelta(minutes=5)
        e1, e2 = s.scalars(select(Event).order_by(Event.id)).all()
        assert e1.payload == e2.payload == {"price": 1.5, "ticker": "AAPL", "n": [1, 2]}
        assert e2.ts.tzinfo is not None
        f1, f2 = s.scalars(select(Fill).order_by(Fill.id)).all()
        skip = {"id", "order_id", "idempotency_key"}
        assert _columns(f1, skip) == _columns(f2, skip)
        assert f2.fee == Decimal("1.234567") and f2.ts == TS
        entry = s.scalars(select(AuditEntry)).one()
        assert entry.detail == {"k": "v", "n": 1.5} and entry.ts == TS


def test_updates_touch_only_their_rows_and_set_updated_at(sessions: sessionmaker[Session]) -> None:
    a, b = _accounts(sessions)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    with transaction(sessions) as s:
        for account in (a, b):
            for ticker in ("AAPL", "MSFT"):
                s.add(Position(account_id=account, ticker=ticker, qty=1, avg_cost=Decimal(10),
                               realized_pnl=Decimal(0), updated_at=old))
    with transaction(sessions) as s:
        bulk.update_rows(s, cast(Table, Position.__table__), "ticker",
                         [{"ticker": "AAPL", "qty": 5, "avg_cost": Decimal("12.5")}],
                         where={"account_id": a})
    with sessions() as s:
        got = {(p.account_id, p.ticker): (p.qty, p.avg_cost, p.updated_at > old)
               for p in s.scalars(select(Position))}
    assert got == {(a, "AAPL"): (5, Decimal("12.5"), True), (a, "MSFT"): (1, Decimal(10), False),
                   (b, "AAPL"): (1, Decimal(10), False), (b, "MSFT"): (1, Decimal(10), False)}


def test_awkward_text_survives_both_paths(sessions: sessionmaker[Session]) -> None:
    """Tabs, newlines, backslashes, quotes, NUL-free unicode and None: as given (COPY escapes)."""
    account, _ = _accounts(sessions)
    awkward = 'a\tb\nc\\d "e" \'f\' \u00e9\u4e2d \\N'
    with transaction(sessions) as s:
        bulk.insert_rows(s, cast(Table, Event.__table__),
                         [{"kind": "fill", "payload": {"note": awkward, "none": None}}])
        bulk.insert_rows(s, cast(Table, Position.__table__),
                         [{"account_id": account, "ticker": "T\\N", "qty": 1,
                           "avg_cost": Decimal(1), "strategy": awkward}])
    with sessions() as s:
        assert s.scalars(select(Event)).one().payload == {"note": awkward, "none": None}
        position = s.scalars(select(Position)).one()
        assert (position.ticker, position.strategy) == ("T\\N", awkward)


def test_insert_returning_gives_each_rows_id_and_stores_cores_rows(
    sessions: sessionmaker[Session],
) -> None:
    account, _ = _accounts(sessions)
    table = cast(Table, Order.__table__)
    base = {"account_id": account, "ticker": "AAPL", "side": "buy", "type": "market", "qty": 3,
            "limit_price": None, "stop_price": None, "trail_pct": None,
            "time_in_force": "day", "status": "pending", "parent_id": None, "oco_group": None,
            "strategy": None, "reason": 'tab\there, "quotes", back\\slash, new\nline',
            "reject_reason": None, "filled_qty": 0, "avg_fill_price": None}
    rows = [{**base, "client_order_id": f"r{i}", "qty": i + 1,
             "limit_price": None if i % 2 else 10.5 + i} for i in range(5)]
    with transaction(sessions) as s:
        s.execute(insert(table), [{**base, "client_order_id": "core"}])
        ids = bulk.insert_returning(s, table, rows, "client_order_id")
        # The newest row deleted (a gap at the end: the next rowid is the largest left + 1).
        s.execute(delete(table).where(table.c.client_order_id == "r4"))
        del ids["r4"]
        # Again with other rows: the statement is reused with other values.
        more = bulk.insert_returning(s, table, [{**base, "client_order_id": "again"}],
                                     "client_order_id")
    assert sorted(ids) == [f"r{i}" for i in range(4)] and list(more) == ["again"]
    with sessions() as s:
        stored = {o.client_order_id: o for o in s.scalars(select(Order))}
        for cid, oid in {**ids, **more}.items():
            assert stored[cid].id == oid
        assert "r4" not in stored
        for i in range(4):
            assert stored[f"r{i}"].qty == i + 1
            assert stored[f"r{i}"].limit_price == (None if i % 2 else 10.5 + i)
        skip = {"id", "client_order_id", "created_at", "updated_at"}
        assert _columns(stored["core"], skip) == _columns(stored["again"], skip)
        assert stored["again"].created_at.tzinfo is not None
    with transaction(sessions) as s:
        assert bulk.insert_returning(s, table, [], "client_order_id") == {}
