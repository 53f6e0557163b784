"""Accounts, positions, orders, fills; cancel, halt and resume."""

from __future__ import annotations

from flask import jsonify
from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import Fill, Order, PaperAccount, Position
from falcon.errors import NotFound
from falcon.web import actions, serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import json_object, optional_id, paged, query_int, query_str
from falcon.web.extensions import db
from falcon.web.queries import accounts_with_positions
from falcon.web.security import admin_required, current_user


def _actor() -> str:
    user = current_user()
    return user.username if user is not None else "unknown"


def _account_json(account: PaperAccount) -> dict[str, object]:
    held = db.session.scalars(
        select(Position).where(Position.account_id == account.id, Position.qty != 0)
    ).all()
    return serialize.account(account, list(held))


@bp.get("/me")
def me() -> Response:
    """Who the credentials belong to."""
    user = current_user()
    if user is None:  # pragma: no cover - the guard answers 401 first
        raise NotFound("no user")
    return jsonify(serialize.user(user))


@bp.get("/accounts")
def accounts() -> Response:
    """Every paper account with cash, book equity and halt state."""
    items = [serialize.account(a, p) for a, p in accounts_with_positions(db.session)]
    return jsonify({"items": items, "next_before_id": None})


@bp.get("/accounts/<id:account_id>")
def account(account_id: int) -> Response:
    """One paper account, with the entries its trader holds in memory only (quiet retries,
    entries if flat: see ``falcon paper status``)."""
    from falcon.paper.admin import held_entries  # the paper package, only where it is needed

    row = db.session.get(PaperAccount, account_id)
    if row is None:
        raise NotFound(f"no paper account {account_id}")
    held, warning = held_entries(row.quiet_state)
    return jsonify({**_account_json(row), "held_entries": held, "held_entries_warning": warning})


@bp.get("/positions")
def positions() -> Response:
    """Open positions, optionally of one account."""
    stmt = select(Position).where(Position.qty != 0).order_by(Position.account_id, Position.ticker)
    account_id = query_int("account_id", minimum=1)
    if account_id is not None:
        stmt = stmt.where(Position.account_id == account_id)
    items = [serialize.position(p) for p in db.session.scalars(stmt)]
    return jsonify({"items": items, "next_before_id": None})


@bp.get("/orders")
def orders() -> Response:
    """Orders, newest first; filter by ``account_id`` and ``status``."""
    stmt = select(Order)
    account_id = query_int("account_id", minimum=1)
    status = query_str("status", max_length=16)
    if account_id is not None:
        stmt = stmt.where(Order.account_id == account_id)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    return paged(db.session, stmt, Order.id, serialize.order)


@bp.get("/orders/<id:order_id>")
def order(order_id: int) -> Response:
    """One order."""
    row = db.session.get(Order, order_id)
    if row is None:
        raise NotFound(f"no order {order_id}")
    return jsonify(serialize.order(row))


@bp.post("/orders/<id:order_id>/cancel")
@admin_required
def cancel_order(order_id: int) -> Response:
    """Cancel an open order (409 when it is already final)."""
    row = actions.cancel_order(db.session, order_id, actor=_actor())
    db.session.commit()
    return jsonify(serialize.order(row))


@bp.get("/fills")
def fills() -> Response:
    """Fills, newest first; filter by ``account_id``."""
    stmt = select(Fill)
    account_id = query_int("account_id", minimum=1)
    if account_id is not None:
        stmt = stmt.where(Fill.account_id == account_id)
    return paged(db.session, stmt, Fill.id, serialize.fill)


@bp.post("/paper/halt")
@admin_required
def halt() -> Response:
    """Halt one account (``{"account_id": 1}``) or all; ``reason`` is recorded."""
    body = json_object()
    rows = actions.halt(
        db.session,
        account_id=optional_id(body, "account_id"),
        reason=body.get("reason"),
        actor=_actor(),
    )
    db.session.commit()
    return jsonify({"items": [_account_json(a) for a in rows], "next_before_id": None})


@bp.post("/paper/resume")
@admin_required
def resume() -> Response:
    """Resume one account or all."""
    body = json_object()
    rows = actions.resume(
        db.session,
        account_id=optional_id(body, "account_id"),
        reason=body.get("reason"),
        actor=_actor(),
    )
    db.session.commit()
    return jsonify({"items": [_account_json(a) for a in rows], "next_before_id": None})
