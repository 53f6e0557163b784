"""The one LLM client: any OpenAI-compatible chat-completions endpoint, with a budget.

OpenAI itself, Ollama and llama.cpp's server all speak the chat-completions API, so one client with
a configurable ``base_url`` and ``model`` covers them. Every call is recorded in ``llm_usage``
(tokens, cost, outcome) and refused once the month's spending reaches ``llm.monthly_budget_usd``.

Answers are untrusted data: they are parsed as JSON and validated against the caller's JSON
Schema, never executed. The API key comes only from ``FALCON_LLM_API_KEY`` and never appears in an
error message or a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonschema
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.db.models import LLMUsage
from falcon.errors import ConfigError, ExternalServiceError, FalconError

log = logging.getLogger(__name__)


class LLMNotConfigured(ConfigError):
    """No endpoint or model is configured; the message says which settings are missing."""


class BudgetExceeded(FalconError):
    """This month's LLM spending has reached the configured budget."""


class LLMCallFailed(ExternalServiceError):
    """The endpoint timed out, refused, or answered with an HTTP error."""


class LLMInvalidAnswer(FalconError):
    """The answer was not JSON or did not match the schema; ``raw`` keeps it for the record."""

    def __init__(self, message: str, raw: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.problems = problems or []


@dataclass(frozen=True)
class LLMAnswer:
    """A validated structured answer and what it cost."""

    data: dict[str, Any]
    raw: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def missing_settings(settings: Settings) -> list[str]:
    """The settings an LLM call needs that are not set (empty when ready)."""
    missing = []
    if not settings.llm.base_url:
        missing.append("llm.base_url (FALCON_LLM__BASE_URL)")
    if not settings.llm.model:
        missing.append("llm.model (FALCON_LLM__MODEL)")
    return missing


def month_to_date_cost(session: Session, now: datetime | None = None) -> float:
    """US dollars spent on LLM calls since the first of this month (UTC)."""
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    total = session.scalar(
        select(func.coalesce(func.sum(LLMUsage.cost_usd), 0.0)).where(LLMUsage.ts >= start)
    )
    return float(total or 0.0)


def _schema_problems(data: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        problems.append(f"{where}: {err.message}")
    return problems


class LLMClient:
    """Structured calls to the configured endpoint, metered against the monthly budget."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions

    @property
    def configured(self) -> bool:
        """True when an endpoint and a model are set."""
        return not missing_settings(self._settings)

    def _client(self) -> Any:
        from openai import OpenAI

        cfg = self._settings.llm
        # Local servers (Ollama, llama.cpp) need no key, but the client insists on one.
        key = self._settings.secrets.llm_api_key or "no-key"
        return OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)

    def _record(
        self, purpose: str, prompt: int, completion: int, cost: float, error: str | None
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                LLMUsage(
                    purpose=purpose,
                    model=self._settings.llm.model,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost_usd=cost,
                    ok=error is None,
                    error=error,
                )
            )

    def _cost(self, prompt: int, completion: int) -> float:
        cfg = self._settings.llm
        return prompt / 1000 * cfg.usd_per_1k_input_tokens + completion / 1000 * (
            cfg.usd_per_1k_output_tokens
        )

    def check_budget(self) -> float:
        """Dollars left this month; raises :class:`BudgetExceeded` when none are."""
        with self._sessions() as session:
            spent = month_to_date_cost(session)
        budget = self._settings.llm.monthly_budget_usd
        if spent >= budget:
            raise BudgetExceeded(
                f"LLM budget exhausted: ${spent:.4f} spent of ${budget:.2f} this month "
                "(raise llm.monthly_budget_usd to allow more)"
            )
        return budget - spent

    def complete_json(
        self,
        *,
        purpose: str,
        system: str,
        user: str,
        schema: dict[str, Any],
        schema_name: str = "answer",
        temperature: float = 0.0,
    ) -> LLMAnswer:
        """Ask for a JSON answer that conforms to ``schema``; validate it before returning.

        Raises LLMNotConfigured, BudgetExceeded, LLMCallFailed or LLMInvalidAnswer; each call that
        reached the endpoint is recorded with its tokens and cost, whatever its outcome.
        """
        missing = missing_settings(self._settings)
        if missing:
            raise LLMNotConfigured("no LLM configured: set " + " and ".join(missing))
        self.check_budget()
        import openai

        try:
            response = self._client().chat.completions.create(
                model=self._settings.llm.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": False},
                },
                temperature=temperature,
            )
        except openai.APITimeoutError:
            self._record(purpose, 0, 0, 0.0, "timeout")
            raise LLMCallFailed(
                f"LLM call timed out after {self._settings.llm.timeout_s:g}s"
            ) from None
        except openai.APIStatusError as exc:
            self._record(purpose, 0, 0, 0.0, f"HTTP {exc.status_code}")
            raise LLMCallFailed(f"LLM endpoint answered HTTP {exc.status_code}") from None
        except openai.APIError as exc:
            reason = type(exc).__name__
            self._record(purpose, 0, 0, 0.0, reason)
            raise LLMCallFailed(f"LLM endpoint unreachable ({reason})") from None

        usage = response.usage
        prompt = int(usage.prompt_tokens) if usage else 0
        completion = int(usage.completion_tokens) if usage else 0
        cost = self._cost(prompt, completion)
        raw = (response.choices[0].message.content or "") if response.choices else ""
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            self._record(purpose, prompt, completion, cost, "answer is not JSON")
            raise LLMInvalidAnswer("LLM answer is not JSON", raw) from None
        problems = _schema_problems(data, schema)
        if problems:
            self._record(purpose, prompt, completion, cost, "answer does not match the schema")
            raise LLMInvalidAnswer(
                f"LLM answer does not match the schema: {problems[0]}", raw, problems
            )
        self._record(purpose, prompt, completion, cost, None)
        log.info("llm %s: %d+%d tokens, $%.5f", purpose, prompt, completion, cost)
        return LLMAnswer(
            data=data,
            raw=raw,
            model=self._settings.llm.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
        )
