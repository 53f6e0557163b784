"""Alert rules: their kinds, validation, and the library calls the CLI and the dashboard share.

A rule is an :class:`~falcon.db.models.AlertRule` row. ``kind`` says what it watches, ``params``
(JSON) how; :func:`validate` turns user input into canonical params or raises
:class:`~falcon.errors.ValidationError` with one line per problem.

=============  ==========================================================  =====================
kind           params                                                      fires
=============  ==========================================================  =====================
price_cross    ticker, direction (above|below), level                      on the bar whose close
                                                                           crosses the level (the
                                                                           bar before was on the
                                                                           other side)
pct_move       ticker, pct (> 0), direction (up|down|any), bars or         close vs the close N
               minutes                                                     bars / M minutes ago
indicator      ticker, condition (strategy language), mode (edge|level)    edge: when it becomes
                                                                           true; level: while true
screen_pick    profile, ticker (optional)                                  a finished screen picks
fill           account (optional), ticker (optional)                       an order fills
halt           account (optional)                                          risk halts an account
stale          ticker (optional)                                           a ticker's data is stale
service_down   service (optional)                                          a service stops
=============  ==========================================================  =====================

Example::

    with transaction(sessions) as s:
        rule = add_rule(s, kind="price_cross", params={"ticker": "AAPL", "above": 200},
                        channels=["slack", "dashboard"], cooldown="1h")
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon.alerts.settings import CHANNELS
from falcon.db.models import AlertRule
from falcon.db.types import utcnow
from falcon.errors import NotFound, ValidationError

__all__ = [
    "BAR_KINDS",
    "EVENT_KINDS",
    "KINDS",
    "add_rule",
    "cooldown_allows",
    "describe",
    "get_rule",
    "in_market_hours",
    "list_rules",
    "parse_duration",
    "remove_rule",
    "set_enabled",
    "test_rule",
    "validate",
]

BAR_KINDS = ("price_cross", "pct_move", "indicator")
EVENT_KINDS = ("screen_pick", "fill", "halt", "stale", "service_down")
KINDS = BAR_KINDS + EVENT_KINDS
_TICKER = re.compile(r"^[A-Z][A-Z0-9.\-]{0,15}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
MAX_COOLDOWN_S = 30 * 86400


def parse_duration(value: str | int | float) -> int:
    """Seconds in ``value``: ``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValidationError(f"{value!r} is not a duration (use e.g. 90s, 15m, 1h, 2d)")
        seconds = float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_COOLDOWN_S:
        raise ValidationError(f"duration {value!r} must be between 0 and 30 days")
    return int(seconds)


def cooldown_allows(last_fired_at: datetime | None, now: datetime, cooldown_s: float) -> bool:
    """True when a rule last fired at ``last_fired_at`` may fire again at ``now``.

    A clock that went backwards (``now`` before the last firing) never allows a firing: it would
    otherwise let a replay of old bars re-send every alert.
    """
    if last_fired_at is None:
        return True
    return now - last_fired_at >= timedelta(seconds=cooldown_s)


def in_market_hours(ts: datetime) -> bool:
    """True when ``ts`` falls in a regular NYSE session.

    A daily bar (stamped 00:00 New York) counts as in hours when its day is a session: a
    market-hours-only rule on daily bars would otherwise never fire.
    """
    from falcon import calendar

    try:
        local = ts.astimezone(calendar.NEW_YORK)
        if local.hour == 0 and local.minute == 0:
            return calendar.is_trading_day(local.date())
        return calendar.is_open(ts)
    except calendar.CalendarError:
        return False


# --- validation ---------------------------------------------------------------------------------


def _ticker(value: Any, problems: list[str], *, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            problems.append("ticker: required (e.g. --ticker AAPL)")
        return None
    text = str(value).strip().upper()
    if not _TICKER.match(text):
        problems.append(f"ticker: {value!r} is not a ticker symbol")
    return text


def _positive(params: Mapping[str, Any], key: str, problems: list[str]) -> float | None:
    value = params.get(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        problems.append(f"{key}: {value!r} is not a number")
        return None
    if not math.isfinite(number) or number <= 0:
        problems.append(f"{key}: must be a finite number > 0, got {value!r}")
        return None
    return number


def _opt_text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return None if value in (None, "") else str(value).strip()


def _condition(text: Any, problems: list[str]) -> str | None:
    from falcon.alerts.indicator import compile_condition

    if not isinstance(text, str) or not text.strip():
        problems.append("condition: required, e.g. 'rsi(close, 14) < 30'")
        return None
    try:
        return compile_condition(text).text
    except ValidationError as exc:
        problems.append(str(exc))
        return None


def validate(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical params for a rule of ``kind``; ValidationError listing every problem.

    ``price_cross`` also takes ``above``/``below`` as a shorthand for direction and level.
    """
    if kind not in KINDS:
        raise ValidationError(f"unknown alert kind {kind!r}; choose one of {', '.join(KINDS)}")
    p = dict(params)
    problems: list[str] = []
    out: dict[str, Any] = {}
    if kind in BAR_KINDS:
        out["ticker"] = _ticker(p.get("ticker"), problems, required=True)
    if kind == "price_cross":
        if "above" in p or "below" in p:
            if "above" in p and "below" in p:
                problems.append("give one of --above or --below, not both")
            p["direction"] = "above" if "above" in p else "below"
            p["level"] = p.get("above", p.get("below"))
        if p.get("direction") not in ("above", "below"):
            problems.append("direction: give --above LEVEL or --below LEVEL")
        out["direction"] = p.get("direction")
        out["level"] = _positive(p, "level", problems)
    elif kind == "pct_move":
        out["pct"] = _positive(p, "pct", problems)
        direction = p.get("direction") or "any"
        if direction not in ("up", "down", "any"):
            problems.append(f"direction: {direction!r} is not one of up, down, any")
        out["direction"] = direction
        bars, minutes = p.get("bars"), p.get("minutes")
        if (bars is None) == (minutes is None):
            problems.append("give exactly one window: --bars N or --minutes M")
        for key, value in (("bars", bars), ("minutes", minutes)):
            if value is None:
                continue
            if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= 10_000:
                problems.append(f"{key}: must be a whole number in 1..10000, got {value!r}")
            else:
                out[key] = int(value)
    elif kind == "indicator":
        out["condition"] = _condition(p.get("condition"), problems)
        mode = p.get("mode") or "edge"
        if mode not in ("edge", "level"):
            problems.append(f"mode: {mode!r} is not one of edge, level")
        out["mode"] = mode
    elif kind == "screen_pick":
        profile = _opt_text(p, "profile")
        if not profile:
            problems.append("profile: required (the screener profile to watch)")
        out["profile"] = profile
        out["ticker"] = _ticker(p.get("ticker"), problems, required=False)
    elif kind == "fill":
        out["account"] = _opt_text(p, "account")
        out["ticker"] = _ticker(p.get("ticker"), problems, required=False)
    elif kind == "halt":
        out["account"] = _opt_text(p, "account")
    elif kind == "stale":
        out["ticker"] = _ticker(p.get("ticker"), problems, required=False)
    elif kind == "service_down":
        out["service"] = _opt_text(p, "service")
    if problems:
        raise ValidationError(f"invalid {kind} rule: {problems[0]}", problems)
    return {k: v for k, v in out.items() if v is not None}


def _channels(channels: Iterable[str]) -> list[str]:
    out: list[str] = []
    for ch in channels:
        name = str(ch).strip().lower()
        if name not in CHANNELS:
            raise ValidationError(f"unknown channel {ch!r}; choose from {', '.join(CHANNELS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValidationError("a rule needs at least one channel (e.g. --channel dashboard)")
    return out


def describe(kind: str, params: Mapping[str, Any]) -> str:
    """A short human name for a rule (the default ``name``)."""
    t = params.get("ticker")
    if kind == "price_cross":
        return f"{t} crosses {params['direction']} {params['level']:g}"
    if kind == "pct_move":
        window = f"{params['bars']} bars" if "bars" in params else f"{params['minutes']} min"
        sign = {"up": "+", "down": "-", "any": "±"}[params["direction"]]
        return f"{t} moves {sign}{params['pct']:g}% in {window}"
    if kind == "indicator":
        return f"{t}: {params['condition']}"
    if kind == "screen_pick":
        return f"screen {params['profile']} picks {t or 'anything'}"
    if kind == "fill":
        return f"fill {params.get('account') or 'any account'} {t or ''}".strip()
    if kind == "halt":
        return f"halt of {params.get('account') or 'any account'}"
    if kind == "stale":
        return f"stale data {t or 'any ticker'}"
    return f"service down: {params.get('service') or 'any service'}"


# --- the library API (CLI and dashboard) ----------------------------------------------------------


def add_rule(
    session: Session,
    *,
    kind: str,
    params: Mapping[str, Any],
    channels: Iterable[str],
    name: str | None = None,
    cooldown: str | int | float = 3600,
    market_hours_only: bool = False,
    enabled: bool = True,
) -> AlertRule:
    """Validate and insert a rule (flushed: its ``id`` is set); the caller commits."""
    clean = validate(kind, params)
    label = (name or describe(kind, clean)).strip()
    if not label or len(label) > 120:
        raise ValidationError("name: must be 1 to 120 characters")
    rule = AlertRule(
        name=label, kind=kind, params=clean, channels=_channels(channels),
        cooldown_s=parse_duration(cooldown), market_hours_only=bool(market_hours_only),
        enabled=enabled, created_at=utcnow(),
    )
    session.add(rule)
    session.flush()
    return rule


def get_rule(session: Session, rule_id: int) -> AlertRule:
    """The rule with ``rule_id``; NotFound otherwise."""
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"alert rule {rule_id} does not exist")
    return rule


def list_rules(
    session: Session, *, kind: str | None = None, enabled: bool | None = None
) -> list[AlertRule]:
    """Rules by id, optionally of one kind or enabled state."""
    stmt = select(AlertRule).order_by(AlertRule.id)
    if kind is not None:
        stmt = stmt.where(AlertRule.kind == kind)
    if enabled is not None:
        stmt = stmt.where(AlertRule.enabled.is_(enabled))
    return list(session.scalars(stmt))


def remove_rule(session: Session, rule_id: int) -> None:
    """Delete a rule; its past alerts stay (their ``rule_id`` becomes null)."""
    session.delete(get_rule(session, rule_id))
    session.flush()


def set_enabled(session: Session, rule_id: int, enabled: bool) -> AlertRule:
    """Enable or disable a rule without losing it."""
    rule = get_rule(session, rule_id)
    rule.enabled = enabled
    session.flush()
    return rule


def test_rule(session: Session, rule_id: int) -> int:
    """Queue a test alert through the rule's channels (cooldown untouched); the event id.

    The caller commits; the delivery worker (or :func:`falcon.alerts.service.deliver_now`)
    sends it.
    """
    from falcon.alerts.outbox import queue_alert

    rule = get_rule(session, rule_id)
    event = queue_alert(
        session, rule_id=rule.id, channels=list(rule.channels or []),
        message=f"Test of alert rule #{rule.id} {rule.name!r}: this is what an alert looks like",
        ticker=rule.params.get("ticker") if rule.params else None, test=True,
    )
    return event.id


test_rule.__test__ = False  # type: ignore[attr-defined]  # a library call, not a pytest test
