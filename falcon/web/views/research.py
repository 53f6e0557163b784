"""Research: strategies extracted from videos, with where they came from and their status."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from falcon.db.models import Strategy
from falcon.web.extensions import db

bp = Blueprint("research", __name__, url_prefix="/research")


@bp.route("/")
def index() -> str:
    """Research submissions, newest first."""
    submissions = db.session.scalars(
        select(Strategy)
        .where(Strategy.source == "research")
        .order_by(Strategy.id.desc())
        .limit(200)
    ).all()
    return render_template("research/index.html", submissions=submissions)
