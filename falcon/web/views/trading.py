"""Paper trading: accounts (halt/resume), positions, orders (cancel) and fills (live)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from falcon.db.models import Fill, Order
from falcon.web import actions, serialize
from falcon.web.extensions import db
from falcon.web.queries import accounts_with_positions
from falcon.web.security import current_user

bp = Blueprint("trading", __name__, url_prefix="/trading")


def _actor() -> str:
    user = current_user()
    return user.username if user is not None else "unknown"


@bp.route("/")
def index() -> str:
    """Accounts, positions, open and recent orders, recent fills."""
    s = db.session
    held = accounts_with_positions(s)
    open_orders = s.scalars(
        select(Order)
        .where(Order.status.in_(actions.CANCELABLE))
        .order_by(Order.id.desc())
        .limit(200)
    ).all()
    recent = s.scalars(select(Order).order_by(Order.id.desc()).limit(50)).all()
    fills = s.scalars(select(Fill).order_by(Fill.id.desc()).limit(50)).all()
    return render_template(
        "trading/index.html",
        accounts=[serialize.account(a, p) for a, p in held],
        positions=[(a, p) for a, ps in held for p in ps],
        open_orders=open_orders,
        orders=recent,
        fills=fills,
        cancelable=actions.CANCELABLE,
    )


def _account_id() -> int | None:
    raw = request.form.get("account_id", "")
    return actions.valid_id(int(raw), "account_id") if raw.isdigit() else None


@bp.route("/halt", methods=["POST"])
def halt() -> Response:
    """Halt one account (``account_id``) or all of them."""
    accounts = actions.halt(
        db.session, account_id=_account_id(), reason=request.form.get("reason"), actor=_actor()
    )
    db.session.commit()
    flash(f"Halted {', '.join(a.name for a in accounts) or 'no accounts'}.", "info")
    return redirect(url_for("trading.index"))


@bp.route("/resume", methods=["POST"])
def resume() -> Response:
    """Resume one account (``account_id``) or all of them."""
    accounts = actions.resume(
        db.session, account_id=_account_id(), reason=request.form.get("reason"), actor=_actor()
    )
    db.session.commit()
    flash(f"Resumed {', '.join(a.name for a in accounts) or 'no accounts'}.", "info")
    return redirect(url_for("trading.index"))


@bp.route("/orders/<id:order_id>/cancel", methods=["POST"])
def cancel(order_id: int) -> Response:
    """Cancel an open order."""
    order = actions.cancel_order(db.session, order_id, actor=_actor())
    db.session.commit()
    flash(f"Cancelled order {order.id} ({order.ticker}).", "info")
    return redirect(url_for("trading.index"))
