"""The few things the dashboard changes: halts, order cancels, queued backtests and research.

Pages and the API call these same functions, so a form and a ``curl`` do exactly the same thing.
Each validates what came over HTTP, then hands over to the owning package (``falcon.paper.admin``
for halts, ``falcon.jobs.queue`` for jobs, ``falcon.research.lifecycle`` for research steps,
``falcon.audit`` for the audit chain), in the caller's session without committing. Each writes
an Event row that live pages (and other processes) pick up.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon.db.models import Event, Job, Order, PaperAccount, Strategy
from falcon.db.types import utcnow
from falcon.errors import FalconError, NotFound, ValidationError

# Statuses from which an order may still be cancelled; anything else is final.
CANCELABLE = frozenset({"open", "new", "pending", "accepted", "partially_filled"})
MAX_ID = 2**63 - 1  # BIGINT: a larger id would be a database error, not a 404
MAX_SYMBOLS = 500
MAX_REASON = 500
_TICKER = re.compile(r"^[A-Z][A-Z0-9.\-]{0,15}$")


class Conflict(FalconError):
    """The request is valid but the thing is not in a state that allows it (HTTP 409)."""

    http_status = 409


def _accounts(session: Session, account_id: int | None) -> list[PaperAccount]:
    if account_id is None:
        return list(session.scalars(select(PaperAccount).order_by(PaperAccount.id)))
    account = session.get(PaperAccount, account_id)
    if account is None:
        raise NotFound(f"no paper account {account_id}")
    return [account]


def clean_text(value: Any, name: str, max_length: int) -> str:
    """``value`` if it is text the database accepts (PostgreSQL refuses NUL), else 422."""
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        raise ValidationError(f"{name}: expected text of at most {max_length} characters")
    return value


def valid_id(value: Any, name: str) -> int:
    """``value`` if it is a positive integer that fits a BIGINT id, else 422."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValidationError(f"{name}: expected a positive integer id")
    return value


def _reason(reason: Any, default: str) -> str:
    if reason is None or reason == "":
        return default
    return clean_text(reason, "reason", MAX_REASON)


def halt(
    session: Session, *, account_id: int | None, reason: Any, actor: str
) -> list[PaperAccount]:
    """Stop new orders on one account, or on all when ``account_id`` is None."""
    from falcon.paper.admin import halt_account

    text = _reason(reason, f"halted by {actor}")
    accounts = _accounts(session, account_id)
    for account in accounts:
        # The trader cancels open entry orders when it sees the flag; flattening stays a CLI act.
        halt_account(session, account.name, reason=text, actor=actor, flatten=False, now=utcnow())
    return accounts


def resume(
    session: Session, *, account_id: int | None, reason: Any, actor: str
) -> list[PaperAccount]:
    """Let one account (or all) trade again."""
    from falcon.paper.admin import resume_account

    text = _reason(reason, f"resumed by {actor}")
    accounts = _accounts(session, account_id)
    for account in accounts:
        resume_account(session, account.name, reason=text, actor=actor)
    return accounts


def cancel_order(session: Session, order_id: int, *, actor: str) -> Order:
    """Cancel an open order; :class:`Conflict` when it is already final.

    Only the status changes here (``reason`` belongs to the trader, which keeps JSON in it); the
    trader picks up ``canceled`` rows on its next batch and cancels them in its book.
    """
    from falcon import audit

    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"no order {order_id}")
    if order.status not in CANCELABLE:
        raise Conflict(f"order {order_id} is {order.status} and cannot be cancelled")
    order.status = "canceled"
    audit.append(
        session,
        actor,
        "order.cancel_requested",
        order.client_order_id,
        {"order_id": order.id, "ticker": order.ticker, "source": "dashboard"},
    )
    payload = {"order_id": order.id, "account_id": order.account_id, "ticker": order.ticker}
    session.add(Event(kind="order_canceled", payload=payload | {"by": actor}))
    return order


def _date(value: Any, name: str, problems: list[str]) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        pass
    problems.append(f"{name}: expected a date like 2024-01-31")
    return None


def backtest_request(session: Session, body: Any) -> dict[str, Any]:
    """Validate a backtest request; the job payload the worker reads.

    ``{"strategy_id": 3 | "strategy": "name", "symbols": ["AAPL"], "start": "2024-01-02",
    "end": "2024-06-28", "params": {}}``; raises :class:`ValidationError` listing every problem.
    """
    if not isinstance(body, dict):
        raise ValidationError("expected a JSON object")
    problems: list[str] = []
    unknown = sorted(set(body) - {"strategy_id", "strategy", "symbols", "start", "end", "params"})
    problems += [f"{key}: unknown field" for key in unknown]
    strategy: Strategy | None = None
    sid, name = body.get("strategy_id"), body.get("strategy")
    if isinstance(sid, int) and not isinstance(sid, bool) and 1 <= sid <= MAX_ID:
        strategy = session.get(Strategy, sid)
    elif sid is None and isinstance(name, str) and name and "\x00" not in name and len(name) <= 120:
        strategy = session.scalar(select(Strategy).where(Strategy.name == name))
    else:
        problems.append("strategy_id or strategy: one is required")
    symbols = body.get("symbols")
    if not isinstance(symbols, list) or not 1 <= len(symbols) <= MAX_SYMBOLS:
        problems.append(f"symbols: expected a list of 1 to {MAX_SYMBOLS} tickers")
        symbols = []
    clean = [s.strip().upper() for s in symbols if isinstance(s, str)]
    if len(clean) != len(symbols) or not all(_TICKER.match(s) for s in clean):
        problems.append("symbols: each must be a ticker like AAPL or BRK.B")
    start = _date(body.get("start"), "start", problems)
    end = _date(body.get("end"), "end", problems)
    if start and end and start > end:
        problems.append("start: must not be after end")
    params = body.get("params", {})
    if not isinstance(params, dict):
        problems.append("params: expected an object")
    if problems:
        raise ValidationError("invalid backtest request", problems)
    if strategy is None:
        raise NotFound(f"no strategy {sid if sid is not None else name!r}")
    return {
        "strategy_id": strategy.id,
        "strategy_name": strategy.name,
        "symbols": sorted(set(clean)),
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "params": params,
    }


def enqueue_backtest(session: Session, body: Any, *, actor: str) -> Job:
    """Queue a backtest job (kind ``backtest``) for the workers; see :func:`backtest_request`."""
    from falcon.jobs import queue

    payload = backtest_request(session, body) | {"requested_by": actor}
    job_id = queue.submit(session, "backtest", payload)  # NOTIFYs workers on PostgreSQL
    job = session.get(Job, job_id)
    if job is None:  # pragma: no cover - submit flushed it in this session
        raise NotFound(f"job {job_id} vanished")
    note = {"job_id": job_id, "kind": "backtest", "strategy": payload["strategy_name"]}
    session.add(Event(kind="job_queued", payload=note | {"by": actor}))
    return job


# --- research: submit a video, promote or retire what came of it -------------------------------

MAX_URL = 2000
# What a research submission accepts: the YouTube addresses falcon.research.youtube hands to
# yt-dlp (the same pattern is in the OpenAPI document, so a schema-valid URL is never refused).
YOUTUBE_URL_PATTERN = (
    r"^https?://((www\.|m\.|music\.)?youtube\.com|youtu\.be|(www\.)?youtube-nocookie\.com)"
    r"(:[0-9]{1,5})?([/?#][!-~]*)?$"
)
_YOUTUBE_URL = re.compile(YOUTUBE_URL_PATTERN)


def research_request(body: Any, *, actor: str) -> dict[str, Any]:
    """Validate ``{"url": "https://www.youtube.com/watch?v=..."}``; the ``research`` job payload."""
    from falcon.research.jobs import payload_options
    from falcon.research.youtube import check_youtube_url

    if not isinstance(body, dict):
        raise ValidationError("expected a JSON object")
    unknown = sorted(set(body) - {"url"})
    if unknown:
        raise ValidationError("invalid research request", [f"{k}: unknown field" for k in unknown])
    url = body.get("url")
    url = url.strip() if isinstance(url, str) else url
    if not isinstance(url, str) or len(url) > MAX_URL or not _YOUTUBE_URL.fullmatch(url):
        raise ValidationError(
            "invalid research request",
            [f"url: expected a YouTube video URL (http or https) of at most {MAX_URL} characters"],
        )
    payload = {"url": check_youtube_url(url), "actor": actor[:64]}
    payload_options(payload)  # the worker's own check, so a queued job is one it will accept
    return payload


def enqueue_research(session: Session, body: Any, *, actor: str) -> Job:
    """Queue a ``research`` job for one video (see :func:`research_request`)."""
    from falcon.jobs import queue

    payload = research_request(body, actor=actor)
    job_id = queue.submit(session, "research", payload)
    job = session.get(Job, job_id)
    if job is None:  # pragma: no cover - submit flushed it in this session
        raise NotFound(f"job {job_id} vanished")
    note = {"job_id": job_id, "kind": "research", "url": payload["url"]}
    session.add(Event(kind="job_queued", payload=note | {"by": actor}))
    return job


def _lifecycle(step: str, session: Session, strategy_id: int, reason: Any, actor: str) -> Strategy:
    from falcon.research import lifecycle

    text = clean_text(reason, "reason", MAX_REASON) if reason is not None else ""
    move = lifecycle.promote if step == "promote" else lifecycle.retire
    try:
        return move(session, strategy_id, reason=text, actor=actor)
    except lifecycle.LifecycleError as exc:
        # A step the lifecycle refuses is a wrong state, not a bug (LifecycleError has no status).
        raise Conflict(str(exc)) from exc


def promote_research(session: Session, strategy_id: int, *, reason: Any, actor: str) -> Strategy:
    """``backtested`` → ``paper`` with a required reason; :class:`Conflict` when not allowed."""
    return _lifecycle("promote", session, strategy_id, reason, actor)


def retire_research(session: Session, strategy_id: int, *, reason: Any, actor: str) -> Strategy:
    """Any status → ``retired`` with a required reason; :class:`Conflict` when already retired."""
    return _lifecycle("retire", session, strategy_id, reason, actor)
