"""/api/v1: token auth and revocation, data, actions, errors, and the OpenAPI document."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from falcon.db.models import AuditEntry, Event, Job, Order, PaperAccount
from falcon.web import users
from falcon.web.api.v1 import openapi_document

from .conftest import SQLITE_ONLY, AuthActions, csrf, sessions_of
from .factories import gen_everything


@pytest.fixture
def api(app: Flask, auth: AuthActions) -> dict[str, str]:
    """Bearer headers for alice, with one of every row in the database."""
    with sessions_of(app).begin() as s:
        gen_everything(s)
    return {"Authorization": f"Bearer {auth.token()}"}


def test_token_auth_and_revocation(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    token = auth.token(name="laptop")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).json == {
        "username": "alice",
        "is_admin": True,
        "totp": False,
    }
    with sessions_of(app).begin() as s:
        assert users.revoke_tokens(s, "alice", "laptop") == 1
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json == {"error": "invalid or revoked API token"}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer ", "Basic YWxpY2U6eA==", "Bearer falcon_nope", "token"]
)
def test_bad_authorization_headers_are_401(
    client: FlaskClient, auth: AuthActions, header: str
) -> None:
    response = client.get("/api/v1/accounts", headers={"Authorization": header})
    assert response.status_code == 401
    assert "error" in response.json


@SQLITE_ONLY
def test_only_the_token_hash_is_stored(app: Flask, auth: AuthActions) -> None:
    from falcon.db.models import ApiToken

    token = auth.token()
    with sessions_of(app)() as s:
        stored = s.scalars(select(ApiToken.token_sha256)).one()
    assert token not in stored and len(stored) == 64


@SQLITE_ONLY
def test_session_cookie_works_for_the_pages_fetch(
    client: FlaskClient, logged_in: AuthActions
) -> None:
    assert client.get("/api/v1/accounts").status_code == 200
    assert client.post("/api/v1/paper/halt", json={}).status_code == 403  # no CSRF header
    response = client.post("/api/v1/paper/halt", json={}, headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == 200


def test_lists_and_details(client: FlaskClient, api: dict[str, str]) -> None:
    def get(path: str) -> dict:
        response = client.get(path, headers=api)
        assert response.status_code == 200, (path, response.json)
        return response.json

    accounts = get("/api/v1/accounts")["items"]
    assert accounts[0]["name"] == "main"
    assert accounts[0]["cash"] == 90_000.0
    assert accounts[0]["equity"] == pytest.approx(90_000 + 10 * 180.25)
    assert get("/api/v1/accounts/1")["open_positions"] == 1
    assert get("/api/v1/positions?account_id=1")["items"][0]["avg_cost"] == 180.25
    orders = get("/api/v1/orders?status=open")
    assert [o["ticker"] for o in orders["items"]] == ["AAPL"] and orders["next_before_id"] is None
    assert get("/api/v1/orders?status=filled")["items"] == []
    assert get("/api/v1/fills")["items"][0]["fee"] == 1.25
    assert get("/api/v1/fills")["items"][0]["ts"].startswith("2024-03-01T15:30:00")
    run = get("/api/v1/screener/runs/1")
    assert run["as_of"] == "2024-03-01" and [p["rank"] for p in run["picks"]] == [1, 2]
    assert len(get("/api/v1/screener/runs/1/picks")["items"]) == 2
    assert get("/api/v1/screener/runs?profile=momentum")["items"][0]["id"] == 1
    assert {s["name"] for s in get("/api/v1/strategies")["items"]} == {"sma-cross", "from-video"}
    assert "spec" in get("/api/v1/strategies/1")
    assert [s["name"] for s in get("/api/v1/research/submissions")["items"]] == ["from-video"]
    backtest = get("/api/v1/backtests/1")
    assert backtest["metrics"]["sharpe"] == 1.1 and backtest["trades"][0]["pnl"] == 50.0
    assert get("/api/v1/backtests?strategy_id=1")["items"][0]["id"] == 1
    assert get("/api/v1/alerts/rules")["items"][0]["channels"] == ["slack"]
    assert get("/api/v1/alerts/events?rule_id=1")["items"][0]["message"] == "AAPL crossed 200"
    assert get("/api/v1/jobs/1")["kind"] == "backtest"


@SQLITE_ONLY
def test_paging(app: Flask, client: FlaskClient, api: dict[str, str]) -> None:
    with sessions_of(app).begin() as s:
        account = s.get(PaperAccount, 1)
        assert account is not None
        for n in range(2, 8):
            s.add(
                Order(
                    account_id=account.id,
                    client_order_id=f"p{n}",
                    ticker="MSFT",
                    side="buy",
                    type="market",
                    qty=1,
                )
            )
    first = client.get("/api/v1/orders?limit=3", headers=api).json
    assert [o["id"] for o in first["items"]] == [7, 6, 5] and first["next_before_id"] == 5
    second = client.get(
        f"/api/v1/orders?limit=3&before_id={first['next_before_id']}", headers=api
    ).json
    assert [o["id"] for o in second["items"]] == [4, 3, 2]


def test_halt_and_resume_write_events(app: Flask, client: FlaskClient, api: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/paper/halt", json={"account_id": 1, "reason": "drawdown"}, headers=api
    )
    assert response.status_code == 200
    assert response.json["items"][0]["halted"] is True
    assert client.get("/api/v1/accounts/1", headers=api).json["halt_reason"] == "drawdown"
    assert client.post("/api/v1/paper/resume", headers=api).json["items"][0]["halted"] is False
    with sessions_of(app)() as s:
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        payload = s.scalars(select(Event).where(Event.kind == "account_halted")).one().payload
        actions = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert kinds[-2:] == ["account_halted", "account_resumed"]
    assert actions == ["paper.halted", "paper.resumed"]
    assert payload == {"account_id": 1, "account": "main", "reason": "drawdown", "by": "alice"}


def test_cancel_order(app: Flask, client: FlaskClient, api: dict[str, str]) -> None:
    response = client.post("/api/v1/orders/1/cancel", headers=api)
    assert response.status_code == 200 and response.json["status"] == "canceled"
    again = client.post("/api/v1/orders/1/cancel", headers=api)
    assert again.status_code == 409 and "cannot be cancelled" in again.json["error"]
    assert client.post("/api/v1/orders/99/cancel", headers=api).status_code == 404
    with sessions_of(app)() as s:
        entry = s.scalars(select(AuditEntry)).one()
    assert (entry.actor, entry.action, entry.subject) == (
        "alice",
        "order.cancel_requested",
        "coid-1-1",
    )


def test_start_backtest_queues_a_job(app: Flask, client: FlaskClient, api: dict[str, str]) -> None:
    body = {
        "strategy_id": 1,
        "symbols": ["msft", "AAPL"],
        "start": "2023-01-03",
        "end": "2023-06-30",
    }
    response = client.post("/api/v1/backtests", json=body, headers=api)
    assert response.status_code == 202, response.json
    job = response.json["job"]
    assert job["kind"] == "backtest" and job["status"] == "queued"
    assert job["payload"] == {
        "strategy_id": 1,
        "strategy_name": "sma-cross",
        "symbols": ["AAPL", "MSFT"],
        "start": "2023-01-03",
        "end": "2023-06-30",
        "params": {},
        "requested_by": "alice",
    }
    assert (
        response.headers["Location"] == response.json["status_url"] == f"/api/v1/jobs/{job['id']}"
    )
    assert client.get(response.json["status_url"], headers=api).json["status"] == "queued"
    with sessions_of(app)() as s:
        assert s.scalars(select(Job).where(Job.id == job["id"])).one().kind == "backtest"


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"strategy_id": 1, "symbols": []}, 422, "symbols"),
        ({"strategy_id": 1, "symbols": ["<script>"]}, 422, "ticker"),
        ({"strategy_id": 1, "symbols": ["AAPL"], "start": "2024-13-01"}, 422, "start"),
        (
            {"strategy_id": 1, "symbols": ["AAPL"], "start": "2024-02-01", "end": "2024-01-01"},
            422,
            "after end",
        ),
        ({"symbols": ["AAPL"]}, 422, "strategy_id"),
        ({"strategy_id": 1, "symbols": ["AAPL"], "code": "import os"}, 422, "unknown field"),
        ({"strategy_id": 99, "symbols": ["AAPL"]}, 404, "no strategy"),
        ([1, 2], 422, "JSON object"),
    ],
)
def test_backtest_request_errors(
    client: FlaskClient, api: dict[str, str], body: object, status: int, needle: str
) -> None:
    response = client.post("/api/v1/backtests", json=body, headers=api)
    assert response.status_code == status
    text = response.json["error"] + " ".join(response.json.get("problems", []))
    assert needle in text


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/v1/orders?limit=0", {}, 400),
        ("GET", "/api/v1/orders?limit=abc", {}, 400),
        ("GET", "/api/v1/orders?before_id=-1", {}, 400),
        ("GET", "/api/v1/orders?status=%00", {}, 400),
        ("GET", "/api/v1/orders/99999999999999999999", {}, 404),
        ("GET", "/api/v1/accounts/9223372036854775807", {}, 404),
        ("GET", "/api/v1/nope", {}, 404),
        (
            "POST",
            "/api/v1/paper/halt",
            {"data": "not json", "content_type": "application/json"},
            400,
        ),
        ("POST", "/api/v1/paper/halt", {"json": {"account_id": "x"}}, 422),
        ("POST", "/api/v1/paper/halt", {"json": {"account_id": 12}}, 404),
        ("POST", "/api/v1/paper/halt", {"json": {"reason": "a\x00b"}}, 422),
        ("DELETE", "/api/v1/orders/1", {}, 405),
    ],
)
def test_errors_are_json(
    client: FlaskClient, api: dict[str, str], method: str, path: str, kwargs: dict, status: int
) -> None:
    response = client.open(path, method=method, headers=api, **kwargs)
    assert response.status_code == status
    assert response.is_json and isinstance(response.json["error"], str)


@SQLITE_ONLY
def test_openapi_lists_every_route(app: Flask) -> None:
    doc = openapi_document()
    documented = {(m.upper(), "/api/v1" + p) for p, ops in doc["paths"].items() for m in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api_v1."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {(m, path) for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert routes == documented


@SQLITE_ONLY
def test_openapi_is_served_to_logged_in_clients(client: FlaskClient, api: dict[str, str]) -> None:
    assert client.get("/api/v1/openapi.json").status_code == 401
    assert client.get("/api/v1/openapi.json", headers=api).json["openapi"].startswith("3.")
