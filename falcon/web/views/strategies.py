"""Strategies, their backtests, and starting a backtest (a queued job)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from falcon.db.models import BacktestRun, DataImport, Job, Strategy
from falcon.errors import ValidationError
from falcon.web import actions, app_settings, charts, serialize
from falcon.web.extensions import db
from falcon.web.security import current_user

# Backtest jobs shown on a strategy's page: its newest among this many (payloads are JSON, which
# SQLite cannot index, so the filter by strategy runs here over a short list).
RECENT_JOBS = 50

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
    return render_template(
        "strategies/detail.html", strategy=strategy, backtests=runs, jobs=_jobs(strategy_id)
    )


def _jobs(strategy_id: int) -> list[dict[str, Any]]:
    """This strategy's unfinished backtest jobs, and the one named by ``?job=`` (just queued)."""
    named = request.args.get("job", type=int)
    recent = db.session.scalars(
        select(Job).where(Job.kind == "backtest").order_by(Job.id.desc()).limit(RECENT_JOBS)
    )
    return [
        serialize.job(j)
        for j in recent
        if (j.payload or {}).get("strategy_id") == strategy_id
        and (j.id == named or j.status in ("queued", "running"))
    ]


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
    # The page follows the named job (status, progress, then a link to its result).
    return redirect(url_for("strategies.detail", strategy_id=strategy_id, job=job.id))


# Bookkeeping the store keeps beside the figures (see falcon.backtest.store): not metrics.
_NOT_METRICS = frozenset({"kind", "job_id", "config", "trade_extras", "parent_run_id"})
_MONEY_METRICS = frozenset({"final_equity", "expectancy"})


def metric_rows(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(label, text)`` for each scalar figure of a run, formatted by its kind."""
    rows = []
    for key, value in (metrics or {}).items():
        if key in _NOT_METRICS or isinstance(value, dict | list):
            continue
        label = key.removesuffix("_pct").replace("_", " ")
        if value is None:
            text = "–"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            text = str(value)
        elif key.endswith("_pct"):
            label, text = f"{label} (%)", f"{value:,.2f}"
        elif key in _MONEY_METRICS:
            text = f"{value:,.2f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"
        rows.append((label, text))
    return rows


@bp.route("/backtests/<id:run_id>")
def backtest(run_id: int) -> str:
    """One backtest: metrics, equity, drawdown, trades on candles, conventions, and a re-run form.

    ``?ticker=`` picks whose candles to draw (default: the first ticker that traded).
    """
    s = db.session
    run = s.get(BacktestRun, run_id)
    if run is None:
        abort(404, f"no backtest {run_id}")
    settings = app_settings()
    benchmark = charts.benchmark_ticker(settings, s.scalar(select(func.max(DataImport.id))))
    equity, drawdown = charts.backtest_equity(s, settings, run, benchmark)
    ticker = charts.chart_ticker(run, request.args.get("ticker"))
    price = charts.price_chart(settings, run, ticker) if ticker else None
    tickers = sorted({*(t for t in run.symbols or [] if isinstance(t, str)),
                      *(t.ticker for t in run.trades)})
    return render_template(
        "strategies/backtest.html",
        run=run,
        metrics=metric_rows(run.metrics),
        costs=(run.metrics or {}).get("config") or {},
        detail=serialize.backtest(run, detail=True),
        equity_chart=equity,
        drawdown_chart=drawdown,
        price_chart=price,
        ticker=ticker,
        tickers=tickers,
    )
