"""The dashboard: ``create_app()`` wires settings, database, security and one blueprint per area.

Nothing happens at import. Migrations are never run here (``falcon db upgrade`` or the single-node
start-up does that); /healthz says when the database is behind.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from falcon.config import Settings

SETTINGS_KEY = "falcon.settings"


def create_app(
    settings: Settings | None = None, *, test_config: dict[str, Any] | None = None
) -> Flask:
    """Build the Flask app for ``settings`` (default: from the environment and config files).

    ``test_config`` overrides Flask config keys last (``SECRET_KEY``, ``TESTING``,
    ``SSE_MAX_SECONDS`` ...).
    """
    from werkzeug.middleware.proxy_fix import ProxyFix

    from falcon.config import load_settings
    from falcon.db.engine import make_engine
    from falcon.web.api.v1 import bp as api_v1
    from falcon.web.config import flask_config, load_secret_key
    from falcon.web.extensions import db, guard, metrics
    from falcon.web.filters import register_filters
    from falcon.web.http import IdConverter, register_error_handlers
    from falcon.web.live import bp as live
    from falcon.web.ops import bp as ops
    from falcon.web.views import BLUEPRINTS

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.from_mapping(flask_config(settings))
    app.config.from_mapping(test_config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret_key(settings)
    app.extensions[SETTINGS_KEY] = settings
    if app.config["PROXY_FIX"]:
        # nginx on the web node sets X-Forwarded-For and -Proto; trust exactly one hop.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]

    db.init_app(app, make_engine(settings.effective_database_url))
    metrics.init_app(app, db)  # first, so that it times every request
    guard.init_app(app, db)
    register_error_handlers(app)
    app.url_map.converters["id"] = IdConverter
    register_filters(app)
    for blueprint in (*BLUEPRINTS, api_v1, live, ops):
        app.register_blueprint(blueprint)
    return app


def app_settings() -> Settings:
    """The settings of the running app (inside a request)."""
    from flask import current_app

    settings: Settings = current_app.extensions[SETTINGS_KEY]
    return settings


__all__ = ["app_settings", "create_app"]
