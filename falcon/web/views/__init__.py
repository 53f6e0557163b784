"""The dashboard's pages: one blueprint per area, templates under ``templates/<area>/``.

To add an area: a module here with ``bp = Blueprint("<area>", __name__, url_prefix="/<area>")``,
its templates in ``templates/<area>/``, an entry in BLUEPRINTS and in ``templates/base.html``'s nav.
Views need no login decorator: every endpoint requires login unless marked ``@public``.
"""

from __future__ import annotations

from flask import Blueprint

from falcon.web.views import alerts, auth, overview, research, screener, strategies, system, trading

BLUEPRINTS: tuple[Blueprint, ...] = (
    auth.bp,
    overview.bp,
    screener.bp,
    trading.bp,
    strategies.bp,
    research.bp,
    alerts.bp,
    system.bp,
)
