"""Jinja filters: times in the exchange's zone, money, numbers, JSON documents, safe links.

Filters return plain strings: autoescaping still applies to what they return.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app

from falcon.web.serialize import json_default


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def local_time(value: datetime | date | None, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """An aware UTC time shown in the configured zone (America/New_York)."""
    if value is None:
        return ""
    if not isinstance(value, datetime):
        return value.isoformat()
    zone = _zone(current_app.config.get("FALCON_TIMEZONE", "America/New_York"))
    return value.astimezone(zone).strftime(fmt)


def money(value: Decimal | float | int | None) -> str:
    """``12,345.67``; empty for None."""
    if value is None:
        return ""
    return f"{float(value):,.2f}"


def number(value: float | int | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; empty for None, text left as it is."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    return f"{float(value):,.{digits}f}"


def pretty_json(value: Any) -> str:
    """Indented JSON of a document, for a <pre> (escaped by autoescape like any text)."""
    return json.dumps(value, default=json_default, indent=2)


def safe_link(value: Any) -> str | None:
    """``value`` if it is an http(s) URL, else None: a ``javascript:`` link is never rendered."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def short(value: Any, length: int = 120) -> str:
    """Text cut to ``length`` characters with an ellipsis (documents as compact JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, default=json_default)
    return text if len(text) <= length else text[: length - 1] + "…"


def register_filters(app: Flask) -> None:
    """Install the filters on ``app``'s Jinja environment."""
    app.jinja_env.filters.update(
        local_time=local_time,
        money=money,
        number=number,
        pretty_json=pretty_json,
        safe_link=safe_link,
        short=short,
    )
