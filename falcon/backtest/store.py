"""Backtest runs in the database: ``backtest_runs`` with their trades and equity curve.

One row per run, of one of these kinds (kept in ``metrics["kind"]`` until the table has a
``kind`` column):

* ``backtest``: one spec, one parameter set; its closed trades and the positions still open at
  the end are ``backtest_trades`` rows (open ones have no exit), its equity curve one
  ``backtest_equity`` row per bar timestamp;
* ``optimize``: a parameter search; ``params`` holds the best parameters, ``metrics`` the search
  (objective, grid, the best run's metrics and the ranked results); no trades;
* ``walkforward``: rolling in-sample/out-of-sample windows; ``metrics`` holds each window and the
  aggregate; each window's out-of-sample run is a ``walkforward_oos`` run (trades and equity)
  whose ``metrics["parent_run_id"]`` points here.

Until ``backtest_trades`` has them, each trade's ``bars_held`` and ``fees`` are kept in
``metrics["trade_extras"]`` (lists in the order the trade rows were inserted, i.e. by id).
A run made by a job records ``metrics["job_id"]`` so that a job delivered twice finds its run
instead of writing a second one.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from falcon.backtest.service import Outcome, jsonable

if TYPE_CHECKING:
    from falcon.backtest.optimize import Search
    from falcon.backtest.walkforward import WalkForward
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade
from falcon.errors import NotFound

__all__ = [
    "KINDS",
    "delete_run",
    "find_by_job",
    "get_run",
    "list_runs",
    "load_equity",
    "load_trades",
    "run_detail",
    "run_kind",
    "run_summary",
    "save_outcome",
    "save_run",
    "save_search",
    "save_walkforward",
]

KINDS = ("backtest", "optimize", "walkforward", "walkforward_oos")
_SUMMARY_METRICS = ("return_pct", "cagr_pct", "max_drawdown_pct", "sharpe", "trades",
                    "final_equity")


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def save_run(
    session: Session,
    *,
    kind: str,
    strategy_name: str,
    spec: dict[str, Any],
    params: dict[str, Any],
    symbols: list[str],
    start: date | None,
    end: date | None,
    metrics: dict[str, Any] | None,
    status: str = "done",
    error: str | None = None,
    strategy_id: int | None = None,
    job_id: int | None = None,
) -> int:
    """Insert a run row without trades or equity (an optimisation, a walk-forward, a failure)."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    body = jsonable(dict(metrics or {}))
    body["kind"] = kind
    if job_id is not None:
        body["job_id"] = job_id
    run = BacktestRun(strategy_id=strategy_id, strategy_name=strategy_name[:120],
                      spec=jsonable(spec), params=jsonable(params), symbols=list(symbols),
                      start=start, end=end, status=status, metrics=body,
                      error=error[:2000] if error else None)
    session.add(run)
    session.flush()
    return run.id


def save_outcome(
    session: Session,
    outcome: Outcome,
    *,
    kind: str = "backtest",
    strategy_id: int | None = None,
    job_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Store a finished backtest: the run (resolved spec, params, data range, metrics), its
    trades and its equity curve. Returns the run's id; the caller commits."""
    result = outcome.result
    spec = outcome.spec
    trades = pl.concat([result.trades, result.open_trades], how="vertical_relaxed")
    config = result.config
    metrics = dict(outcome.metrics)
    metrics.update({
        "config": {"cash": config.cash, "commission": config.commission,
                   "commission_per_share": config.commission_per_share,
                   "slippage_bps": config.slippage_bps},
        "timeframe": spec.timeframe,
        "warmup_bars": spec.warmup_bars,
        "warmup_from": outcome.window.warmup_from,
        "bars": result.equity.height,
        "open_trades": result.open_trades.height,
        "rejections": result.rejections.height,
        "trade_extras": {"bars_held": trades.get_column("bars_held").to_list(),
                         "fees": trades.get_column("fees").to_list()},
        **(extra or {}),
    })
    run_id = save_run(
        session, kind=kind, strategy_name=spec.name, spec=spec.resolved_document(),
        params=dict(spec.params), symbols=list(outcome.symbols),
        start=outcome.window.start or outcome.first, end=outcome.window.end or outcome.last,
        metrics=metrics, strategy_id=strategy_id, job_id=job_id,
    )
    if trades.height:
        rows = [
            {"run_id": run_id, "ticker": t["ticker"], "side": t["side"], "qty": int(t["qty"]),
             "entry_ts": _utc(t["entry_ts"]), "entry_price": float(t["entry_price"]),
             "exit_ts": _utc(t["exit_ts"]), "exit_price": t["exit_price"],
             "pnl": jsonable(t["pnl"]), "return_pct": jsonable(t["return_pct"]),
             "exit_reason": t["exit_reason"]}
            for t in trades.iter_rows(named=True)
        ]
        session.execute(insert(BacktestTrade), rows)
    if result.equity.height:
        session.execute(insert(BacktestEquity), [
            {"run_id": run_id, "ts": _utc(ts), "equity": float(eq), "cash": float(cash)}
            for ts, eq, cash in result.equity.select("ts", "equity", "cash").iter_rows()
        ])
    return run_id


_TOP_RESULTS = 100  # ranked candidates kept in an optimisation's row


def save_search(
    session: Session,
    search: Search,
    *,
    document: dict[str, Any],
    strategy_name: str,
    config: dict[str, Any],
    strategy_id: int | None = None,
    job_id: int | None = None,
) -> int:
    """Store an optimisation: ``params`` = the best parameters, the search in ``metrics``."""
    best = search.best
    return save_run(
        session, kind="optimize", strategy_name=strategy_name, spec=document,
        params={**search.fixed, **(best.params if best else {})}, symbols=list(search.symbols),
        start=search.start, end=search.end,
        metrics={**search.as_dict(top=_TOP_RESULTS), "config": config},
        status="done" if best else "failed",
        error=None if best else "no candidate could run", strategy_id=strategy_id,
        job_id=job_id,
    )


def save_walkforward(
    session: Session,
    wf: WalkForward,
    *,
    document: dict[str, Any],
    strategy_name: str,
    config: dict[str, Any],
    strategy_id: int | None = None,
    job_id: int | None = None,
) -> int:
    """Store a walk-forward run and one ``walkforward_oos`` run per traded window."""
    summary = wf.as_dict()
    first = wf.folds[0].fold.train_start if wf.folds else None
    last = wf.folds[-1].fold.test_end if wf.folds else None
    run_id = save_run(
        session, kind="walkforward", strategy_name=strategy_name, spec=document,
        params=dict(wf.settings.get("fixed") or {}), symbols=list(wf.symbols), start=first,
        end=last, metrics={**summary, "config": config},
        status="done" if wf.aggregate else "failed",
        error=None if wf.aggregate else "no window could be traded",
        strategy_id=strategy_id, job_id=job_id,
    )
    window_runs: list[int | None] = []
    for fold in wf.folds:
        if fold.outcome is None:
            window_runs.append(None)
            continue
        window_runs.append(save_outcome(
            session, fold.outcome, kind="walkforward_oos", strategy_id=strategy_id,
            extra={"parent_run_id": run_id, "window": fold.fold.index,
                   "in_sample": fold.in_sample}))
    run = get_run(session, run_id)
    metrics = copy.deepcopy(run.metrics or {})
    for entry, child in zip(metrics.get("folds", []), window_runs, strict=False):
        entry["run_id"] = child
    run.metrics = metrics
    flag_modified(run, "metrics")  # JSON columns do not track changes inside them
    session.flush()
    return run_id


# --- reading ---------------------------------------------------------------------------------


def get_run(session: Session, run_id: int) -> BacktestRun:
    """The run ``run_id`` (NotFound when there is none)."""
    run = session.get(BacktestRun, run_id)
    if run is None:
        raise NotFound(f"backtest run {run_id} does not exist")
    return run


def run_kind(run: BacktestRun) -> str:
    """The run's kind (``backtest`` for rows written before kinds existed)."""
    return str((run.metrics or {}).get("kind", "backtest"))


def list_runs(session: Session, *, kind: str | None = None, limit: int = 50) -> list[BacktestRun]:
    """The newest runs first, optionally of one kind."""
    stmt = select(BacktestRun).order_by(BacktestRun.id.desc())
    if kind is None:
        return list(session.scalars(stmt.limit(limit)))
    # The kind lives in JSON for now: filter in Python over a bounded window of recent rows.
    found = [r for r in session.scalars(stmt.limit(max(limit * 20, 1000))) if run_kind(r) == kind]
    return found[:limit]


def find_by_job(session: Session, job_id: int, kind: str) -> BacktestRun | None:
    """The top-level run a job already wrote (a job may be delivered more than once)."""
    stmt = (select(BacktestRun)
            .where(BacktestRun.metrics["job_id"].as_integer() == job_id)
            .order_by(BacktestRun.id.desc()))
    for run in session.scalars(stmt):
        if run_kind(run) == kind:
            return run
    return None


def delete_run(session: Session, run_id: int) -> None:
    """Remove a run with its trades and equity (and, for a walk-forward, its window runs)."""
    children = [r.id for r in session.scalars(
        select(BacktestRun).where(BacktestRun.metrics["parent_run_id"].as_integer() == run_id))]
    for rid in [*children, run_id]:
        session.execute(delete(BacktestTrade).where(BacktestTrade.run_id == rid))
        session.execute(delete(BacktestEquity).where(BacktestEquity.run_id == rid))
        session.execute(delete(BacktestRun).where(BacktestRun.id == rid))


def load_trades(session: Session, run_id: int) -> pl.DataFrame:
    """A run's trades (closed, then any still open at the end) with bars_held and fees."""
    run = get_run(session, run_id)
    rows = session.scalars(select(BacktestTrade).where(BacktestTrade.run_id == run_id)
                           .order_by(BacktestTrade.id)).all()
    extras = (run.metrics or {}).get("trade_extras") or {}
    held, fees = extras.get("bars_held") or [], extras.get("fees") or []
    return pl.DataFrame(
        [{"ticker": t.ticker, "side": t.side, "qty": t.qty, "entry_ts": t.entry_ts,
          "entry_price": t.entry_price, "exit_ts": t.exit_ts, "exit_price": t.exit_price,
          "pnl": t.pnl, "return_pct": t.return_pct, "exit_reason": t.exit_reason,
          "bars_held": held[i] if i < len(held) else None,
          "fees": fees[i] if i < len(fees) else None}
         for i, t in enumerate(rows)],
        schema={"ticker": pl.String, "side": pl.String, "qty": pl.Int64,
                "entry_ts": pl.Datetime("us", "UTC"), "entry_price": pl.Float64,
                "exit_ts": pl.Datetime("us", "UTC"), "exit_price": pl.Float64,
                "pnl": pl.Float64, "return_pct": pl.Float64, "exit_reason": pl.String,
                "bars_held": pl.Int64, "fees": pl.Float64},
    )


def load_equity(session: Session, run_id: int) -> pl.DataFrame:
    """A run's equity curve: ``ts, equity, cash`` in time order."""
    rows = session.execute(select(BacktestEquity.ts, BacktestEquity.equity, BacktestEquity.cash)
                           .where(BacktestEquity.run_id == run_id)
                           .order_by(BacktestEquity.ts)).all()
    return pl.DataFrame([tuple(r) for r in rows], orient="row",
                        schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Float64,
                                "cash": pl.Float64})


def run_summary(run: BacktestRun) -> dict[str, Any]:
    """One line of ``falcon backtest list``: the run and its headline figures."""
    metrics = run.metrics or {}
    out: dict[str, Any] = {
        "id": run.id, "kind": run_kind(run), "strategy": run.strategy_name,
        "strategy_id": run.strategy_id, "params": run.params or {}, "symbols": run.symbols or [],
        "start": run.start, "end": run.end, "status": run.status, "error": run.error,
        "created_at": run.created_at,
    }
    if out["kind"] == "optimize":
        best = metrics.get("best") or {}
        out.update({k: best.get(k) for k in _SUMMARY_METRICS})
    elif out["kind"] == "walkforward":
        agg = metrics.get("aggregate") or {}
        out.update({k: agg.get(k) for k in _SUMMARY_METRICS})
    else:
        out.update({k: metrics.get(k) for k in _SUMMARY_METRICS})
    return out


def run_detail(session: Session, run_id: int, *, trades: bool = True) -> dict[str, Any]:
    """``falcon backtest show``: the run, its spec, metrics and (optionally) its trades."""
    run = get_run(session, run_id)
    out = run_summary(run)
    metrics = {k: v for k, v in (run.metrics or {}).items() if k != "trade_extras"}
    out.update({"spec": run.spec, "metrics": metrics})
    if trades and out["kind"] in ("backtest", "walkforward_oos"):
        frame = load_trades(session, run_id)
        out["trades"] = jsonable(frame.to_dicts())
        out["equity_points"] = session.scalar(
            select(func.count()).select_from(BacktestEquity)
            .where(BacktestEquity.run_id == run_id))
    return out
