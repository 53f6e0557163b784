"""Research submissions: strategies extracted from videos."""

from __future__ import annotations

from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import Strategy
from falcon.web import serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import paged, query_str
from falcon.web.extensions import db


@bp.get("/research/submissions")
def submissions() -> Response:
    """Strategies whose source is ``research``, newest first; filter by ``status``."""
    stmt = select(Strategy).where(Strategy.source == "research")
    status = query_str("status", max_length=16)
    if status is not None:
        stmt = stmt.where(Strategy.status == status)
    return paged(db.session, stmt, Strategy.id, serialize.strategy)
