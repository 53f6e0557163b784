"""Research: submissions, submit a video, promote and retire.

One submission with its spec and provenance is ``GET /strategies/<id>``.
"""

from __future__ import annotations

from flask import jsonify, url_for
from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import Strategy
from falcon.web import actions, serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import json_object, paged, query_str
from falcon.web.extensions import db
from falcon.web.security import admin_required, current_user


def _actor() -> str:
    user = current_user()
    return user.username if user else "unknown"


@bp.get("/research/submissions")
def submissions() -> Response:
    """Strategies whose source is ``research``, newest first; filter by ``status``."""
    stmt = select(Strategy).where(Strategy.source == "research")
    status = query_str("status", max_length=16)
    if status is not None:
        stmt = stmt.where(Strategy.status == status)
    return paged(db.session, stmt, Strategy.id, serialize.strategy)


@bp.post("/research")
def submit_research() -> tuple[Response, int]:
    """Queue a research job for ``{"url": ...}``; 202 with the job and where to follow it."""
    job = actions.enqueue_research(db.session, json_object(), actor=_actor())
    db.session.commit()
    status_url = url_for("api_v1.job", job_id=job.id)
    response = jsonify({"job": serialize.job(job), "status_url": status_url})
    response.headers["Location"] = status_url
    return response, 202


@bp.post("/research/<id:strategy_id>/promote")
@admin_required
def promote_research(strategy_id: int) -> Response:
    """``backtested`` → ``paper`` (``{"reason": ...}``); 409 when the lifecycle refuses."""
    row = actions.promote_research(
        db.session, strategy_id, reason=json_object().get("reason"), actor=_actor()
    )
    db.session.commit()
    return jsonify(serialize.strategy(row))


@bp.post("/research/<id:strategy_id>/retire")
@admin_required
def retire_research(strategy_id: int) -> Response:
    """Any status → ``retired`` (``{"reason": ...}``); 409 when already retired."""
    row = actions.retire_research(
        db.session, strategy_id, reason=json_object().get("reason"), actor=_actor()
    )
    db.session.commit()
    return jsonify(serialize.strategy(row))
