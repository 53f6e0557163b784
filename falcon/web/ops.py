"""For machines: /healthz (load balancers, systemd, deploy checks) and /metrics (Prometheus).

Both are public, like the login page. On the web node nginx should allow /metrics only from the
monitoring host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import Engine

from falcon.config import Settings
from falcon.errors import FalconError
from falcon.web import app_settings
from falcon.web.extensions import db, metrics
from falcon.web.security import public

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


def _run(name: str, fn: Callable[[], str]) -> dict[str, Any]:
    try:
        return {"check": name, "ok": True, "detail": fn()}
    except FalconError as exc:
        return {"check": name, "ok": False, "detail": str(exc)}
    except Exception:  # a broken check must not turn health into a 500
        log.exception("health check %s failed", name)
        return {"check": name, "ok": False, "detail": "check failed (see the web log)"}


def health_checks(settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    """Database reachable, migrations current, then every data check; one dict per check."""
    from falcon.data.health import data_checks
    from falcon.db.engine import check_reachable
    from falcon.db.migrate import current_revision, head_revision

    def database() -> str:
        check_reachable(engine)
        return f"reachable ({engine.dialect.name})"

    def migrations() -> str:
        current, head = current_revision(engine), head_revision(engine)
        if current != head:
            raise FalconError(f"at {current or 'none'}, head is {head}: run `falcon db upgrade`")
        return f"at head {head}"

    results = [_run("database", database)]
    if results[0]["ok"]:
        results.append(_run("migrations", migrations))
    # freshness is read from the database (data_imports), the same on every node
    results.extend(_run(name, fn) for name, fn in data_checks(settings, engine))
    return results


@bp.route("/healthz")
@public
def healthz() -> tuple[Response, int]:
    """200 when every check passes, else 503; JSON ``{"ok": bool, "checks": [...]}``."""
    checks = health_checks(app_settings(), db.engine)
    ok = all(c["ok"] for c in checks)
    response = jsonify({"ok": ok, "checks": checks})
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ok else 503


@bp.route("/metrics")
@public
def prometheus() -> Response:
    """Prometheus text format."""
    return metrics.scrape()
