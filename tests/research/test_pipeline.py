"""The pipeline and the lifecycle on SQLite and PostgreSQL: what is stored, and every step."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit
from falcon.config import Settings, load_settings
from falcon.db.models import AuditEntry, BacktestEquity, BacktestRun, Event, Strategy
from falcon.errors import DataError, ValidationError
from falcon.research import lifecycle, pipeline
from falcon.research.evaluate import Evaluation
from falcon.research.extract import PROMPT_VERSION, ExtractionFailed
from falcon.research.lifecycle import LifecycleError
from falcon.research.pipeline import ResearchOptions, research_video
from tests.llm_server import ChatServer, Reply

from .conftest import VTT, InfoJson, SpecKit, envelope, llm_env


def _settings(chat: ChatServer) -> Settings:
    return load_settings(environ=llm_env(chat))


def _fake_evaluation(clean: bool) -> Any:
    def evaluate(settings: Settings, spec: dict[str, Any], *, tickers: list[str],
                 start: date | None, end: date | None) -> Evaluation:
        ts = datetime(2020, 1, 2, 5, tzinfo=UTC)
        return Evaluation(
            tickers=tuple(tickers), start=date(2020, 1, 1), end=date(2020, 12, 31),
            metrics={"return_pct": 12.0, "sharpe": 1.1, "trades": 1},
            lookahead={"clean": clean, "problems": [] if clean else ["uses close[t+1]"]},
            trades=[{"ticker": "AAPL", "side": "long", "qty": 10, "entry_ts": ts,
                     "entry_price": 75.0, "exit_ts": ts, "exit_price": 80.0, "pnl": 50.0,
                     "return_pct": 6.6, "exit_reason": "signal"}],
            equity=[{"ts": ts, "equity": 100_050.0, "cash": 100_050.0}])
    return evaluate


def _strategy(sessions: sessionmaker[Session], strategy_id: int) -> Strategy:
    with sessions() as s:
        row = s.get(Strategy, strategy_id)
        assert row is not None
        return row


def test_extracted_strategy_is_stored_with_provenance(chat: ChatServer, sessions,  # type: ignore[no-untyped-def]
                                                      info_json: InfoJson,
                                                      spec_kit: SpecKit) -> None:
    chat.queue(Reply(content=envelope(spec_kit.valid), prompt_tokens=1000, completion_tokens=100))
    result = research_video(_settings(chat), sessions, info_json=info_json(
        manual={"en": {"vtt": VTT}}), options=ResearchOptions(backtest=False, actor="alice"))
    assert (result.name, result.status) == ("yt-vid00000001", "extracted")
    row = _strategy(sessions, result.strategy_id)
    assert (row.source, row.spec, row.status) == ("research", spec_kit.valid, "extracted")
    assert row.status_reason and "confidence 0.80" in row.status_reason
    prov = row.provenance or {}
    assert prov["video"]["video_id"] == "vid00000001"
    assert prov["video"]["url"] == "https://www.youtube.com/watch?v=vid00000001"
    assert (prov["video"]["title"], prov["video"]["channel"]) == ("RSI swing trading", "Trader Joe")
    assert len(prov["transcript_sha256"]) == 64
    assert (prov["model"], prov["prompt_version"]) == ("test-model", PROMPT_VERSION)
    assert len(prov["prompt_sha256"]) == 64
    assert (prov["prompt_tokens"], prov["completion_tokens"]) == (1000, 100)
    assert prov["cost_usd"] == pytest.approx(0.013)
    assert prov["captions"]["kind"] == "manual"
    assert prov["extraction"]["rules"][0]["timestamp"] == "00:05"
    with sessions() as s:
        [event] = s.scalars(select(Event).where(Event.kind == "research")).all()
        assert event.payload["action"] == "extracted"
        [entry] = s.scalars(select(AuditEntry)).all()
        assert (entry.actor, entry.action, entry.subject) == (
            "alice", "research.extracted", f"strategy:{row.id}")
        assert audit.verify(s).ok
    # The same video again gets a new name, not a clash.
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    again = research_video(_settings(chat), sessions, info_json=info_json(
        manual={"en": {"vtt": VTT}}), options=ResearchOptions(backtest=False))
    assert again.name == "yt-vid00000001-2"


def test_backtest_promote_retire(chat: ChatServer, sessions, info_json: InfoJson,  # type: ignore[no-untyped-def]
                                 spec_kit: SpecKit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "evaluate_spec", _fake_evaluation(clean=True))
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    result = research_video(_settings(chat), sessions, info_json=info_json(
        manual={"en": {"vtt": VTT}}), options=ResearchOptions(basket=("AAPL", "MSFT")))
    assert result.status == "backtested"
    assert "look-ahead clean" in result.status_reason and "return 12.00%" in result.status_reason
    row = _strategy(sessions, result.strategy_id)
    evaluation = (row.provenance or {})["evaluation"]
    assert evaluation["tickers"] == ["AAPL", "MSFT"] and evaluation["lookahead"]["clean"]
    with sessions() as s:
        run = s.get(BacktestRun, evaluation["backtest_run_id"])
        assert run is not None and run.strategy_id == row.id and run.symbols == ["AAPL", "MSFT"]
        assert [t.ticker for t in run.trades] == ["AAPL"]
        assert len(s.scalars(select(BacktestEquity)).all()) == 1

    with sessions.begin() as s, pytest.raises(ValidationError, match="reason is required"):
        lifecycle.promote(s, row.id, reason="  ", actor="bob")
    with sessions.begin() as s:
        lifecycle.promote(s, row.id, reason="clean and profitable", actor="bob")
    with sessions.begin() as s, pytest.raises(LifecycleError, match="only a backtested"):
        lifecycle.promote(s, row.id, reason="again", actor="bob")
    with sessions.begin() as s:
        lifecycle.retire(s, row.id, reason="drawdown in paper", actor="bob")
    with sessions.begin() as s, pytest.raises(LifecycleError, match="already retired"):
        lifecycle.retire(s, row.id, reason="twice", actor="bob")
    row = _strategy(sessions, row.id)
    assert (row.status, row.status_reason) == ("retired", "drawdown in paper")
    history = (row.provenance or {})["history"]
    assert [(h["from"], h["to"], h["actor"]) for h in history] == [
        ("extracted", "backtested", "cli"), ("backtested", "paper", "bob"),
        ("paper", "retired", "bob")]
    with sessions() as s:
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["research.extracted", "research.backtested", "research.promoted",
                           "research.retired"]
        assert audit.verify(s).ok
        kinds = s.scalars(select(Event.payload).where(Event.kind == "research")
                          .order_by(Event.id)).all()
        assert [k["action"] for k in kinds] == ["extracted", "backtested", "promoted", "retired"]


def test_promotion_needs_a_clean_backtest(chat: ChatServer, sessions, info_json: InfoJson,  # type: ignore[no-untyped-def]
                                          spec_kit: SpecKit,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(chat)
    path = info_json(manual={"en": {"vtt": VTT}})
    chat.queue(Reply(content=envelope(spec_kit.valid)), Reply(content=envelope(spec_kit.valid)))
    plain = research_video(settings, sessions, info_json=path,
                           options=ResearchOptions(backtest=False))
    with sessions.begin() as s, pytest.raises(LifecycleError, match="research backtest ID"):
        lifecycle.promote(s, plain.strategy_id, reason="r", actor="a")
    monkeypatch.setattr(pipeline, "evaluate_spec", _fake_evaluation(clean=False))
    dirty = research_video(settings, sessions, info_json=path,
                           options=ResearchOptions(basket=("AAPL",)))
    assert dirty.status == "backtested" and "NOT clean" in dirty.status_reason
    with sessions.begin() as s, pytest.raises(LifecycleError, match="look-ahead check failed"):
        lifecycle.promote(s, dirty.strategy_id, reason="r", actor="a")
    with sessions.begin() as s, pytest.raises(Exception, match="no researched strategy"):
        lifecycle.promote(s, 999_999, reason="r", actor="a")


def test_a_failed_backtest_leaves_it_extracted(chat: ChatServer, sessions,  # type: ignore[no-untyped-def]
                                               info_json: InfoJson, spec_kit: SpecKit,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_data(*args: Any, **kwargs: Any) -> Evaluation:
        raise DataError("no day bars for AAPL in the store")

    monkeypatch.setattr(pipeline, "evaluate_spec", no_data)
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    result = research_video(_settings(chat), sessions, info_json=info_json(
        manual={"en": {"vtt": VTT}}), options=ResearchOptions(basket=("AAPL",)))
    assert result.status == "extracted"
    assert result.evaluation_error == "backtest failed: no day bars for AAPL in the store"
    row = _strategy(sessions, result.strategy_id)
    assert (row.provenance or {})["evaluation"]["error"].startswith("backtest failed")


def test_invalid_after_repair_is_stored_as_failed(chat: ChatServer, sessions,  # type: ignore[no-untyped-def]
                                                  info_json: InfoJson, spec_kit: SpecKit) -> None:
    chat.queue(Reply(content=envelope(spec_kit.unknown_key)),
               Reply(content=envelope(spec_kit.unknown_function)))
    with pytest.raises(ExtractionFailed, match="stored as research strategy") as info:
        research_video(_settings(chat), sessions, info_json=info_json(
            manual={"en": {"vtt": VTT}}), options=ResearchOptions(backtest=False))
    assert info.value.strategy_id is not None
    row = _strategy(sessions, info.value.strategy_id)
    assert (row.status, row.spec) == ("failed", {})
    assert row.status_reason and row.status_reason.startswith("extraction failed")
    failure = (row.provenance or {})["failure"]
    assert len(failure["raw_answers"]) == 2 and "system(close, 1)" in failure["raw_answers"][1]
    assert any("unknown function" in p for p in failure["problems"])
    assert [c["purpose"] for c in (row.provenance or {})["llm_calls"]] == [
        "research_extract", "research_repair"]
    with sessions.begin() as s:
        assert [r.status for r in lifecycle.list_research(s, "failed")] == ["failed"]
        lifecycle.retire(s, row.id, reason="not a strategy video", actor="a")
