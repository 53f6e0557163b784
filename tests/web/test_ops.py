"""/healthz and /metrics: public, JSON health with 200/503, Prometheus text with DB gauges."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from falcon.errors import DataError

from .conftest import SQLITE_ONLY, AuthActions, make_app, sessions_of
from .factories import gen_everything


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["ok"] is True
    names = [c["check"] for c in body["checks"]]
    assert names[:2] == ["database", "migrations"] and len(names) > 2
    assert response.headers["Cache-Control"] == "no-store"


@SQLITE_ONLY
def test_healthz_503_when_data_check_fails(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(_settings: object, _engine: object = None) -> list:
        def stale() -> str:
            raise DataError("last session 2024-01-02 is 9 sessions behind")

        return [("data freshness", stale)]

    monkeypatch.setattr("falcon.data.health.data_checks", failing)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["ok"] is False
    assert {
        "check": "data freshness",
        "ok": False,
        "detail": "last session 2024-01-02 is 9 sessions behind",
    } in response.json["checks"]


def test_healthz_503_when_not_migrated(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'empty.db'}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    migrations = next(c for c in response.json["checks"] if c["check"] == "migrations")
    assert "falcon db upgrade" in migrations["detail"]


def test_healthz_503_when_database_unreachable() -> None:
    app = make_app("postgresql://falcon@127.0.0.1:1/falcon")  # nothing listens on port 1
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    database = response.json["checks"][0]
    assert database["check"] == "database" and database["ok"] is False
    assert "unreachable" in database["detail"]


def test_metrics(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        gen_everything(s)
    client.get("/login")
    client.get("/api/v1/accounts")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'falcon_http_requests_total{endpoint="auth.login",method="GET",status="200"} 1.0' in text
    assert (
        'falcon_http_requests_total{endpoint="api_v1.accounts",method="GET",status="401"} 1.0'
        in text
    )
    assert 'falcon_http_request_duration_seconds_bucket{endpoint="auth.login"' in text
    assert 'falcon_open_positions{account="main"} 1.0' in text
    assert 'falcon_account_equity_dollars{account="main"} 91802.5' in text
    assert 'falcon_account_cash_dollars{account="main"} 90000.0' in text
    assert 'falcon_account_halted{account="main"} 0.0' in text
    assert 'falcon_jobs{status="queued"} 1.0' in text
    assert 'falcon_data_last_import_timestamp_seconds{kind="day"}' in text
