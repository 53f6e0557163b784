"""The ``research`` job: :func:`research_video` run by a worker (``falcon worker run``).

Payload (JSON)::

    {"url": "https://www.youtube.com/watch?v=...",   # or "info_json": "/path/to/info.json"
     "lang": "en", "backtest": true,
     "basket": ["AAPL", "MSFT"], "start": "2018-01-01", "end": "2023-12-31",
     "actor": "alice"}

The worker hands a handler only the payload, so the handler builds its settings from the same
layers as every Falcon process (``/etc/falcon/falcon.toml``, ``FALCON_*``) and opens its own
engine. The payload is validated here: it comes from the database, which the web and the CLI
write.

Example::

    with sessions.begin() as s:
        submit(s, "research", {"url": "https://youtu.be/abc", "lang": "en"})
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from falcon.errors import ValidationError
from falcon.jobs.registry import Progress

__all__ = ["payload_options", "run_research_job"]

_KEYS = {"url", "info_json", "lang", "backtest", "basket", "start", "end", "actor"}


def _date(payload: dict[str, Any], key: str) -> date | None:
    value = payload.get(key)
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationError(f"research job: {key} must be a date (YYYY-MM-DD), "
                              f"got {value!r}") from None


def payload_options(payload: dict[str, Any]) -> tuple[str | None, Path | None, Any]:
    """``(url, info_json, ResearchOptions)`` from a job payload; ValidationError if malformed."""
    from falcon.research.pipeline import ResearchOptions

    unknown = sorted(set(payload) - _KEYS)
    if unknown:
        raise ValidationError(f"research job: unknown payload keys {', '.join(unknown)}")
    url, info = payload.get("url"), payload.get("info_json")
    if (url is None) == (info is None) or not isinstance(url or info, str):
        raise ValidationError("research job: give exactly one of url and info_json (strings)")
    basket = payload.get("basket")
    if basket is not None and (not isinstance(basket, list)
                               or not all(isinstance(t, str) and t for t in basket)):
        raise ValidationError("research job: basket must be a list of tickers")
    lang = payload.get("lang", "en")
    if not isinstance(lang, str):
        raise ValidationError("research job: lang must be a string")
    options = ResearchOptions(
        lang=lang,
        backtest=bool(payload.get("backtest", True)),
        basket=tuple(t.upper() for t in basket) if basket else None,
        start=_date(payload, "start"),
        end=_date(payload, "end"),
        actor=str(payload.get("actor") or "worker")[:64],
    )
    return url, Path(info) if isinstance(info, str) else None, options


def run_research_job(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Research one video; the job's result is the stored strategy's summary."""
    from falcon.config import load_settings
    from falcon.db.engine import engine_for, session_factory
    from falcon.research.pipeline import research_video

    url, info_json, options = payload_options(payload)
    settings = load_settings()
    engine = engine_for(settings)
    try:
        result = research_video(settings, session_factory(engine), url=url, info_json=info_json,
                                options=options, progress=lambda f, note: progress(f, note))
    finally:
        engine.dispose()
    summary = result.as_dict()
    summary.pop("spec", None)  # the row has it; keep the job's result small
    return summary
