"""The LLM client against a real chat-completions server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import load_settings
from falcon.db.models import LLMUsage
from falcon.llm import (
    BudgetExceeded,
    LLMCallFailed,
    LLMClient,
    LLMInvalidAnswer,
    LLMNotConfigured,
    missing_settings,
)

from .llm_server import ChatServer, Reply

SCHEMA = {
    "type": "object",
    "properties": {"rank": {"type": "integer", "minimum": 1}, "why": {"type": "string"}},
    "required": ["rank", "why"],
}


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def _client(chat: ChatServer, sessions: sessionmaker[Session], **env: str) -> LLMClient:
    base = {
        "FALCON_LLM__BASE_URL": chat.base_url,
        "FALCON_LLM__MODEL": "test-model",
        "FALCON_LLM__USD_PER_1K_INPUT_TOKENS": "0.01",
        "FALCON_LLM__USD_PER_1K_OUTPUT_TOKENS": "0.03",
        "FALCON_LLM_API_KEY": "sk-test-secret",
    }
    return LLMClient(load_settings(environ={**base, **env}), sessions)


def _usage(sessions: sessionmaker[Session]) -> list[LLMUsage]:
    with sessions() as s:
        return list(s.scalars(select(LLMUsage).order_by(LLMUsage.id)))


def test_structured_answer_is_validated_and_metered(chat: ChatServer, sessions) -> None:  # type: ignore[no-untyped-def]
    chat.queue(
        Reply(
            content=json.dumps({"rank": 1, "why": "strong"}),
            prompt_tokens=1000,
            completion_tokens=500,
        )
    )
    answer = _client(chat, sessions).complete_json(
        purpose="test", system="You rank.", user="AAPL", schema=SCHEMA, schema_name="rank"
    )
    assert answer.data == {"rank": 1, "why": "strong"}
    assert answer.cost_usd == pytest.approx(0.01 + 0.015)
    sent = chat.requests[0]
    assert sent["model"] == "test-model"
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert chat.headers[0]["authorization"] == "Bearer sk-test-secret"
    [row] = _usage(sessions)
    assert (row.purpose, row.prompt_tokens, row.completion_tokens, row.ok) == (
        "test",
        1000,
        500,
        True,
    )
    assert row.cost_usd == pytest.approx(0.025)


def test_invalid_answers_are_refused_and_kept(chat: ChatServer, sessions) -> None:  # type: ignore[no-untyped-def]
    client = _client(chat, sessions)
    chat.queue(Reply(content="Sure! Here is Python: import os"), Reply(content='{"rank": 0}'))
    with pytest.raises(LLMInvalidAnswer) as info:
        client.complete_json(purpose="t", system="s", user="u", schema=SCHEMA)
    assert info.value.raw == "Sure! Here is Python: import os"
    with pytest.raises(LLMInvalidAnswer) as info2:
        client.complete_json(purpose="t", system="s", user="u", schema=SCHEMA)
    assert any("why" in p for p in info2.value.problems)
    assert any("rank" in p for p in info2.value.problems)
    assert [r.ok for r in _usage(sessions)] == [False, False]


def test_http_errors_and_timeouts_are_clear_and_hide_the_key(chat: ChatServer, sessions) -> None:  # type: ignore[no-untyped-def]
    chat.queue(Reply(status=500))
    with pytest.raises(LLMCallFailed, match="HTTP 500") as info:
        _client(chat, sessions).complete_json(purpose="t", system="s", user="u", schema=SCHEMA)
    assert "sk-test-secret" not in str(info.value)
    chat.queue(Reply(delay_s=2.0))
    with pytest.raises(LLMCallFailed, match="timed out"):
        _client(chat, sessions, FALCON_LLM__TIMEOUT_S="0.3").complete_json(
            purpose="t", system="s", user="u", schema=SCHEMA
        )
    assert [r.error for r in _usage(sessions)] == ["HTTP 500", "timeout"]


def test_refused_connection(sessions) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        environ={"FALCON_LLM__BASE_URL": "http://127.0.0.1:1/v1", "FALCON_LLM__MODEL": "m"}
    )
    with pytest.raises(LLMCallFailed, match="unreachable"):
        LLMClient(settings, sessions).complete_json(
            purpose="t", system="s", user="u", schema=SCHEMA
        )


def test_budget_is_enforced(chat: ChatServer, sessions) -> None:  # type: ignore[no-untyped-def]
    client = _client(chat, sessions, FALCON_LLM__MONTHLY_BUDGET_USD="0.03")
    ok = json.dumps({"rank": 2, "why": "x"})
    chat.queue(
        Reply(content=ok, prompt_tokens=1000, completion_tokens=500),
        Reply(content=ok, prompt_tokens=1000, completion_tokens=500),
    )
    client.complete_json(purpose="t", system="s", user="u", schema=SCHEMA)  # $0.025
    client.complete_json(purpose="t", system="s", user="u", schema=SCHEMA)  # $0.050 > budget
    with pytest.raises(BudgetExceeded, match="budget exhausted"):
        client.complete_json(purpose="t", system="s", user="u", schema=SCHEMA)
    assert len(chat.requests) == 2  # the refused call never left the machine


def test_not_configured_says_which_settings(sessions) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(environ={})
    assert len(missing_settings(settings)) == 2
    with pytest.raises(LLMNotConfigured, match=r"llm.base_url \(FALCON_LLM__BASE_URL\)"):
        LLMClient(settings, sessions).complete_json(
            purpose="t", system="s", user="u", schema=SCHEMA
        )
