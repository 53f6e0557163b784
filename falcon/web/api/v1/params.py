"""Reading query strings and JSON bodies with 400s that say what is wrong."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask.wrappers import Response
from sqlalchemy import Select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from falcon.errors import ValidationError
from falcon.web.actions import MAX_ID, valid_id
from falcon.web.queries import page_of

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


def query_int(name: str, *, minimum: int = 1, maximum: int = MAX_ID) -> int | None:
    """An optional integer query parameter (an id unless told otherwise), or 400."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise BadRequest(f"{name}: must be between {minimum} and {maximum}")
    return value


def query_str(name: str, *, max_length: int = 64) -> str | None:
    """An optional short text query parameter, or 400."""
    raw = request.args.get(name)
    if raw is not None and (len(raw) > max_length or "\x00" in raw):
        raise BadRequest(f"{name}: at most {max_length} characters of text")
    return raw


def json_object() -> dict[str, Any]:
    """The request's JSON object body; an empty body is ``{}``."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("body must be JSON (Content-Type: application/json)")
    if not isinstance(body, dict):
        raise ValidationError("expected a JSON object")
    return body


def optional_id(body: dict[str, Any], name: str) -> int | None:
    """An optional positive integer id field of a JSON body, or 422."""
    value = body.get(name)
    return None if value is None else valid_id(value, name)


def paged(session: Session, stmt: Select[Any], id_column: Any, to_json: Any) -> Response:
    """Run ``stmt`` newest first with ``?limit``/``?before_id`` and answer the list shape."""
    limit = query_int("limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    before = query_int("before_id")
    rows = session.scalars(page_of(stmt, id_column, limit=limit, before_id=before)).all()
    next_before = rows[-1].id if len(rows) == limit else None
    return jsonify({"items": [to_json(r) for r in rows], "next_before_id": next_before})
