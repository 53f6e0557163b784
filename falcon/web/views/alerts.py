"""Alert rules and the alerts that fired."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from falcon.db.models import AlertEvent, AlertRule
from falcon.web.extensions import db

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


@bp.route("/")
def index() -> str:
    """Rules and the latest alerts."""
    s = db.session
    return render_template(
        "alerts/index.html",
        rules=s.scalars(select(AlertRule).order_by(AlertRule.name)).all(),
        events=s.scalars(select(AlertEvent).order_by(AlertEvent.id.desc()).limit(100)).all(),
    )
