"""Strategy research from one video: fetch → extract → validate → backtest → look-ahead → store.

:func:`research_video` is what ``falcon research youtube`` and the ``research`` job run. It stores
a ``strategies`` row (source ``research``) whatever happens after the LLM answered:

- ``extracted`` with the spec, then ``backtested`` once the backtest on the basket and the
  look-ahead check have run (their verdict in ``provenance.evaluation``, the run in
  ``backtest_runs``); a backtest that fails leaves it ``extracted`` with the reason;
- ``failed`` when the answer stayed invalid after the repair round, with every raw answer and the
  validator's problems in ``provenance`` (and :class:`ExtractionFailed` is raised).

``provenance`` records where the spec came from: video id, URL, title, channel, upload date,
caption language and kind, transcript SHA-256, model, prompt version and fingerprint, tokens and
cost of every call. The transcript itself is not stored (it is the channel's text; its hash and
the quoted rules are enough to check a spec against the video).

Example::

    result = research_video(settings, sessions, url="https://youtu.be/abc",
                            options=ResearchOptions(basket=("AAPL", "MSFT")))
    print(result.strategy_id, result.status, result.status_reason)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade, Strategy
from falcon.errors import FalconError
from falcon.llm import LLMClient, LLMNotConfigured, missing_settings
from falcon.research.evaluate import Evaluation, default_basket, evaluate_spec
from falcon.research.extract import PROMPT_VERSION as PROMPT_VERSION
from falcon.research.extract import (
    Extraction,
    ExtractionFailed,
    ExtractOptions,
    prompt_fingerprint,
)
from falcon.research.extract import extract_strategy as extract_strategy
from falcon.research.lifecycle import SOURCE, get_research, record, transition
from falcon.research.youtube import Transcript, fetch_transcript

log = logging.getLogger(__name__)

__all__ = ["ResearchOptions", "ResearchResult", "backtest_strategy", "research_video"]

ProgressFn = Callable[[float, str], None]
_MAX_RAW = 100_000  # characters of each raw LLM answer kept with a failure


@dataclass(frozen=True, kw_only=True)
class ResearchOptions:
    """What :func:`research_video` does besides extracting."""

    lang: str = "en"
    backtest: bool = True
    basket: tuple[str, ...] | None = None  # None: the sample universe
    start: date | None = None
    end: date | None = None
    actor: str = "cli"
    extract: ExtractOptions = field(default_factory=ExtractOptions)


@dataclass(frozen=True)
class ResearchResult:
    """The stored strategy and how it got there."""

    strategy_id: int
    name: str
    status: str
    status_reason: str
    extraction: Extraction
    evaluation: Evaluation | None
    evaluation_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (``--json`` and the job's result)."""
        e = self.extraction
        return {
            "strategy_id": self.strategy_id, "name": self.name, "status": self.status,
            "status_reason": self.status_reason, "summary": e.summary,
            "confidence": e.confidence, "rules": e.rules, "ambiguities": e.ambiguities,
            "spec": e.spec, "model": e.model, "llm_calls": len(e.calls),
            "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
            "cost_usd": e.cost_usd, "repaired": e.repaired, "chunks": e.chunks,
            "evaluation": self.evaluation.as_dict() if self.evaluation else None,
            "evaluation_error": self.evaluation_error,
        }


def _noop(fraction: float, note: str) -> None:
    pass


def _unique_name(session: Session, video_id: str) -> str:
    base = "yt-" + (re.sub(r"[^A-Za-z0-9_-]", "", video_id)[:40] or "video")
    taken = set(session.scalars(select(Strategy.name).where(Strategy.name.like(base + "%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"purpose": c.purpose, "ok": c.ok, "prompt_tokens": c.prompt_tokens,
             "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd,
             **({"problem": c.problem} if c.problem else {})} for c in calls]


def _provenance(transcript: Transcript, *, model: str, calls: Sequence[Any],
                chunks: int) -> dict[str, Any]:
    return {
        "kind": "youtube",
        "video": transcript.video.as_dict(),
        "captions": {"language": transcript.language, "kind": transcript.kind,
                     "format": transcript.format, "segments": len(transcript.segments),
                     "raw_sha256": transcript.raw_sha256},
        "transcript_sha256": transcript.sha256,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "prompt_sha256": prompt_fingerprint(),
        "chunks": chunks,
        "llm_calls": _calls(calls),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "cost_usd": sum(c.cost_usd for c in calls),
    }


def _insert(sessions: sessionmaker[Session], transcript: Transcript,
            build: Callable[[str], Strategy], action: str, actor: str,
            detail: dict[str, Any]) -> int:
    """Insert the row under a fresh unique name (retrying once if another run took it)."""
    for attempt in range(3):
        try:
            with sessions.begin() as session:
                strategy = build(_unique_name(session, transcript.video.video_id))
                session.add(strategy)
                session.flush()
                record(session, strategy, action, strategy.status_reason or action, actor, detail)
                return strategy.id
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _store_failure(sessions: sessionmaker[Session], settings: Settings, transcript: Transcript,
                   exc: ExtractionFailed, actor: str) -> int:
    provenance = _provenance(transcript, model=exc.model or settings.llm.model, calls=exc.calls,
                             chunks=exc.chunks)
    provenance["failure"] = {"problems": exc.problems[:100],
                             "raw_answers": [r[:_MAX_RAW] for r in exc.raw_answers]}
    reason = f"extraction failed after a repair round: {str(exc)[:500]}"

    def build(name: str) -> Strategy:
        return Strategy(name=name, source=SOURCE, spec={}, status="failed",
                        status_reason=reason, provenance=provenance)

    return _insert(sessions, transcript, build, "failed", actor,
                   {"video_id": transcript.video.video_id, "problems": exc.problems[:5]})


def _store_extraction(sessions: sessionmaker[Session], transcript: Transcript,
                      extraction: Extraction, actor: str) -> int:
    provenance = _provenance(transcript, model=extraction.model, calls=extraction.calls,
                             chunks=extraction.chunks)
    provenance["extraction"] = {
        "summary": extraction.summary, "rules": extraction.rules,
        "ambiguities": extraction.ambiguities, "confidence": extraction.confidence,
        "repaired": extraction.repaired, "raw_answer": extraction.raw[:_MAX_RAW],
    }
    reason = (f"extracted from video {transcript.video.video_id} "
              f"(confidence {extraction.confidence:.2f}"
              f"{', after a repair round' if extraction.repaired else ''})")

    def build(name: str) -> Strategy:
        return Strategy(name=name, source=SOURCE, spec=extraction.spec, status="extracted",
                        status_reason=reason, provenance=provenance)

    return _insert(sessions, transcript, build, "extracted", actor,
                   {"video_id": transcript.video.video_id, "confidence": extraction.confidence})


def _save_run(session: Session, strategy: Strategy, evaluation: Evaluation) -> int:
    run = BacktestRun(strategy_id=strategy.id, strategy_name=strategy.name, spec=strategy.spec,
                      params={}, symbols=list(evaluation.tickers), start=evaluation.start,
                      end=evaluation.end, status="done", metrics=evaluation.metrics)
    for t in evaluation.trades:
        run.trades.append(BacktestTrade(
            ticker=str(t.get("ticker")), side=str(t.get("side", "long")), qty=int(t.get("qty", 0)),
            entry_ts=_ts(t.get("entry_ts")), entry_price=float(t.get("entry_price") or 0.0),
            exit_ts=_ts(t.get("exit_ts")) if t.get("exit_ts") else None,
            exit_price=t.get("exit_price"), pnl=t.get("pnl"), return_pct=t.get("return_pct"),
            exit_reason=t.get("exit_reason")))
    session.add(run)
    session.flush()
    session.add_all(BacktestEquity(run_id=run.id, ts=_ts(p["ts"]), equity=float(p["equity"]),
                                   cash=float(p["cash"])) for p in evaluation.equity)
    return run.id


def _ts(value: Any) -> Any:
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def backtest_strategy(
    settings: Settings,
    sessions: sessionmaker[Session],
    strategy_id: int,
    *,
    basket: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    actor: str = "cli",
) -> tuple[Evaluation | None, str | None]:
    """Backtest a stored research strategy and run its look-ahead check; store both.

    On success the strategy becomes (or stays) ``backtested``; on a failure it keeps its status
    and the reason is recorded. Returns the evaluation or the failure's message.
    """
    with sessions() as session:
        strategy = get_research(session, strategy_id)
        spec, status = dict(strategy.spec), strategy.status
    if status not in ("extracted", "backtested"):
        from falcon.research.lifecycle import LifecycleError

        raise LifecycleError(f"strategy {strategy_id} is {status}; only extracted or backtested "
                             "strategies are backtested")
    tickers = list(basket) if basket else default_basket(settings)
    try:
        evaluation = evaluate_spec(settings, spec, tickers=tickers, start=start, end=end)
    except FalconError as exc:
        message = f"backtest failed: {exc}"[:1000]
        with sessions.begin() as session:
            strategy = get_research(session, strategy_id)
            provenance = dict(strategy.provenance or {})
            provenance["evaluation"] = {"error": message, "tickers": tickers}
            strategy.provenance = provenance
            strategy.status_reason = message
            record(session, strategy, "backtest_failed", message, actor)
        return None, message
    with sessions.begin() as session:
        strategy = get_research(session, strategy_id)
        run_id = _save_run(session, strategy, evaluation)
        provenance = dict(strategy.provenance or {})
        provenance["evaluation"] = {**evaluation.as_dict(), "backtest_run_id": run_id}
        strategy.provenance = provenance
        ret = evaluation.metrics.get("return_pct")
        ret_text = f", return {ret:.2f}%" if isinstance(ret, int | float) else ""
        reason = (f"backtested on {len(tickers)} tickers {evaluation.start}..{evaluation.end}"
                  f"{ret_text}, {len(evaluation.trades)} trades; look-ahead "
                  f"{'clean' if evaluation.clean else 'NOT clean'}")
        transition(session, strategy, "backtested", reason=reason, actor=actor,
                   detail={"backtest_run_id": run_id, "lookahead_clean": evaluation.clean})
    return evaluation, None


def research_video(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    url: str | None = None,
    info_json: Path | None = None,
    options: ResearchOptions | None = None,
    progress: ProgressFn | None = None,
) -> ResearchResult:
    """Research one video end to end and store the outcome (see the module docstring).

    Raises NoCaptions, VideoUnavailable, LLMNotConfigured, BudgetExceeded, LLMCallFailed
    (nothing stored), or :class:`ExtractionFailed` (stored as ``failed``; its ``strategy_id``
    says where).
    """
    options = options or ResearchOptions()
    report = progress or _noop
    client = LLMClient(settings, sessions)
    # Fail before fetching anything: "why not?" should not wait on YouTube.
    missing = missing_settings(settings)
    if missing:
        raise LLMNotConfigured("no LLM configured: set " + " and ".join(missing))
    client.check_budget()
    report(0.05, "fetching captions")
    transcript = fetch_transcript(url, info_json=info_json, lang=options.lang)
    report(0.2, f"extracting from {len(transcript.segments)} caption lines")
    try:
        extraction = extract_strategy(client, transcript, options=options.extract,
                                      sessions=sessions)
    except ExtractionFailed as exc:
        exc.strategy_id = _store_failure(sessions, settings, transcript, exc, options.actor)
        exc.args = (f"{exc} (stored as research strategy {exc.strategy_id}, status failed)",)
        raise
    strategy_id = _store_extraction(sessions, transcript, extraction, options.actor)
    evaluation, error = None, None
    if options.backtest:
        report(0.7, "backtesting")
        evaluation, error = backtest_strategy(settings, sessions, strategy_id,
                                              basket=options.basket, start=options.start,
                                              end=options.end, actor=options.actor)
    report(1.0, "done")
    with sessions() as session:
        strategy = get_research(session, strategy_id)
        return ResearchResult(strategy_id, strategy.name, strategy.status,
                              strategy.status_reason or "", extraction, evaluation, error)
