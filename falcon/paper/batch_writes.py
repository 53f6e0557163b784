"""The batch buffer: the rows of one trader batch, collected in event order and written at once.

Inside :func:`batch` the writers of :mod:`falcon.paper.order_rows` (and :func:`audit_entry`,
:func:`add_event`) only append to the session's :class:`Batch`; :func:`flush_batch` writes it
all in the caller's transaction (so an event and its rows commit together) with one statement
per table where the rows allow it: ``orders`` inserts and updates, ``fills`` with their
``ledger_entries``, ``positions``, ``events`` and ``audit_log``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from falcon import audit
from falcon.db import bulk
from falcon.db.models import Event, Fill, LedgerEntry, Order, Position
from falcon.db.types import UTCDateTime, utcnow
from falcon.paper.books import txn_id_for
from falcon.paper.state import AccountState

__all__ = [
    "Batch",
    "PositionChange",
    "active_batch",
    "add_event",
    "audit_entry",
    "batch",
    "current_batch",
    "flush_batch",
    "known",
]

_BATCH_KEY = "falcon.paper.batch"


@dataclass
class PositionChange:
    """What a batch does to one ``positions`` row (written by :func:`flush_batch`)."""

    deleted: bool = False  # the row was deleted at some point of the batch
    created: bool = False  # the final row is a new one (opened after any deletion)
    final: tuple[int, Decimal, Decimal] | None = None  # qty, avg_cost, realized_pnl
    owner: str | None = None


@dataclass
class Batch:
    """What a batch writes, collected in event order and written by :func:`flush_batch`."""

    state: AccountState | None = None
    # Unflushed ``orders`` rows by client id, as column values (every row has every key).
    new_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # client id -> its parent's client id, for rows whose parent is in ``new_orders`` too
    parent_of: dict[str, str] = field(default_factory=dict)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # orders.id -> new values
    fills: list[tuple[str, dict[str, Any], list[tuple[str, Decimal]]]] = field(
        default_factory=list)  # (client id, fill row, ledger legs)
    positions: dict[str, PositionChange] = field(default_factory=dict)
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
    session.info[_BATCH_KEY] = Batch()
    try:
        yield
        flush_batch(session)
    finally:
        session.info.pop(_BATCH_KEY, None)


def current_batch(session: Session) -> Batch:
    """The batch open on ``session`` (RuntimeError outside one)."""
    found: Batch | None = session.info.get(_BATCH_KEY)
    if found is None:  # pragma: no cover - callers open one
        raise RuntimeError("persist: no batch open")
    return found


def active_batch(session: Session) -> Batch | None:
    """The batch open on ``session``, None outside one."""
    found: Batch | None = session.info.get(_BATCH_KEY)
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
        current_batch(session).audit.append((actor, action, subject, detail))


def add_event(session: Session, kind: str, payload: dict[str, Any]) -> None:
    """An ``events`` row, written with the batch."""
    with batch(session):
        current_batch(session).events.append({"kind": kind, "payload": payload})


def _state(b: Batch) -> AccountState:
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
        _insert_orders(session, b)
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
        found = bulk.insert_returning(session, fills, rows, "idempotency_key")
        ids = [found[r["idempotency_key"]] for r in rows]
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


def _insert_orders(session: Session, b: Batch) -> None:
    """Insert the batch's new ``orders`` rows in the order they were decided (ids ascend with
    it, as a restart rebuilds the book in id order), one statement per run of rows: a row whose
    parent is in the same run starts the next one, once its parent's id is known."""
    orders = cast(Table, Order.__table__)
    state = _state(b)
    rows = list(b.new_orders.items())
    start = 0
    while start < len(rows):
        end = start + 1
        run = {rows[start][0]}
        while end < len(rows) and b.parent_of.get(rows[end][0]) not in run:
            run.add(rows[end][0])
            end += 1
        for cid, row in rows[start:end]:
            parent = b.parent_of.get(cid)
            if parent is not None:
                row["parent_id"] = state.order_ids[parent]
        # One statement and the new ids by the unique client ids (falcon.db.bulk): cheaper
        # than Core's INSERT ... RETURNING batches on both databases.
        found = bulk.insert_returning(session, orders, [r for _, r in rows[start:end]],
                                      "client_order_id")
        for cid, _ in rows[start:end]:
            oid = state.order_ids[cid] = found[cid]
            pending = state.pending.get(cid)
            if pending is not None:
                pending.id = oid
        start = end
    b.new_orders.clear()
    b.parent_of.clear()


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
    session: Session, account_id: int, changes: dict[str, PositionChange]
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
