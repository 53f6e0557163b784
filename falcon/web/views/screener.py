"""Screen runs and their picks (with the LLM's notes, always escaped)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from sqlalchemy import select

from falcon.db.models import ScreenPick, ScreenRun
from falcon.web import serialize
from falcon.web.extensions import db
from falcon.web.queries import page_of

bp = Blueprint("screener", __name__, url_prefix="/screener")
PAGE = 50


@bp.route("/")
def index() -> str:
    """Screen runs, newest first, ``?before=<id>`` for older ones."""
    before = request.args.get("before", type=int)
    runs = db.session.scalars(
        page_of(select(ScreenRun), ScreenRun.id, limit=PAGE, before_id=before)
    ).all()
    older = runs[-1].id if len(runs) == PAGE else None
    return render_template("screener/index.html", runs=runs, older=older)


@bp.route("/runs/<id:run_id>")
def run(run_id: int) -> str:
    """One run's ranked picks."""
    screen = db.session.get(ScreenRun, run_id)
    if screen is None:
        abort(404, f"no screen run {run_id}")
    picks = db.session.scalars(
        select(ScreenPick).where(ScreenPick.run_id == run_id).order_by(ScreenPick.rank)
    ).all()
    return render_template(
        "screener/run.html",
        run=screen,
        picks=picks,
        picks_json=[serialize.screen_pick(p) for p in picks],
    )
