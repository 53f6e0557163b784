"""Paper trading: accounts (halt/resume), positions, orders (cancel) and fills (live)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import Select, select
from werkzeug.wrappers import Response

from falcon.db.models import Fill, Order, PaperAccount
from falcon.web import actions, serialize
from falcon.web.extensions import db
from falcon.web.queries import accounts_with_positions
from falcon.web.security import admin_required, current_user

bp = Blueprint("trading", __name__, url_prefix="/trading")


def _actor() -> str:
    user = current_user()
    return user.username if user is not None else "unknown"


_EXPORT_LIMIT = 100_000
_TICKER = re.compile(r"^[A-Z0-9.:\-]{1,16}$")


@dataclass(frozen=True)
class Filters:
    """The orders/fills filters of the page and its CSV exports, from the query string."""

    ticker: str | None = None
    account_id: int | None = None
    side: str | None = None
    start: date | None = None
    end: date | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filters:
        """Unknown or malformed values are ignored rather than failing the page."""
        ticker = args.get("ticker", "").strip().upper()
        account = args.get("account_id", "").strip()
        side = args.get("side", "").strip().lower()

        def day(name: str) -> date | None:
            try:
                return date.fromisoformat(args.get(name, "").strip())
            except ValueError:
                return None

        return cls(
            ticker=ticker if _TICKER.match(ticker) else None,
            account_id=int(account) if account.isdigit() and len(account) < 12 else None,
            side=side if side in ("buy", "sell") else None,
            start=day("start"),
            end=day("end"),
        )

    def apply(self, query: Select[Any], model: Any, ts: Any) -> Select[Any]:
        """``query`` narrowed to these filters (dates are New York session days)."""
        if self.ticker:
            query = query.where(model.ticker == self.ticker)
        if self.account_id is not None:
            query = query.where(model.account_id == self.account_id)
        if self.side:
            query = query.where(model.side == self.side)
        if self.start:
            query = query.where(ts >= _ny_midnight(self.start))
        if self.end:
            query = query.where(ts < _ny_midnight(self.end + timedelta(days=1)))
        return query

    def args(self) -> dict[str, str]:
        """The active filters as query arguments (for the export links)."""
        out = {"ticker": self.ticker, "account_id": self.account_id, "side": self.side,
               "start": self.start, "end": self.end}
        return {k: str(v) for k, v in out.items() if v is not None}


def _ny_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), ZoneInfo("America/New_York")).astimezone(UTC)


def _held_entries(accounts: Iterable[PaperAccount]) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries each account's trader holds in memory (:func:`held_entries`), with the
    account's name and bar times as datetimes; and a warning per unreadable account state."""
    from falcon.paper.admin import held_entries  # the paper package is heavy: on first use

    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for account in accounts:
        entries, warning = held_entries(account.quiet_state)
        if warning:
            warnings.append(f"{account.name}: {warning}")
        for entry in entries:
            rows.append(entry | {
                "account": account.name,
                "first_ts": _when(entry["first_ts"]),
                "last_ts": _when(entry["last_ts"]),
            })
    return rows, warnings


def _when(iso: str | None) -> datetime | None:
    return None if iso is None else datetime.fromisoformat(iso)


@bp.route("/")
def index() -> str:
    """Accounts, positions, held entries, open and recent orders, recent fills (orders and fills
    filterable)."""
    from falcon.paper.admin import HELD_ENTRIES_HELP  # the paper package is heavy: on first use

    s = db.session
    filters = Filters.from_args(request.args)
    held = accounts_with_positions(s)
    held_rows, held_warnings = _held_entries(a for a, _ in held)
    open_orders = s.scalars(
        select(Order)
        .where(Order.status.in_(actions.CANCELABLE))
        .order_by(Order.id.desc())
        .limit(200)
    ).all()
    recent = s.scalars(
        filters.apply(select(Order), Order, Order.created_at).order_by(Order.id.desc()).limit(50)
    ).all()
    fills = s.scalars(
        filters.apply(select(Fill), Fill, Fill.ts).order_by(Fill.id.desc()).limit(50)
    ).all()
    return render_template(
        "trading/index.html",
        accounts=[serialize.account(a, p) for a, p in held],
        positions=[(a, p) for a, ps in held for p in ps],
        open_orders=open_orders,
        held_entries=held_rows,
        held_warnings=held_warnings,
        held_help=HELD_ENTRIES_HELP,
        orders=recent,
        fills=fills,
        cancelable=actions.CANCELABLE,
        filters=filters,
    )


def _cell(value: Any) -> Any:
    # Spreadsheets run cells that start with = + - @ as formulas: neutralise text that could.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(name: str, header: list[str], rows: Iterable[Iterable[Any]]) -> Response:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    response = Response(buf.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/fills.csv")
def fills_csv() -> Response:
    """Fills matching the page's filters as CSV (times in UTC, ISO 8601)."""
    filters = Filters.from_args(request.args)
    query = filters.apply(select(Fill), Fill, Fill.ts).order_by(Fill.id).limit(_EXPORT_LIMIT)
    rows = (
        (f.id, f.account_id, f.order_id, f.ts.isoformat(), f.ticker, f.side, f.qty, f.price,
         f.fee)
        for f in db.session.scalars(query)
    )
    return _csv("fills.csv", ["id", "account_id", "order_id", "ts_utc", "ticker", "side", "qty",
                              "price", "fee"], rows)


@bp.route("/orders.csv")
def orders_csv() -> Response:
    """Orders matching the page's filters as CSV."""
    filters = Filters.from_args(request.args)
    query = (filters.apply(select(Order), Order, Order.created_at).order_by(Order.id)
             .limit(_EXPORT_LIMIT))
    rows = (
        (o.id, o.account_id, o.created_at.isoformat(), o.ticker, o.side, o.type, o.qty,
         o.limit_price, o.stop_price, o.time_in_force, o.status, o.filled_qty, o.avg_fill_price,
         o.strategy, o.reject_reason or o.reason)
        for o in db.session.scalars(query)
    )
    return _csv("orders.csv", ["id", "account_id", "created_utc", "ticker", "side", "type", "qty",
                               "limit_price", "stop_price", "tif", "status", "filled_qty",
                               "avg_fill_price", "strategy", "reason"], rows)


def _account_id() -> int | None:
    raw = request.form.get("account_id", "")
    return actions.valid_id(int(raw), "account_id") if raw.isdigit() else None


@bp.route("/halt", methods=["POST"])
@admin_required
def halt() -> Response:
    """Halt one account (``account_id``) or all of them."""
    accounts = actions.halt(
        db.session, account_id=_account_id(), reason=request.form.get("reason"), actor=_actor()
    )
    db.session.commit()
    flash(f"Halted {', '.join(a.name for a in accounts) or 'no accounts'}.", "info")
    return redirect(url_for("trading.index"))


@bp.route("/resume", methods=["POST"])
@admin_required
def resume() -> Response:
    """Resume one account (``account_id``) or all of them."""
    accounts = actions.resume(
        db.session, account_id=_account_id(), reason=request.form.get("reason"), actor=_actor()
    )
    db.session.commit()
    flash(f"Resumed {', '.join(a.name for a in accounts) or 'no accounts'}.", "info")
    return redirect(url_for("trading.index"))


@bp.route("/orders/<id:order_id>/cancel", methods=["POST"])
@admin_required
def cancel(order_id: int) -> Response:
    """Cancel an open order."""
    order = actions.cancel_order(db.session, order_id, actor=_actor())
    db.session.commit()
    flash(f"Cancelled order {order.id} ({order.ticker}).", "info")
    return redirect(url_for("trading.index"))
