"""Screen runs and their picks."""

from __future__ import annotations

from flask import jsonify
from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import ScreenPick, ScreenRun
from falcon.errors import NotFound
from falcon.web import serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import paged, query_str
from falcon.web.extensions import db


@bp.get("/screener/runs")
def runs() -> Response:
    """Screen runs, newest first; filter by ``profile``."""
    stmt = select(ScreenRun)
    profile = query_str("profile")
    if profile is not None:
        stmt = stmt.where(ScreenRun.profile == profile)
    return paged(db.session, stmt, ScreenRun.id, serialize.screen_run)


def _run(run_id: int) -> ScreenRun:
    row = db.session.get(ScreenRun, run_id)
    if row is None:
        raise NotFound(f"no screen run {run_id}")
    return row


def _picks(run_id: int) -> list[dict[str, object]]:
    rows = db.session.scalars(
        select(ScreenPick).where(ScreenPick.run_id == run_id).order_by(ScreenPick.rank)
    )
    return [serialize.screen_pick(p) for p in rows]


@bp.get("/screener/runs/<id:run_id>")
def run(run_id: int) -> Response:
    """One run with its picks."""
    row = _run(run_id)
    return jsonify(serialize.screen_run(row) | {"picks": _picks(row.id)})


@bp.get("/screener/runs/<id:run_id>/picks")
def picks(run_id: int) -> Response:
    """A run's picks in rank order."""
    _run(run_id)
    return jsonify({"items": _picks(run_id), "next_before_id": None})
