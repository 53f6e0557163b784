"""The persistent paper account: what the rest of Falcon imports to write and read it.

The rows written per order event and the state rebuilt from them live in small modules; this one
gathers their public names, so callers need one import:

* :mod:`falcon.paper.books`: money rounding, the fee model and the double-entry ledger legs (the
  books and their signs are described there);
* :mod:`falcon.paper.state`: the in-memory account (:class:`AccountState`), its order rows, and
  the conversions between stored rows and domain orders;
* :mod:`falcon.paper.accounts`: finding and creating accounts;
* :mod:`falcon.paper.batch_writes`: the batch buffer, whose rows are written together;
* :mod:`falcon.paper.order_rows`: what each order event writes, and the pending orders.
"""

from __future__ import annotations

from falcon.paper.accounts import create_account, find_account
from falcon.paper.batch_writes import add_event, audit_entry, batch, flush_batch, known
from falcon.paper.books import MicroCosts, fill_legs, money, position_basis, txn_id_for
from falcon.paper.order_rows import (
    ACTOR,
    hold_pending,
    insert_order,
    insert_pending,
    record_events,
    store_pending,
    sync_live_orders,
)
from falcon.paper.state import AccountState, OrderRow, domain_from_row, domain_order, parse_meta

__all__ = [
    "ACTOR",
    "AccountState",
    "MicroCosts",
    "OrderRow",
    "add_event",
    "audit_entry",
    "batch",
    "create_account",
    "domain_from_row",
    "domain_order",
    "fill_legs",
    "find_account",
    "flush_batch",
    "hold_pending",
    "insert_order",
    "insert_pending",
    "known",
    "money",
    "parse_meta",
    "position_basis",
    "record_events",
    "store_pending",
    "sync_live_orders",
    "txn_id_for",
]
