"""Alert rules and fired alerts."""

from __future__ import annotations

from flask.wrappers import Response
from sqlalchemy import select

from falcon.db.models import AlertEvent, AlertRule
from falcon.web import serialize
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import paged, query_int
from falcon.web.extensions import db


@bp.get("/alerts/rules")
def rules() -> Response:
    """Alert rules, newest first."""
    return paged(db.session, select(AlertRule), AlertRule.id, serialize.alert_rule)


@bp.get("/alerts/events")
def events() -> Response:
    """Alerts that fired, newest first; filter by ``rule_id``."""
    stmt = select(AlertEvent)
    rule_id = query_int("rule_id", minimum=1)
    if rule_id is not None:
        stmt = stmt.where(AlertEvent.rule_id == rule_id)
    return paged(db.session, stmt, AlertEvent.id, serialize.alert_event)
