"""Research: submit a video, follow its job, and read, promote or retire what came of it.

Everything in a research row's provenance was written by a video or an LLM: it reaches the page
only as escaped text, and the one kind of link built from it (a rule's moment in the video) is
assembled here from a validated video id and a parsed timestamp, never taken from the text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from falcon.db.models import Job, Strategy
from falcon.errors import FalconError, NotFound, ValidationError
from falcon.web import actions, serialize
from falcon.web.extensions import db
from falcon.web.filters import safe_link
from falcon.web.security import admin_required, current_user
from falcon.web.views.strategies import metric_rows

bp = Blueprint("research", __name__, url_prefix="/research")

# Research jobs shown on the page: the unfinished ones among the newest this many, and ?job=.
RECENT_JOBS = 50
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_TIMESTAMP = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_YOUTUBE_HOSTS = frozenset({"youtube.com", "www.youtube.com", "m.youtube.com", "youtu.be"})


def _actor() -> str:
    user = current_user()
    return user.username if user else "unknown"


@bp.route("/")
def index() -> str:
    """The submit form, the jobs being followed and the submissions, newest first."""
    submissions = db.session.scalars(
        select(Strategy)
        .where(Strategy.source == "research")
        .order_by(Strategy.id.desc())
        .limit(200)
    ).all()
    return render_template(
        "research/index.html",
        submissions=[(s, video(s.provenance)) for s in submissions],
        jobs=_jobs(),
        max_url=actions.MAX_URL,
    )


def _jobs() -> list[dict[str, Any]]:
    """Unfinished research jobs, and the one named by ``?job=`` (just queued)."""
    named = request.args.get("job", type=int)
    recent = db.session.scalars(
        select(Job).where(Job.kind == "research").order_by(Job.id.desc()).limit(RECENT_JOBS)
    )
    return [serialize.job(j) for j in recent if j.id == named or j.status in ("queued", "running")]


@bp.route("/", methods=["POST"])
def submit() -> Response:
    """Queue a research job for the video URL of the form."""
    try:
        job = actions.enqueue_research(
            db.session, {"url": request.form.get("url", "")}, actor=_actor()
        )
    except ValidationError as exc:
        flash("; ".join(exc.problems) or str(exc), "error")
        return redirect(url_for("research.index"))
    db.session.commit()
    flash(f"Research queued as job {job.id}.", "info")
    return redirect(url_for("research.index", job=job.id))


@bp.route("/<id:strategy_id>")
def detail(strategy_id: int) -> str:
    """One researched strategy: its source, rules, evaluation, provenance and history."""
    return render_template("research/detail.html", **_detail_context(strategy_id))


def _detail_context(strategy_id: int) -> dict[str, Any]:
    strategy = db.session.get(Strategy, strategy_id)
    if strategy is None:
        raise NotFound(f"no strategy {strategy_id}")
    if strategy.source != "research":  # its page says so and points at the strategy's own page
        return {"strategy": strategy, "not_research": True}
    prov = strategy.provenance if isinstance(strategy.provenance, dict) else {}
    vid = video(prov)
    extraction = _dict(prov.get("extraction"))
    evaluation = _dict(prov.get("evaluation"))
    lookahead = _dict(evaluation.get("lookahead"))
    run_id = evaluation.get("backtest_run_id")
    confidence = extraction.get("confidence")
    return {
        "strategy": strategy,
        "video": vid,
        "summary": _text(extraction.get("summary")),
        "confidence": confidence if isinstance(confidence, int | float) else None,
        "rules": [_rule(r, vid["youtube_id"]) for r in _list(extraction.get("rules"))],
        "ambiguities": [_text(a) for a in _list(extraction.get("ambiguities"))],
        "evaluation": evaluation,
        "metrics": metric_rows(_dict(evaluation.get("metrics"))),
        "lookahead": lookahead,
        "lookahead_problems": [_text(p) for p in _list(lookahead.get("problems"))],
        "backtest_run_id": run_id if isinstance(run_id, int) and run_id > 0 else None,
        "history": [_step(h) for h in _list(prov.get("history")) if isinstance(h, dict)],
        "failure": [_text(p) for p in _list(_dict(prov.get("failure")).get("problems"))],
        "llm": {
            key: prov.get(key)
            for key in ("model", "prompt_version", "prompt_tokens", "completion_tokens",
                        "cost_usd", "chunks", "transcript_sha256")
            if isinstance(prov.get(key), str | int | float)
        },
        "llm_calls": len(_list(prov.get("llm_calls"))),
        "max_reason": actions.MAX_REASON,
    }


def _lifecycle_step(step: str, strategy_id: int) -> Response | tuple[str, int]:
    move = actions.promote_research if step == "promote" else actions.retire_research
    try:
        row = move(db.session, strategy_id, reason=request.form.get("reason"), actor=_actor())
    except NotFound:
        raise
    except FalconError as exc:  # a refused step (wrong state, missing reason): say why, 422
        db.session.rollback()
        problems = exc.problems if isinstance(exc, ValidationError) else []
        flash("; ".join([str(exc), *problems]), "error")
        return render_template("research/detail.html", **_detail_context(strategy_id)), 422
    db.session.commit()
    flash(f"{row.name} is now {row.status}.", "info")
    return redirect(url_for("research.detail", strategy_id=strategy_id))


@bp.route("/<id:strategy_id>/promote", methods=["POST"])
@admin_required
def promote(strategy_id: int) -> Response | tuple[str, int]:
    """Promote a backtested, look-ahead-clean strategy to paper trading (reason required)."""
    return _lifecycle_step("promote", strategy_id)


@bp.route("/<id:strategy_id>/retire", methods=["POST"])
@admin_required
def retire(strategy_id: int) -> Response | tuple[str, int]:
    """Retire a researched strategy (reason required)."""
    return _lifecycle_step("retire", strategy_id)


# --- untrusted provenance to plain values -------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def video(provenance: Any) -> dict[str, Any]:
    """Title, channel, a safe link and the YouTube id of a row's video (pipeline or older rows)."""
    prov = _dict(provenance)
    info = _dict(prov.get("video")) or prov
    url = info.get("url")
    return {
        "title": _text(info.get("title")),
        "channel": _text(info.get("channel")),
        "link": safe_link(url),
        "youtube_id": youtube_id(url),
    }


def youtube_id(url: Any) -> str | None:
    """The video id of a YouTube watch, short, shorts or live URL; None for anything else."""
    link = safe_link(url)
    if link is None:
        return None
    parts = urlsplit(link)
    host = (parts.hostname or "").lower()
    if host not in _YOUTUBE_HOSTS:
        return None
    if host == "youtu.be":
        candidate = parts.path.strip("/")
    elif parts.path.rstrip("/") == "/watch":
        candidate = (parse_qs(parts.query).get("v") or [""])[0]
    else:
        head, _, rest = parts.path.strip("/").partition("/")
        candidate = rest if head in ("shorts", "live", "embed") else ""
    return candidate if _VIDEO_ID.fullmatch(candidate) else None


def seconds(timestamp: Any) -> int | None:
    """``"MM:SS"`` or ``"H:MM:SS"`` as seconds; None for anything else."""
    match = _TIMESTAMP.fullmatch(timestamp) if isinstance(timestamp, str) else None
    if match is None:
        return None
    a, b, c = int(match[1]), int(match[2]), match[3]
    if b > 59 or (c is not None and int(c) > 59):
        return None
    return a * 3600 + b * 60 + int(c) if c is not None else a * 60 + b


def clock(total: int) -> str:
    """Seconds as ``m:ss`` (under an hour) or ``h:mm:ss``."""
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rule(rule: Any, video_id: str | None) -> dict[str, Any]:
    item = _dict(rule) if isinstance(rule, dict) else {"rule": rule}
    at = seconds(item.get("timestamp"))
    link = None
    if at is not None and video_id is not None:
        link = "https://www.youtube.com/watch?" + urlencode({"v": video_id, "t": f"{at}s"})
    return {
        "rule": _text(item.get("rule")),
        "quote": _text(item.get("quote")),
        "time": clock(at) if at is not None else _text(item.get("timestamp")),
        "link": link,
        "quote_found": item.get("quote_found") if isinstance(item.get("quote_found"), bool)
        else None,
    }


def _step(entry: dict[str, Any]) -> dict[str, Any]:
    ts = entry.get("ts")
    try:
        when: datetime | str = datetime.fromisoformat(ts) if isinstance(ts, str) else ""
    except ValueError:
        when = _text(ts)
    return {key: _text(entry.get(key)) for key in ("from", "to", "reason", "actor")} | {
        "ts": when
    }
