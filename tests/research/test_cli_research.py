"""``falcon research`` end to end: the loopback captions server, the loopback LLM, both DBs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from falcon.cli import main
from tests.llm_server import ChatServer, Reply

from .conftest import VTT, FileServer, InfoJson, SpecKit, envelope


def _run(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(main, list(args), catch_exceptions=False)


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_youtube_list_show_retire(runner: CliRunner, cli_env: dict[str, str], chat: ChatServer,
                                  info_json: InfoJson, spec_kit: SpecKit) -> None:
    path = info_json(manual={"en": {"vtt": VTT}})
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    out = _json(_run(runner, "research", "youtube", "--info-json", str(path), "--no-backtest",
                     "--json"))
    assert (out["status"], out["name"], out["confidence"]) == ("extracted", "yt-vid00000001", 0.8)
    assert out["rules"][0]["quote_found"] is True and out["llm_calls"] == 1
    sid = str(out["strategy_id"])

    chat.queue(Reply(content=envelope(spec_kit.valid)))
    text = _run(runner, "research", "youtube", "--info-json", str(path), "--no-backtest")
    assert text.exit_code == 0, text.output
    assert "(yt-vid00000001-2): extracted" in text.output
    assert '[00:20] stop — "a ten percent stop" (quote not found in the transcript)' in text.output
    listed = _json(_run(runner, "research", "list", "--json"))
    assert [r["id"] for r in listed] == [int(sid) + 1, int(sid)]  # newest first
    table = _run(runner, "research", "list")
    assert "yt-vid00000001" in table.output and "extracted" in table.output
    shown = _json(_run(runner, "research", "show", sid, "--json"))
    assert shown["spec"] == spec_kit.valid and shown["provenance"]["video"]["title"]
    human = _run(runner, "research", "show", sid)
    assert "RSI swing trading" in human.output and "spec (use --json" in human.output

    refused = _run(runner, "research", "promote", sid, "--reason", "looks good")
    assert refused.exit_code == 65 and "research backtest ID" in refused.output
    retired = _json(_run(runner, "research", "retire", sid, "--reason", "not convincing",
                         "--json"))
    assert (retired["status"], retired["status_reason"]) == ("retired", "not convincing")
    retired_list = _json(_run(runner, "research", "list", "--status", "retired", "--json"))
    assert retired_list[0]["id"] == int(sid)
    missing = _run(runner, "research", "show", "424242")
    assert missing.exit_code == 66 and "no researched strategy" in missing.output


def test_failed_extraction_exits_non_zero_and_is_listed(runner: CliRunner, cli_env: dict[str, str],
                                                        chat: ChatServer, info_json: InfoJson,
                                                        spec_kit: SpecKit) -> None:
    chat.queue(Reply(content="{}"), Reply(content="not json"))
    result = _run(runner, "research", "youtube", "--info-json",
                  str(info_json(manual={"en": {"vtt": VTT}})), "--no-backtest")
    assert result.exit_code == 65
    assert result.output.startswith("error: the LLM's strategy is invalid after a repair round")
    assert "status failed" in result.output
    [row] = _json(_run(runner, "research", "list", "--status", "failed", "--json"))
    assert row["status"] == "failed"


def test_no_captions_is_a_clear_error(runner: CliRunner, cli_env: dict[str, str],
                                      info_json: InfoJson, chat: ChatServer) -> None:
    result = _run(runner, "research", "youtube", "--info-json", str(info_json()), "--lang", "en")
    assert result.exit_code == 66
    assert result.output == ("error: video vid00000001 has no captions in 'en' (available: none); "
                             "try --lang with one of those\n")
    assert chat.requests == []


def test_not_configured_names_the_settings(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                           db_url: str, info_json: InfoJson,
                                           files: FileServer) -> None:
    monkeypatch.setenv("FALCON_DATABASE_URL", db_url)
    result = _run(runner, "research", "youtube", "--info-json",
                  str(info_json(manual={"en": {"vtt": VTT}})))
    assert result.exit_code == 78
    assert result.output == ("error: no LLM configured: set llm.base_url (FALCON_LLM__BASE_URL) "
                             "and llm.model (FALCON_LLM__MODEL)\n")
    assert files.hits == []  # refused before anything was fetched


def test_budget_exhausted_is_a_clear_error(runner: CliRunner, cli_env: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch, chat: ChatServer,
                                           info_json: InfoJson) -> None:
    monkeypatch.setenv("FALCON_LLM__MONTHLY_BUDGET_USD", "0")
    result = _run(runner, "research", "youtube", "--info-json",
                  str(info_json(manual={"en": {"vtt": VTT}})))
    assert result.exit_code == 1
    assert result.output.startswith("error: LLM budget exhausted: $0.0000 spent of $0.00")
    assert chat.requests == []


def test_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["research", "youtube"])
    assert result.exit_code == 2 and "give a YouTube URL or --info-json" in result.output
    result = runner.invoke(main, ["research", "youtube", "https://youtu.be/x", "--basket", "A;B"])
    assert result.exit_code == 2 and "not a ticker" in result.output
    result = runner.invoke(main, ["research", "promote", "1"])
    assert result.exit_code == 2 and "--reason" in result.output


def test_queue_submits_a_research_job(runner: CliRunner, cli_env: dict[str, str],
                                      info_json: InfoJson, files: FileServer) -> None:
    path = info_json(manual={"en": {"vtt": VTT}})
    out = _json(_run(runner, "research", "youtube", "--info-json", str(path), "--queue", "--json",
                     "--basket", "aapl,msft"))
    from sqlalchemy import select

    from falcon.cli.context import AppContext
    from falcon.db.models import Job

    ctx = AppContext()
    with ctx.sessions() as s:
        job = s.get(Job, out["job_id"])
        assert job is not None and job.kind == "research"
        assert job.payload == {"info_json": str(path.resolve()), "lang": "en", "backtest": True,
                               "basket": ["AAPL", "MSFT"], "actor": "cli"}
        assert s.scalars(select(Job)).all() == [job]
    ctx.close()
    assert files.hits == []  # queued, not run


def test_real_backtest_on_the_sample_then_promote(runner: CliRunner, cli_env: dict[str, str],
                                                  chat: ChatServer, info_json: InfoJson,
                                                  spec_kit: SpecKit) -> None:
    from falcon.cli.context import AppContext
    from falcon.data.sample import load_sample
    from falcon.db.models import BacktestRun

    ctx = AppContext()
    load_sample(ctx.settings, ctx.sessions)
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    out = _json(_run(runner, "research", "youtube", "--info-json",
                     str(info_json(manual={"en": {"vtt": VTT}})), "--basket", "AAPL,MSFT",
                     "--start", "2019-01-01", "--end", "2020-12-31", "--json"))
    assert out["status"] == "backtested", out
    evaluation = out["evaluation"]
    assert evaluation["lookahead"] == {"clean": True, "differences": 0, "examples": []}
    assert (evaluation["tickers"], evaluation["start"], evaluation["end"]) == (
        ["AAPL", "MSFT"], "2019-01-01", "2020-12-31")
    assert evaluation["trades"] > 0 and "return_pct" in evaluation["metrics"]
    with ctx.sessions() as s:
        run = s.query(BacktestRun).one()
        assert run.strategy_id == out["strategy_id"] and len(run.trades) == evaluation["trades"]
    ctx.close()

    sid = str(out["strategy_id"])
    promoted = _json(_run(runner, "research", "promote", sid, "--reason", "clean, 2 years",
                          "--json"))
    assert promoted["status"] == "paper"
    again = _run(runner, "research", "backtest", sid)
    assert again.exit_code == 65 and "only extracted or backtested" in again.output
    history = _json(_run(runner, "research", "show", sid, "--json"))["provenance"]["history"]
    assert [h["to"] for h in history] == ["backtested", "paper"]
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    default = _json(_run(runner, "research", "youtube", "--info-json",
                         str(info_json(manual={"en": {"vtt": VTT}})), "--no-backtest", "--json"))
    redo = _json(_run(runner, "research", "backtest", str(default["strategy_id"]), "--start",
                      "2020-01-01", "--json"))
    # No --basket: the sample universe's stocks (its index levels are benchmarks, not trades).
    assert len(redo["tickers"]) == 36 and redo["tickers"] == sorted(redo["tickers"])
    assert {"AAPL", "AMZN", "GOOG", "GOOGL", "META", "MSFT", "NFLX", "NVDA", "JPM", "XOM"} <= set(
        redo["tickers"]) and not any(t.startswith("I:") for t in redo["tickers"])
