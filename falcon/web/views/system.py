"""The system page: version, database and migrations, data freshness, services and jobs."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, render_template
from sqlalchemy import func, select

from falcon import __version__
from falcon.db.engine import safe_url
from falcon.db.models import Job, LLMUsage, ServiceRun
from falcon.db.types import utcnow
from falcon.web import app_settings
from falcon.web.extensions import db
from falcon.web.ops import health_checks

bp = Blueprint("system", __name__, url_prefix="/system")


@bp.route("/")
def index() -> str:
    """Everything an operator checks first."""
    s = db.session
    settings = app_settings()
    latest = (
        select(ServiceRun.name, func.max(ServiceRun.id).label("last_id"))
        .group_by(ServiceRun.name)
        .subquery()
    )
    services = s.scalars(
        select(ServiceRun).join(latest, ServiceRun.id == latest.c.last_id).order_by(ServiceRun.name)
    ).all()
    now = utcnow()
    month_start = datetime(now.year, now.month, 1, tzinfo=now.tzinfo)
    llm_cost = s.scalar(
        select(func.coalesce(func.sum(LLMUsage.cost_usd), 0.0)).where(LLMUsage.ts >= month_start)
    )
    return render_template(
        "system/index.html",
        version=__version__,
        database=safe_url(settings.effective_database_url),
        checks=health_checks(settings, db.engine),
        services=services,
        job_counts=s.execute(
            select(Job.status, func.count()).group_by(Job.status).order_by(Job.status)
        ).all(),
        jobs=s.scalars(select(Job).order_by(Job.id.desc()).limit(20)).all(),
        llm_cost=float(llm_cost or 0.0),
        llm_budget=settings.llm.monthly_budget_usd,
    )
