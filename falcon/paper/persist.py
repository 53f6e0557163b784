"""The persistent paper account: rows written per order event, and the state rebuilt from them.

What one event writes, in the caller's transaction (so an event and its rows commit together):

* ``OrderSubmitted``: the ``orders`` row (status ``open``), or the pending row becomes ``open``;
* ``OrderFilled``: the order ``filled``; a ``fills`` row (``idempotency_key`` = the order's
  ``client_order_id`` + ``:fill``: an order fills once, whole); the ``positions`` row; and one
  double-entry transaction in ``ledger_entries`` (see :func:`fill_legs`);
* ``OrderCanceled`` / ``OrderRejected``: the order ``canceled`` / ``rejected`` with the reason;
* each of them: an ``audit_log`` entry and an ``events`` row (kind ``order`` or ``fill``).

Ledger books and signs (debits positive, each transaction sums to exactly zero)::

    deposit    cash +S                       equity -S
    buy        position:T +cost  fees +fee   cash -(cost + fee)
    sell       position:T -basis  fees +fee  realized_pnl -(proceeds - basis)
               cash +(proceeds - fee)

``position:T`` always holds ``qty * avg_cost`` (in micro-dollars), so it returns to zero when the
position closes; ``realized_pnl`` is a credit book (a profit is negative), as is ``equity``.
Amounts are rounded to micro-dollars (the ``Money`` column's unit); the cash leg takes the
rounding so that every transaction balances exactly and ``paper_accounts.cash`` is the sum of the
``cash`` book. Fees are rounded to micro-dollars *before* the in-memory ledger books them
(:class:`MicroCosts`), so replaying the stored fills rebuilds the very same ledger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, cast

from sqlalchemy import (
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from falcon import audit
from falcon.db import bulk
from falcon.db.models import Event, Fill, LedgerEntry, Order, PaperAccount, Position
from falcon.db.types import UTCDateTime, utcnow
from falcon.domain.events import (
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from falcon.domain.orders import Order as DomainOrder
from falcon.domain.orders import OrderType, Side, TimeInForce
from falcon.errors import NotFound, ValidationError
from falcon.execution.book import OrderBook
from falcon.execution.fills import CostModel
from falcon.execution.ledger import Ledger
from falcon.paper.streaks import Streaks

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
    "fill_legs",
    "find_account",
    "flush_batch",
    "hold_pending",
    "insert_order",
    "insert_pending",
    "known",
    "money",
    "record_events",
    "store_pending",
    "sync_live_orders",
    "txn_id_for",
]

ACTOR = "trader"
MICRO = Decimal("0.000001")
ZERO = Decimal(0)


def money(value: float | Decimal) -> Decimal:
    """``value`` rounded to micro-dollars, the unit of the ``Money`` column."""
    return Decimal(value).quantize(MICRO, rounding=ROUND_HALF_EVEN)


class MicroCosts(CostModel):
    """The shared cost model, with each fee rounded to micro-dollars as the database stores it."""

    __slots__ = ()

    def fee(self, qty: int, price: float) -> float:
        """The commission of :class:`CostModel`, rounded to 6 decimals."""
        return round(CostModel.fee(self, qty, price), 6)

    @classmethod
    def of(cls, costs: CostModel) -> MicroCosts:
        """The same costs, rounding fees."""
        return cls(
            commission=costs.commission,
            commission_per_share=costs.commission_per_share,
            slippage_bps=costs.slippage_bps,
        )


def txn_id_for(key: str) -> str:
    """A deterministic ledger transaction id (<= 64 chars) for an idempotency key."""
    return "txn:" + hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(slots=True)
class OrderRow:
    """The fields of an ``orders`` row the trader keeps in memory (pending entries).

    A plain value, not an ORM object: the trader holds hundreds of them between batches, and
    nothing about them must be tracked by a session (their rows are written with Core
    statements by :func:`flush_batch`, in the batch's transaction).
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
    """One account as the trader holds it in memory between bars; rebuilt by :func:`load_state`."""

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


def find_account(session: Session, name: str) -> PaperAccount:
    """The account called ``name`` (NotFound otherwise)."""
    account = session.scalar(select(PaperAccount).where(PaperAccount.name == name))
    if account is None:
        raise NotFound(f"no paper account {name!r} (create it: falcon paper account create)")
    return account


def create_account(
    session: Session, name: str, cash: float, *, long_only: bool = True, actor: str = "cli"
) -> PaperAccount:
    """A new account with ``cash`` deposited (ledger: cash / equity), audited."""
    if not name or len(name) > 64:
        raise ValidationError("account name must be 1 to 64 characters")
    if not cash > 0:
        raise ValidationError("starting cash must be > 0")
    if session.scalar(select(PaperAccount.id).where(PaperAccount.name == name)) is not None:
        raise ValidationError(f"paper account {name!r} already exists")
    amount = money(cash)
    account = PaperAccount(
        name=name,
        starting_cash=amount,
        cash=amount,
        long_only=long_only,
        halted=False,
        peak_equity=amount,
    )
    session.add(account)
    session.flush()
    txn = txn_id_for(f"deposit:{name}")
    session.add_all(
        [
            LedgerEntry(account_id=account.id, txn_id=txn, book="cash", amount=amount,
                        memo=f"deposit:{name}"),
            LedgerEntry(account_id=account.id, txn_id=txn, book="equity", amount=-amount,
                        memo=f"deposit:{name}"),
        ]
    )
    audit.append(session, actor, "paper.account_created", f"account:{name}",
                 {"cash": str(amount), "long_only": long_only})
    return account


def fill_legs(
    ticker: str, basis_before: Decimal, basis_after: Decimal, fee: float, realized: float
) -> list[tuple[str, Decimal]]:
    """The balanced legs of one fill: position at cost, fees, realized P&L, and cash."""
    legs: list[tuple[str, Decimal]] = []
    if basis_after != basis_before:
        legs.append((f"position:{ticker}", basis_after - basis_before))
    if fee:
        legs.append(("fees", money(fee)))
    if realized:
        legs.append(("realized_pnl", -money(realized)))
    legs.append(("cash", -sum((amount for _, amount in legs), ZERO)))
    return legs


def _basis(ledger: Ledger, ticker: str) -> Decimal:
    pos = ledger.position(ticker)
    return ZERO if pos is None else money(pos.qty * pos.avg_cost)


def _meta_text(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def _domain_order(
    row: Order | OrderRow, parent: str | None, meta: dict[str, Any], qty: int | None = None
) -> DomainOrder:
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


def _parse_meta(text: str | None) -> dict[str, Any]:
    if not text or not text.startswith("{"):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- the batch buffer --------------------------------------------------------------------------

_BATCH_KEY = "falcon.paper.batch"


@dataclass
class _PositionChange:
    deleted: bool = False  # the row was deleted at some point of the batch
    created: bool = False  # the final row is a new one (opened after any deletion)
    final: tuple[int, Decimal, Decimal] | None = None  # qty, avg_cost, realized_pnl
    owner: str | None = None


@dataclass
class _Batch:
    """What a batch writes, collected in event order and written by :func:`flush_batch`."""

    state: AccountState | None = None
    # Unflushed ``orders`` rows by client id, as column values (every row has every key).
    new_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # orders.id -> new values
    fills: list[tuple[str, dict[str, Any], list[tuple[str, Decimal]]]] = field(
        default_factory=list)  # (client id, fill row, ledger legs)
    positions: dict[str, _PositionChange] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[tuple[str, str, str | None, dict[str, Any] | None]] = field(
        default_factory=list)


@contextmanager
def batch(session: Session) -> Iterator[None]:
    """Collect the writes of the enclosed persist calls and write them once, on success.

    Nested uses join the outer batch. Anything that reads what a batch wrote must run after the
    block (or call :func:`flush_batch`).
    """
    if _BATCH_KEY in session.info:
        yield
        return
    session.info[_BATCH_KEY] = _Batch()
    try:
        yield
        flush_batch(session)
    finally:
        session.info.pop(_BATCH_KEY, None)


def _batch(session: Session) -> _Batch:
    found: _Batch | None = session.info.get(_BATCH_KEY)
    if found is None:  # pragma: no cover - callers open one
        raise RuntimeError("persist: no batch open")
    return found


def known(state: AccountState, session: Session, client_order_id: str) -> bool:
    """True when an ``orders`` row with this client id exists (or is about to be written)."""
    if client_order_id in state.order_ids:
        return True
    b = session.info.get(_BATCH_KEY)
    return b is not None and client_order_id in b.new_orders


def audit_entry(
    session: Session, actor: str, action: str, subject: str | None, detail: dict[str, Any]
) -> None:
    """An audit entry, written with the batch (in order with the batch's other entries)."""
    with batch(session):
        _batch(session).audit.append((actor, action, subject, detail))


def add_event(session: Session, kind: str, payload: dict[str, Any]) -> None:
    """An ``events`` row, written with the batch."""
    with batch(session):
        _batch(session).events.append({"kind": kind, "payload": payload})


def _update_order(session: Session, state: AccountState, cid: str, **values: Any) -> None:
    b = _batch(session)
    row = b.new_orders.get(cid)
    if row is not None:
        row.update(values)
        return
    b.updates.setdefault(state.order_ids[cid], {}).update(values)


def _state(b: _Batch) -> AccountState:
    if b.state is None:  # pragma: no cover - set by every writer of fills and positions
        raise RuntimeError("persist: batch without an account")
    return b.state


def flush_batch(session: Session) -> None:
    """Write what the open batch collected so far (orders, fills, ledger, positions, events,
    audit), with one statement per table where the rows allow it."""
    b = session.info.get(_BATCH_KEY)
    if b is None:
        return
    if b.new_orders:
        # One executemany (SQLite) or COPY (PostgreSQL), then the ids by the unique client ids:
        # cheaper than Core's INSERT ... RETURNING batches on both.
        orders = cast(Table, Order.__table__)
        bulk.insert_rows(session, orders, list(b.new_orders.values()))
        found = _ids_by(session, orders.c.client_order_id, list(b.new_orders))
        ids = [found[cid] for cid in b.new_orders]
        state = _state(b)
        for cid, oid in zip(b.new_orders, ids, strict=True):
            state.order_ids[cid] = oid
            row = state.pending.get(cid)
            if row is not None:
                row.id = oid
        b.new_orders.clear()
    if b.updates:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for oid, values in b.updates.items():
            keys = tuple(sorted(values))
            groups.setdefault(keys, []).append({"b_id": oid, **values})
        table = cast(Table, Order.__table__)
        for keys, params in groups.items():
            _bulk_update(session, table, "id", "b_id", keys, params)
        b.updates.clear()
    if b.fills:
        state = _state(b)
        rows = [{"order_id": state.order_ids[cid], **values} for cid, values, _ in b.fills]
        fills = cast(Table, Fill.__table__)
        bulk.insert_rows(session, fills, rows)
        fill_keys = [r["idempotency_key"] for r in rows]
        found = _ids_by(session, fills.c.idempotency_key, fill_keys)
        ids = [found[k] for k in fill_keys]
        legs = [
            {"account_id": state.account_id, "txn_id": txn_id_for(values["idempotency_key"]),
             "book": book, "amount": amount, "order_id": row["order_id"], "fill_id": fill_id,
             "memo": values["idempotency_key"]}
            for row, fill_id, (_, values, fill_legs_) in zip(rows, ids, b.fills, strict=True)
            for book, amount in fill_legs_
        ]
        if legs:
            bulk.insert_rows(session, cast(Table, LedgerEntry.__table__), legs)
        b.fills.clear()
    if b.positions:
        _write_positions(session, _state(b).account_id, b.positions)
        b.positions.clear()
    if b.events:
        bulk.insert_rows(session, cast(Table, Event.__table__), b.events)
        b.events.clear()
    if b.audit:
        audit.append_rows(session, b.audit)
        b.audit.clear()


def _ids_by(session: Session, column: Any, keys: list[str]) -> dict[str, int]:
    """``{key: id}`` of the rows whose unique ``column`` is in ``keys`` (just inserted)."""
    table = column.table
    if session.get_bind().dialect.name == "postgresql":
        # One array parameter, so the statement's text is the same whatever the number of keys;
        # joined as a set (``= ANY(array)`` was planned as a scan of the whole table).
        name = column.name
        sql = (f"SELECT t.{name}, t.id FROM {table.name} AS t "  # noqa: S608 - our own names
               f"JOIN unnest(CAST(:keys AS TEXT[])) AS k(key) ON t.{name} = k.key")
        stmt = text(sql).bindparams(bindparam("keys", type_=ARRAY(String())))
        return {k: int(i) for k, i in session.execute(stmt, {"keys": keys})}
    where = column.in_(keys)
    return dict(session.execute(select(column, table.c.id).where(where)).tuples().all())


def _bulk_update(
    session: Session,
    table: Table,
    key: str,
    key_param: str,
    keys: tuple[str, ...],
    params: list[dict[str, Any]],
    account_id: int | None = None,
) -> None:
    """Set ``keys`` on the rows whose ``key`` column is each param's ``key_param`` (and, given
    ``account_id``, whose ``account_id`` is that); ``updated_at`` becomes now.

    PostgreSQL: one ``UPDATE ... FROM unnest(arrays)`` (psycopg runs an executemany as one
    statement per row, even pipelined; one array per column keeps the statement's text fixed, so
    it is parsed and compiled once). SQLite: one executemany (its driver loops in C).
    """
    if session.get_bind().dialect.name != "postgresql":
        rows = [{key: p[key_param], **{k: p[k] for k in keys}} for p in params]
        bulk.update_rows(session, table, key, rows,
                         where=None if account_id is None else {"account_id": account_id})
        return
    dialect = session.get_bind().dialect
    names = (key, *keys)
    arrays = {f"a_{i}": [p[key_param if i == 0 else n] for p in params]
              for i, n in enumerate(names)}
    sets = ", ".join(f"{n} = v.{n}" for n in keys)
    casts = ", ".join(
        f"CAST(:a_{i} AS {table.c[n].type.compile(dialect=dialect)}[])" for i, n in enumerate(names)
    )
    owner = "" if account_id is None else f" AND {table.name}.account_id = :account_id"
    # Only column names of our own tables are spliced in; every value is a bound parameter.
    sql = (f"UPDATE {table.name} SET {sets}, updated_at = :now "  # noqa: S608
           f"FROM unnest({casts}) AS v({', '.join(names)}) "
           f"WHERE {table.name}.{key} = v.{key}{owner}")
    stmt = text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()),
        *(bindparam(f"a_{i}", type_=ARRAY(table.c[n].type)) for i, n in enumerate(names)),
    )
    session.execute(stmt, {"now": utcnow(), "account_id": account_id, **arrays})


def _write_positions(
    session: Session, account_id: int, changes: dict[str, _PositionChange]
) -> None:
    gone = [t for t, c in changes.items() if c.deleted]
    if gone:
        session.execute(
            delete(Position).where(Position.account_id == account_id, Position.ticker.in_(gone))
        )
    live = {t: (c, c.final) for t, c in changes.items() if c.final is not None}
    if not live:
        return
    existing = set(session.scalars(
        select(Position.ticker).where(Position.account_id == account_id,
                                      Position.ticker.in_(list(live)))
    ))
    table = cast(Table, Position.__table__)
    inserts: list[dict[str, Any]] = []
    updates: dict[bool, list[dict[str, Any]]] = {False: [], True: []}  # by "owner changes"
    for ticker, (change, (qty, avg_cost, realized)) in live.items():
        values: dict[str, Any] = {"qty": qty, "avg_cost": avg_cost, "realized_pnl": realized}
        if ticker in existing:
            if change.created:
                values["strategy"] = change.owner
            updates[change.created].append({"b_ticker": ticker, **values})
        else:
            inserts.append({"account_id": account_id, "ticker": ticker,
                            "strategy": change.owner, **values})
    # One statement per shape rather than a statement (or an ORM object) per ticker.
    for owned, params in updates.items():
        if params:
            keys = ("qty", "avg_cost", "realized_pnl", *(("strategy",) if owned else ()))
            _bulk_update(session, table, "ticker", "b_ticker", keys, params, account_id)
    if inserts:
        bulk.insert_rows(session, table, inserts)


# --- writing events ----------------------------------------------------------------------------


def _event_payload(state: AccountState, order: DomainOrder, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "account_id": state.account_id,
        "account": state.name,
        "client_order_id": order.id,
        "ticker": order.ticker,
        "side": order.side.value,
        "type": order.type.value,
        "qty": order.qty,
    }
    payload.update(extra)
    return payload


def insert_order(
    session: Session,
    state: AccountState,
    order: DomainOrder,
    *,
    status: str,
    strategy: str | None,
    meta: dict[str, Any],
    reject_reason: str | None = None,
) -> int | None:
    """Insert an ``orders`` row for ``order`` (with the batch: its id once flushed)."""
    b = session.info.get(_BATCH_KEY)
    if b is not None and order.parent_id and order.parent_id in b.new_orders:
        flush_batch(session)  # the parent's id is needed now (rare: entries are stored before)
    parent = state.order_ids.get(order.parent_id) if order.parent_id else None
    if order.trail_amount is not None:
        meta = {**meta, "trail_amount": order.trail_amount}
    if order.tag:
        meta = {**meta, "tag": order.tag}
    row = _order_values(
        state, order.id, ticker=order.ticker, side=order.side.value, type_=order.type.value,
        qty=order.qty, limit_price=order.limit_price, stop_price=order.stop_price,
        trail_pct=order.trail_percent, tif=order.tif.value, status=status, parent_id=parent,
        oco_group=order.oco_group, strategy=strategy, reason=_meta_text(meta),
        reject_reason=reject_reason,
    )
    state.meta[order.id] = meta
    if b is not None:
        b.state = state
        b.new_orders[order.id] = row
        return None
    orders = cast(Table, Order.__table__)
    oid: int = session.execute(insert(orders).returning(orders.c.id), row).scalar_one()
    state.order_ids[order.id] = oid
    return oid


def _order_values(
    state: AccountState, client_order_id: str, *, ticker: str, side: str, type_: str, qty: int,
    limit_price: float | None, stop_price: float | None, trail_pct: float | None, tif: str,
    status: str, parent_id: int | None, oco_group: str | None, strategy: str | None,
    reason: str, reject_reason: str | None,
) -> dict[str, Any]:
    """An ``orders`` row as column values; every row has the same keys (one executemany), and
    every column a later update of the same batch may set."""
    return {
        "account_id": state.account_id, "client_order_id": client_order_id, "ticker": ticker,
        "side": side, "type": type_, "qty": qty, "limit_price": limit_price,
        "stop_price": stop_price, "trail_pct": trail_pct, "time_in_force": tif,
        "status": status, "parent_id": parent_id, "oco_group": oco_group, "strategy": strategy,
        "reason": reason, "reject_reason": reject_reason, "filled_qty": 0,
        "avg_fill_price": None,
    }


def record_events(
    session: Session,
    state: AccountState,
    events: list[OrderEvent],
    *,
    strategy: str | None = None,
) -> None:
    """Write what ``events`` did (rows, ledger legs, audit, live events) in ``session``.

    Inside :func:`batch` the rows are written when the batch is; otherwise before returning.
    """
    with batch(session):
        _batch(session).state = state
        _record(session, state, events, strategy)


def _record(
    session: Session, state: AccountState, events: list[OrderEvent], strategy: str | None
) -> None:
    for event in events:
        if isinstance(event, OrderSubmitted):
            _submitted(session, state, event, strategy)
        elif isinstance(event, OrderFilled):
            _filled(session, state, event)
        elif isinstance(event, OrderCanceled):
            _closed(session, state, event.order, "canceled", str(event.reason), None, event.ts)
        elif isinstance(event, OrderRejected):
            _closed(session, state, event.order, "rejected", event.detail, str(event.reason),
                    event.ts)


def _owner(state: AccountState, order: DomainOrder) -> str | None:
    root = order.parent_id or order.id
    meta = state.meta.get(root) or {}
    owner = meta.get("strategy")
    return owner if isinstance(owner, str) else None


def _submitted(
    session: Session, state: AccountState, event: OrderSubmitted, strategy: str | None
) -> None:
    order = event.order
    owner = strategy or _owner(state, order)
    if not known(state, session, order.id):
        meta = state.meta.get(order.id) or {"strategy": owner, "purpose": (
            "exit_leg" if order.parent_id else "manual")}
        insert_order(session, state, order, status="open", strategy=owner, meta=meta)
    else:
        state.pending.pop(order.id, None)
        _update_order(session, state, order.id, status="open", qty=order.qty,
                      type=order.type.value, limit_price=order.limit_price,
                      stop_price=order.stop_price)
    state.persisted[order.id] = (order.type.value, order.stop_price, order.limit_price)
    detail = _event_payload(state, order, status="open", bar_ts=event.ts.isoformat())
    audit_entry(session, ACTOR, "order.submitted", order.id[:200], detail)
    add_event(session, "order", detail)


def _filled(session: Session, state: AccountState, event: OrderFilled) -> None:
    order, fill = event.order, event.fill
    ticker = fill.ticker
    _update_order(session, state, order.id, status="filled", filled_qty=fill.qty,
                  avg_fill_price=fill.price)
    key = f"{order.id}:fill"
    values = {"account_id": state.account_id, "ticker": ticker, "side": fill.side.value,
              "qty": fill.qty, "price": fill.price, "fee": money(fill.fee), "ts": fill.ts,
              "idempotency_key": key}
    # The book's ledger has applied every fill of the bar already; the shadow ledger applies them
    # one at a time, so each fill's rows see the position as that fill left it.
    before = state.basis.get(ticker, ZERO)
    realized = state.shadow.apply(fill)
    pos = state.shadow.position(ticker)
    after = ZERO if pos is None else money(pos.qty * pos.avg_cost)  # _basis, one snapshot
    legs = fill_legs(ticker, before, after, fill.fee, realized)
    _batch(session).fills.append((order.id, values, legs))
    for book, amount in legs:
        if book == "cash":
            state.cash += amount
    _store_position(session, state, ticker, after, pos, order)
    detail = _event_payload(state, order, status="filled", price=fill.price, qty=fill.qty,
                            fee=str(money(fill.fee)), realized=round(realized, 6),
                            bar_ts=fill.ts.isoformat())
    audit_entry(session, ACTOR, "order.filled", order.id[:200], detail)
    add_event(session, "fill", detail)


def _store_position(
    session: Session,
    state: AccountState,
    ticker: str,
    basis: Decimal,
    pos: Any,
    order: DomainOrder,
) -> None:
    change = _batch(session).positions.setdefault(ticker, _PositionChange())
    if pos is None:
        change.deleted, change.created, change.final = True, False, None
        state.basis.pop(ticker, None)
        state.strategy_of.pop(ticker, None)
        state.entry_ts.pop(ticker, None)
        return
    # The row exists exactly while the account holds the ticker (``basis`` has it).
    if ticker not in state.basis:
        owner = _owner(state, order)
        change.created, change.owner = True, owner
        state.strategy_of[ticker] = owner
    state.basis[ticker] = basis
    change.final = (pos.qty, money(pos.avg_cost), money(pos.realized_pnl))


def _closed(
    session: Session,
    state: AccountState,
    order: DomainOrder,
    status: str,
    reason: str,
    reject_reason: str | None,
    ts: datetime,
) -> None:
    state.pending.pop(order.id, None)
    state.persisted.pop(order.id, None)
    if not known(state, session, order.id):
        owner = _owner(state, order)
        insert_order(session, state, order, status=status, strategy=owner,
                     meta={"strategy": owner, "note": reason} if owner else {"note": reason},
                     reject_reason=reject_reason)
    else:
        meta = {**state.meta.get(order.id, {}), "note": reason}
        _update_order(session, state, order.id, status=status, reject_reason=reject_reason,
                      reason=_meta_text(meta))
    action = "order.rejected" if status == "rejected" else "order.canceled"
    detail = _event_payload(state, order, status=status, reason=reject_reason or reason,
                            detail=reason, bar_ts=ts.isoformat())
    audit_entry(session, ACTOR, action, order.id[:200], detail)
    add_event(session, "order", detail)


def sync_live_orders(session: Session, state: AccountState) -> None:
    """Store what :func:`falcon.execution.fills.after_bar` changed (trailing stops, triggers)."""
    with batch(session):
        _batch(session).state = state
        for order in state.book.open_orders:
            now = (order.type.value, order.stop_price, order.limit_price)
            if state.persisted.get(order.id) != now and known(state, session, order.id):
                _update_order(session, state, order.id, type=now[0], stop_price=now[1],
                              limit_price=now[2])
                state.persisted[order.id] = now


def insert_pending(
    session: Session,
    state: AccountState,
    client_order_id: str,
    *,
    ticker: str,
    side: Side,
    strategy: str | None,
    meta: dict[str, Any],
    qty: int = 0,
    kind: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
    stop_price: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> OrderRow:
    """A ``pending`` order: decided, not yet in the book (entries are sized at the next open).

    ``qty`` 0 means "sized when released". The row is the idempotency anchor: a second decision
    with the same ``client_order_id`` finds it and does nothing.
    """
    row = hold_pending(state, client_order_id, ticker=ticker, side=side, meta=meta, qty=qty,
                       kind=kind, limit_price=limit_price, stop_price=stop_price, tif=tif)
    with batch(session):
        store_pending(session, state, client_order_id, strategy=strategy)
        detail = {"account": state.name, "client_order_id": client_order_id, "ticker": ticker,
                  "side": side.value, "strategy": strategy, **meta}
        audit_entry(session, ACTOR, "order.decided", client_order_id[:200], detail)
    return row


def hold_pending(
    state: AccountState,
    client_order_id: str,
    *,
    ticker: str,
    side: Side,
    meta: dict[str, Any],
    qty: int = 0,
    kind: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
    stop_price: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> OrderRow:
    """A pending order in memory only (a quiet retry, see :mod:`falcon.paper.streaks`): what
    :func:`insert_pending` keeps, without the row and its audit entry."""
    row = OrderRow(client_order_id=client_order_id, ticker=ticker, side=side.value,
                   type=kind.value, qty=qty, limit_price=limit_price, stop_price=stop_price,
                   time_in_force=tif.value)
    state.meta[client_order_id] = meta
    state.pending[client_order_id] = row
    return row


def store_pending(
    session: Session, state: AccountState, client_order_id: str, *, strategy: str | None
) -> None:
    """Add the ``orders`` row (status ``pending``) of a pending order held in memory to the batch.

    For a quiet entry that is about to be recorded: what follows in the batch (its rejection, or
    its submission and fill) updates the unflushed row, so it is written once, exactly as the
    row of an entry that was never quiet ends up.
    """
    row = state.pending[client_order_id]
    with batch(session):
        b = _batch(session)
        b.state = state
        b.new_orders[client_order_id] = _order_values(
            state, client_order_id, ticker=row.ticker, side=row.side, type_=row.type,
            qty=row.qty, limit_price=row.limit_price, stop_price=row.stop_price, trail_pct=None,
            tif=row.time_in_force, status="pending", parent_id=None, oco_group=None,
            strategy=strategy, reason=_meta_text(state.meta[client_order_id]),
            reject_reason=None,
        )


def domain_from_row(row: OrderRow, meta: dict[str, Any], qty: int | None = None) -> DomainOrder:
    """The domain order of a stored row (with ``qty`` when it is sized at release)."""
    return _domain_order(row, None, meta, qty)
