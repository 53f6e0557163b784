"""Pages: what they show, the forms that change things, and escaping of untrusted text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from falcon.db.models import AlertEvent, Event, Job, Order, PaperAccount, ServiceRun

from .conftest import SQLITE_ONLY, AuthActions, csrf, sessions_of
from .factories import gen_account, gen_everything, gen_screen_run, gen_strategy

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
TEMPLATES = Path(__file__).parents[2] / "falcon" / "web" / "templates"


@pytest.fixture
def data(app: Flask, logged_in: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        gen_everything(s)


def test_pages_show_the_database(client: FlaskClient, data: None) -> None:
    def page(path: str) -> str:
        response = client.get(path)
        assert response.status_code == 200, path
        return response.get_data(as_text=True)

    assert "main" in page("/") and "momentum" in page("/")
    assert "AAPL" in page("/trading/") and "Cancel" in page("/trading/")
    assert "momentum" in page("/screener/") and "Strong momentum." in page("/screener/runs/1")
    assert "sma-cross" in page("/strategies/") and "Queue backtest" in page("/strategies/1")
    backtest = page("/strategies/backtests/1")
    assert "sharpe" in backtest and "next bar's open" in backtest and 'id="equity-data"' in backtest
    assert "My edge" in page("/research/")
    assert "AAPL crossed 200" in page("/alerts/")
    system = page("/system/")
    assert "migrations" in system and "screen" in system and "at head" in system


@SQLITE_ONLY
def test_missing_rows_are_404_pages(client: FlaskClient, logged_in: AuthActions) -> None:
    for path in ("/screener/runs/5", "/strategies/5", "/strategies/backtests/5"):
        response = client.get(path)
        assert response.status_code == 404
        assert "text/html" in response.content_type


@SQLITE_ONLY
def test_empty_database_pages_render(client: FlaskClient, logged_in: AuthActions) -> None:
    for path in (
        "/",
        "/screener/",
        "/trading/",
        "/strategies/",
        "/research/",
        "/alerts/",
        "/system/",
    ):
        assert client.get(path).status_code == 200, path


def test_halt_and_resume_forms(app: Flask, client: FlaskClient, data: None) -> None:
    response = client.post(
        "/trading/halt", data={"csrf_token": csrf(client), "account_id": "1", "reason": "news"}
    )
    assert response.status_code == 302
    assert "Halted main" in client.get("/trading/").get_data(as_text=True)
    with sessions_of(app)() as s:
        account = s.get(PaperAccount, 1)
        assert account is not None and account.halted and account.halt_reason == "news"
    client.post("/trading/resume", data={"csrf_token": csrf(client)})
    with sessions_of(app)() as s:
        account = s.get(PaperAccount, 1)
        assert account is not None and not account.halted
        assert (
            s.scalars(select(Event.kind).order_by(Event.id.desc()).limit(1)).one()
            == "account_resumed"
        )


@SQLITE_ONLY
def test_cancel_form(app: Flask, client: FlaskClient, data: None) -> None:
    client.post("/trading/orders/1/cancel", data={"csrf_token": csrf(client)})
    with sessions_of(app)() as s:
        order = s.get(Order, 1)
        assert order is not None and order.status == "canceled"
    again = client.post("/trading/orders/1/cancel", data={"csrf_token": csrf(client)})
    assert again.status_code == 409


@SQLITE_ONLY
def test_backtest_form(app: Flask, client: FlaskClient, data: None) -> None:
    form = {"csrf_token": csrf(client), "symbols": "aapl, msft", "start": "2023-01-03", "end": ""}
    client.post("/strategies/1/backtest", data=form)
    assert "Backtest queued as job 2" in client.get("/strategies/1").get_data(as_text=True)
    with sessions_of(app)() as s:
        job = s.get(Job, 2)
        assert job is not None and job.payload["symbols"] == ["AAPL", "MSFT"]
    client.post("/strategies/1/backtest", data=form | {"symbols": ""})
    assert "symbols: expected a list" in client.get("/strategies/1").get_data(as_text=True)


def test_untrusted_text_is_escaped_everywhere(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    with sessions_of(app).begin() as s:
        account = gen_account(s, name=HOSTILE, halted=True, halt_reason=HOSTILE)
        s.add(
            Order(
                account_id=account.id,
                client_order_id="h1",
                ticker="AAPL",
                side="buy",
                type="market",
                qty=1,
                reason=HOSTILE,
            )
        )
        strategy = gen_strategy(
            s, name=HOSTILE, status_reason=HOSTILE, spec={"description": HOSTILE}
        )
        gen_strategy(
            s,
            name="video",
            source="research",
            status_reason=HOSTILE,
            provenance={"url": "javascript:alert(1)", "title": HOSTILE, "channel": HOSTILE},
        )
        gen_screen_run(
            s,
            ranking_note=HOSTILE,
            llm={"summary": HOSTILE, "</script><script>alert(2)//": HOSTILE, "risks": [HOSTILE]},
        )
        s.add(AlertEvent(ticker="AAPL", message=HOSTILE))
        s.add(ServiceRun(name=HOSTILE, outcome="failed", error=HOSTILE))
        s.add(Event(kind="note", payload={"text": HOSTILE}))
        s.flush()
        strategy_id = strategy.id
    pages = [
        "/",
        "/trading/",
        "/screener/runs/1",
        f"/strategies/{strategy_id}",
        "/strategies/",
        "/research/",
        "/alerts/",
        "/system/",
    ]
    for path in pages:
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html, path
        assert (
            "alert(2)" not in html
            or "&lt;/script&gt;&lt;script&gt;alert(2)" in html
            or "\\u003c/script\\u003e" in html
        ), path
        assert 'href="javascript:' not in html, path
    run_page = client.get("/screener/runs/1").get_data(as_text=True)
    assert ESCAPED in run_page
    assert (
        "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in run_page
    )  # |tojson in the JSON island
    assert ESCAPED in client.get("/research/").get_data(as_text=True)


def test_templates_never_mark_data_safe() -> None:
    templates = list(TEMPLATES.rglob("*.html"))
    assert len(templates) > 10
    for template in templates:
        code = re.sub(r"{#.*?#}", "", template.read_text(), flags=re.S)  # comments may mention it
        assert not re.search(r"\|\s*safe\b", code), template
        assert "autoescape false" not in code and "Markup" not in code, template
