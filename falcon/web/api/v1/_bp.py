"""The ``api_v1`` blueprint object, in its own module so that route modules can import it."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
