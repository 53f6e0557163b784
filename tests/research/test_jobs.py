"""The ``research`` job handler, as a worker runs it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from falcon.db.models import Strategy
from falcon.errors import ValidationError
from falcon.jobs.registry import registry
from falcon.research.jobs import payload_options, run_research_job
from tests.llm_server import ChatServer, Reply

from .conftest import VTT, InfoJson, SpecKit, envelope


class _Progress:
    job_id, worker_id, attempt = 7, "test:1", 1
    stopping = False

    def __init__(self) -> None:
        self.reports: list[tuple[float | None, str | None]] = []

    def __call__(self, fraction: float | None = None, note: str | None = None) -> None:
        self.reports.append((fraction, note))


def test_the_handler_researches_and_reports_progress(cli_env: dict[str, str], sessions,  # type: ignore[no-untyped-def]
                                                     chat: ChatServer, info_json: InfoJson,
                                                     spec_kit: SpecKit) -> None:
    assert registry.resolve("research") is run_research_job
    chat.queue(Reply(content=envelope(spec_kit.valid)))
    progress = _Progress()
    result = run_research_job({"info_json": str(info_json(manual={"en": {"vtt": VTT}})),
                               "backtest": False, "actor": "alice"}, progress)
    assert result["status"] == "extracted" and "spec" not in result
    fractions = [f for f, _ in progress.reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with sessions() as s:
        row = s.scalars(select(Strategy)).one()
        assert (row.id, row.status) == (result["strategy_id"], "extracted")
        assert row.provenance is not None and row.provenance["video"]["video_id"] == "vid00000001"


@pytest.mark.parametrize(("payload", "message"), [
    ({}, "exactly one of url and info_json"),
    ({"url": "https://youtu.be/x", "info_json": "/x"}, "exactly one"),
    ({"url": "https://youtu.be/x", "rm": "-rf"}, "unknown payload keys rm"),
    ({"url": "https://youtu.be/x", "basket": "AAPL"}, "basket must be a list"),
    ({"url": "https://youtu.be/x", "start": "yesterday"}, "start must be a date"),
])
def test_bad_payloads_are_refused(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        payload_options(payload)
