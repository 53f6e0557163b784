"""Error responses: JSON ``{"error": ...}`` for the API and the event stream, a page otherwise."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter
from werkzeug.routing import ValidationError as RouteMismatch

from falcon.errors import FalconError, NotFound, ValidationError

# Paths whose clients are programs: they get JSON errors and 401 instead of a login redirect.
API_PREFIXES = ("/api/", "/events/")


def is_api_request() -> bool:
    """True for /api/ and /events/ requests."""
    return request.path.startswith(API_PREFIXES)


class IdConverter(IntegerConverter):
    """``<id:name>``: a positive BIGINT row id; anything larger is a 404, not a database error."""

    regex = r"\d{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= 2**63 - 1:
            raise RouteMismatch()
        return number


def json_error(status: int, message: str, **extra: Any) -> Response:
    """A JSON error response ``{"error": message, **extra}`` with ``status``."""
    response = jsonify({"error": message, **extra})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="falcon"'
    return response


def _falcon_status(exc: FalconError) -> int:
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ValidationError):
        return 422
    return 500


def register_error_handlers(app: Flask) -> None:
    """JSON errors under API_PREFIXES, an HTML page elsewhere; FalconErrors mapped to statuses."""

    def page(status: int, title: str, message: str) -> tuple[str, int]:
        return render_template(
            "errors/error.html", status=status, title=title, message=message
        ), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status < 400:
            return exc
        # Keep the headers the exception carries (Allow on a 405, WWW-Authenticate ...).
        headers = {
            k: v
            for k, v in exc.get_response().headers.items()
            if k.lower() in ("allow", "www-authenticate", "retry-after")
        }
        if is_api_request():
            response = json_error(status, exc.description or exc.name)
            response.headers.update(headers)
            return response
        body, _ = page(status, exc.name, exc.description or "")
        return body, status, headers

    @app.errorhandler(FalconError)
    def falcon_error(exc: FalconError) -> Any:
        status = _falcon_status(exc)
        if status == 500:
            app.logger.exception("unhandled %s", type(exc).__name__)
            return http_error(InternalServerError())
        problems = exc.problems if isinstance(exc, ValidationError) else []
        if is_api_request():
            return json_error(status, str(exc), **({"problems": problems} if problems else {}))
        titles = {404: "Not found", 409: "Conflict"}
        return page(status, titles.get(status, "Invalid"), str(exc))
