"""Strategies, their backtests, and starting a backtest (a queued job)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from falcon.db.models import BacktestEquity, BacktestRun, Strategy
from falcon.errors import ValidationError
from falcon.web import actions, serialize
from falcon.web.extensions import db
from falcon.web.security import current_user

bp = Blueprint("strategies", __name__, url_prefix="/strategies")


@bp.route("/")
def index() -> str:
    """Every strategy and the latest backtests."""
    s = db.session
    return render_template(
        "strategies/index.html",
        strategies=s.scalars(select(Strategy).order_by(Strategy.name)).all(),
        backtests=s.scalars(select(BacktestRun).order_by(BacktestRun.id.desc()).limit(50)).all(),
    )


@bp.route("/<id:strategy_id>")
def detail(strategy_id: int) -> str | tuple[str, int]:
    """One strategy: its spec, its backtests and the form that starts another."""
    strategy = db.session.get(Strategy, strategy_id)
    if strategy is None:
        abort(404, f"no strategy {strategy_id}")
    runs = db.session.scalars(
        select(BacktestRun)
        .where(BacktestRun.strategy_id == strategy_id)
        .order_by(BacktestRun.id.desc())
    ).all()
    return render_template("strategies/detail.html", strategy=strategy, backtests=runs)


@bp.route("/<id:strategy_id>/backtest", methods=["POST"])
def start_backtest(strategy_id: int) -> Response:
    """Queue a backtest of this strategy from the form (symbols, start, end)."""
    user = current_user()
    body = {
        "strategy_id": strategy_id,
        "symbols": [t for t in request.form.get("symbols", "").replace(",", " ").split() if t],
        "start": request.form.get("start") or None,
        "end": request.form.get("end") or None,
    }
    try:
        job = actions.enqueue_backtest(db.session, body, actor=user.username if user else "unknown")
    except ValidationError as exc:
        flash("; ".join(exc.problems) or str(exc), "error")
        return redirect(url_for("strategies.detail", strategy_id=strategy_id))
    db.session.commit()
    flash(f"Backtest queued as job {job.id}.", "info")
    return redirect(url_for("strategies.detail", strategy_id=strategy_id))


@bp.route("/backtests/<id:run_id>")
def backtest(run_id: int) -> str:
    """One backtest: metrics, trades, the equity curve's data and the fill conventions."""
    run = db.session.get(BacktestRun, run_id)
    if run is None:
        abort(404, f"no backtest {run_id}")
    equity = db.session.scalars(
        select(BacktestEquity).where(BacktestEquity.run_id == run_id).order_by(BacktestEquity.ts)
    ).all()
    return render_template(
        "strategies/backtest.html",
        run=run,
        detail=serialize.backtest(run, detail=True),
        # The chart reads this (embedded with |tojson); a vendored chart library draws it later.
        equity_json=[{"ts": e.ts.isoformat(), "equity": e.equity} for e in equity],
    )
