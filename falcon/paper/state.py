"""The paper account as the trader holds it in memory, and the order rows it keeps.

:class:`AccountState` is rebuilt from the database by :func:`falcon.paper.restore.load_state`
and kept up to date by the writers of :mod:`falcon.paper.order_rows`; :class:`OrderRow` is the
in-memory copy of an ``orders`` row (pending entries). Also the conversions between stored rows
and domain orders: the row's ``reason`` JSON (:func:`parse_meta`) and :func:`domain_order`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from falcon.db.models import Order
from falcon.domain.orders import Order as DomainOrder
from falcon.domain.orders import OrderType, Side, TimeInForce
from falcon.execution.book import OrderBook
from falcon.execution.ledger import Ledger
from falcon.paper.streaks import Streaks

__all__ = ["AccountState", "OrderRow", "domain_from_row", "domain_order", "parse_meta"]


@dataclass(slots=True)
class OrderRow:
    """The fields of an ``orders`` row the trader keeps in memory (pending entries).

    A plain value, not an ORM object: the trader holds hundreds of them between batches, and
    nothing about them must be tracked by a session (their rows are written with Core
    statements by :func:`falcon.paper.batch_writes.flush_batch`, in the batch's transaction).
    """

    client_order_id: str
    ticker: str
    side: str
    type: str
    qty: int
    limit_price: float | None = None
    stop_price: float | None = None
    trail_pct: float | None = None
    time_in_force: str = "day"
    oco_group: str | None = None
    id: int | None = None

    @classmethod
    def of(cls, row: Order) -> OrderRow:
        """The in-memory copy of a stored row."""
        return cls(client_order_id=row.client_order_id, ticker=row.ticker, side=row.side,
                   type=row.type, qty=int(row.qty), limit_price=row.limit_price,
                   stop_price=row.stop_price, trail_pct=row.trail_pct,
                   time_in_force=row.time_in_force, oco_group=row.oco_group, id=row.id)


@dataclass
class AccountState:
    """One account as the trader holds it in memory between bars; rebuilt by
    :func:`falcon.paper.restore.load_state`."""

    account_id: int
    name: str
    long_only: bool
    ledger: Ledger
    book: OrderBook
    shadow: Ledger  # the same fills applied one event at a time: per-fill positions for the rows
    cash: Decimal  # sum of the cash book (the ledger's float cash, to the micro-dollar)
    order_ids: dict[str, int] = field(default_factory=dict)  # client_order_id -> orders.id
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # client id -> reason JSON
    pending: dict[str, OrderRow] = field(default_factory=dict)  # entries sized at the next open
    streaks: Streaks = field(default_factory=Streaks)  # quiet retries (paper_accounts.quiet_state)
    basis: dict[str, Decimal] = field(default_factory=dict)  # balance of position:T
    strategy_of: dict[str, str | None] = field(default_factory=dict)  # ticker -> owner
    entry_ts: dict[str, datetime] = field(default_factory=dict)  # ticker -> position opened
    persisted: dict[str, tuple[str, float | None, float | None]] = field(default_factory=dict)
    halted: bool = False
    halt_reason: str | None = None
    peak_equity: Decimal | None = None
    last_bar_ts: datetime | None = None


def domain_order(
    row: Order | OrderRow, parent: str | None, meta: dict[str, Any], qty: int | None = None
) -> DomainOrder:
    """The domain order of a stored (or in-memory) row, with its parent's client id, the extras
    its ``meta`` keeps (trail amount, tag), and ``qty`` instead of the row's when given."""
    kind = OrderType(row.type)
    return DomainOrder(
        id=row.client_order_id,
        ticker=row.ticker,
        side=Side(row.side),
        qty=int(row.qty) if qty is None else qty,
        type=kind,
        limit_price=row.limit_price,
        stop_price=row.stop_price,
        trail_percent=row.trail_pct,
        trail_amount=meta.get("trail_amount") if kind is OrderType.TRAILING_STOP else None,
        tif=TimeInForce(row.time_in_force),
        parent_id=parent,
        oco_group=row.oco_group,
        tag=meta.get("tag"),
    )


def domain_from_row(row: OrderRow, meta: dict[str, Any], qty: int | None = None) -> DomainOrder:
    """The domain order of a stored row (with ``qty`` when it is sized at release)."""
    return domain_order(row, None, meta, qty)


def parse_meta(text: str | None) -> dict[str, Any]:
    """The JSON object an ``orders`` row keeps in ``reason`` (empty when it holds none)."""
    if not text or not text.startswith("{"):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
