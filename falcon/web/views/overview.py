"""The front page: accounts, the latest screen, recent fills and events (live)."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from falcon.db.models import Fill, ScreenPick, ScreenRun
from falcon.web import serialize
from falcon.web.extensions import db
from falcon.web.queries import accounts_with_positions, recent_events

bp = Blueprint("overview", __name__)


@bp.route("/")
def index() -> str:
    """Overview of accounts, the latest screen run, fills and events."""
    s = db.session
    latest = s.scalar(select(ScreenRun).order_by(ScreenRun.id.desc()).limit(1))
    picks = []
    if latest is not None:
        picks = list(
            s.scalars(
                select(ScreenPick)
                .where(ScreenPick.run_id == latest.id)
                .order_by(ScreenPick.rank)
                .limit(10)
            )
        )
    return render_template(
        "overview/index.html",
        accounts=[serialize.account(a, p) for a, p in accounts_with_positions(s)],
        latest_run=latest,
        picks=picks,
        fills=s.scalars(select(Fill).order_by(Fill.id.desc()).limit(20)).all(),
        events=recent_events(s, 20),
    )
