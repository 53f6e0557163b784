"""Strategies, backtests (list, one, start) and jobs."""

from __future__ import annotations

from flask import jsonify, url_for
from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import BacktestRun, Job, Strategy
from falcon.errors import NotFound
from falcon.web import actions, serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import json_object, paged, query_int, query_str
from falcon.web.extensions import db
from falcon.web.security import current_user


@bp.get("/strategies")
def strategies() -> Response:
    """Strategies (without specs), newest first; filter by ``source`` and ``status``."""
    stmt = select(Strategy)
    source, status = query_str("source", max_length=16), query_str("status", max_length=16)
    if source is not None:
        stmt = stmt.where(Strategy.source == source)
    if status is not None:
        stmt = stmt.where(Strategy.status == status)
    return paged(db.session, stmt, Strategy.id, serialize.strategy)


@bp.get("/strategies/<id:strategy_id>")
def strategy(strategy_id: int) -> Response:
    """One strategy with its spec."""
    row = db.session.get(Strategy, strategy_id)
    if row is None:
        raise NotFound(f"no strategy {strategy_id}")
    return jsonify(serialize.strategy(row, with_spec=True))


@bp.get("/backtests")
def backtests() -> Response:
    """Backtest runs with their metrics, newest first; filter by ``strategy_id``."""
    stmt = select(BacktestRun)
    strategy_id = query_int("strategy_id", minimum=1)
    if strategy_id is not None:
        stmt = stmt.where(BacktestRun.strategy_id == strategy_id)
    return paged(db.session, stmt, BacktestRun.id, serialize.backtest)


@bp.get("/backtests/<id:run_id>")
def backtest(run_id: int) -> Response:
    """One backtest: metrics, spec, params and trades."""
    row = db.session.get(BacktestRun, run_id)
    if row is None:
        raise NotFound(f"no backtest {run_id}")
    return jsonify(serialize.backtest(row, detail=True))


@bp.post("/backtests")
def start_backtest() -> tuple[Response, int]:
    """Queue a backtest job; 202 with the job and where to follow it."""
    user = current_user()
    job = actions.enqueue_backtest(
        db.session, json_object(), actor=user.username if user else "unknown"
    )
    db.session.commit()
    status_url = url_for("api_v1.job", job_id=job.id)
    response = jsonify({"job": serialize.job(job), "status_url": status_url})
    response.headers["Location"] = status_url
    return response, 202


@bp.get("/jobs/<id:job_id>")
def job(job_id: int) -> Response:
    """A job's status, progress and result."""
    row = db.session.get(Job, job_id)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return jsonify(serialize.job(row))
