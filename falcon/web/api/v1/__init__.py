"""/api/v1: JSON over the session cookie (the pages' fetch) or ``Authorization: Bearer``.

Conventions, for every route added here:
- one module per area, routes on the shared ``bp``; describe each route in ``openapi.py`` (a test
  fails when a route is missing there);
- lists answer ``{"items": [...], "next_before_id": n | null}`` newest first, paged with
  ``?limit=`` (1-500) and ``?before_id=``;
- errors answer ``{"error": "..."}`` (and ``"problems": [...]`` for 422) with 400 (malformed
  request), 401 (no or bad credentials), 403 (CSRF), 404, 405, 409 (wrong state) or 422 (invalid);
  raise ``falcon.errors`` or ``werkzeug`` exceptions and ``falcon.web.http`` shapes the answer;
- state changes are POST only and go through ``falcon.web.actions`` (shared with the pages).
"""

from __future__ import annotations

from falcon.web.api.v1 import alerts, research, screener, strategies, trading
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.openapi import openapi_document

__all__ = ["alerts", "bp", "openapi_document", "research", "screener", "strategies", "trading"]
