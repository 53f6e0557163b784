"""Every route: login required, CSRF on changes, GET changes nothing, methods, headers, no CORS."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from falcon.config import Settings
from falcon.db.models import Base
from falcon.web import create_app

from .conftest import AuthActions, csrf, sessions_of
from .factories import gen_everything

PUBLIC = {"auth.login", "auth.login_totp", "ops.healthz", "ops.prometheus", "static"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _routes() -> list[tuple[str, str, str]]:
    # An app that never connects (in-memory URL, no secret file) just to read its url_map.
    app = create_app(Settings(database_url="sqlite://"), test_config={"SECRET_KEY": "x"})
    out = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path, rule.endpoint))
    return sorted(out)


ROUTES = _routes()
PROTECTED = [r for r in ROUTES if r[2] not in PUBLIC]
UNSAFE_ROUTES = [r for r in ROUTES if r[0] in UNSAFE]
GET_ROUTES = [r for r in ROUTES if r[0] == "GET" and r[2] not in {"static", "live.stream"}]
ids = [f"{m} {p}" for m, p, _ in ROUTES]


def test_the_sweep_sees_every_area() -> None:
    blueprints = {e.split(".")[0] for _, _, e in ROUTES if "." in e}
    assert {
        "auth",
        "overview",
        "screener",
        "trading",
        "strategies",
        "research",
        "alerts",
        "system",
        "api_v1",
        "live",
        "ops",
    } <= blueprints
    assert len(UNSAFE_ROUTES) >= 8


@pytest.mark.parametrize(
    ("method", "path", "endpoint"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED]
)
def test_every_route_requires_login(
    sqlite_app: Flask, method: str, path: str, endpoint: str
) -> None:
    client = sqlite_app.test_client()
    token = csrf(client)  # a valid token, so that only the missing login can refuse the request
    response = client.open(path, method=method, headers={"X-CSRF-Token": token})
    if path.startswith(("/api/", "/events/")):
        assert response.status_code == 401
        assert response.is_json and "error" in response.json
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(
    ("method", "path", "endpoint"), UNSAFE_ROUTES, ids=[f"{m} {p}" for m, p, _ in UNSAFE_ROUTES]
)
def test_csrf_is_enforced_on_every_change(
    sqlite_app: Flask, method: str, path: str, endpoint: str
) -> None:
    client = sqlite_app.test_client()
    auth = AuthActions(sqlite_app, client)
    auth.create(admin=True)
    if endpoint not in {"auth.login", "auth.login_totp"}:
        assert auth.login().status_code == 302
    csrf(client)
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        response = client.open(path, method=method, headers=headers, data={"reason": "x"})
        assert response.status_code == 403, response.get_data(as_text=True)[:200]


def test_api_token_requests_need_no_csrf(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    auth = AuthActions(sqlite_app, client)
    auth.create(admin=True)
    token = auth.token()
    response = client.post(
        "/api/v1/paper/halt", headers={"Authorization": f"Bearer {token}"}, json={}
    )
    assert response.status_code == 200


def _snapshot(app: Flask) -> dict[str, list[Any]]:
    ignored = {("api_tokens", "last_used_at"), ("users", "last_login_at")}
    out = {}
    with sessions_of(app)() as s:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if (table.name, c.name) not in ignored]
            out[table.name] = [
                tuple(r) for r in s.execute(select(*cols).order_by(*table.primary_key.columns))
            ]
    return out


def test_get_never_changes_state(app: Flask, client: Any, logged_in: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        gen_everything(s)
    token = logged_in.token()
    before = _snapshot(app)
    for _method, path, _endpoint in GET_ROUTES:
        headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {}
        response = client.get(path, headers=headers)
        # /login and /login/totp send a logged-in user on; every other page has data to show.
        assert response.status_code == (302 if path.startswith("/login") else 200), path
    assert _snapshot(app) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/logout"),
        ("POST", "/"),
        ("PUT", "/api/v1/orders/1/cancel"),
        ("DELETE", "/api/v1/accounts"),
        ("GET", "/api/v1/paper/halt"),
        ("POST", "/healthz"),
        ("GET", "/trading/halt"),
        ("PATCH", "/system/"),
    ],
)
def test_wrong_methods_are_405(sqlite_app: Flask, method: str, path: str) -> None:
    client = sqlite_app.test_client()
    AuthActions(sqlite_app, client).create()
    AuthActions(sqlite_app, client).login()
    response = client.open(path, method=method, headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == 405
    assert "Allow" in response.headers
    if path.startswith("/api/"):
        assert response.json == {"error": response.json["error"]}


@pytest.mark.parametrize(
    "path", ["/login", "/healthz", "/api/v1/accounts", "/static/falcon.css", "/nope", "/"]
)
def test_security_headers(sqlite_app: Flask, path: str) -> None:
    response = sqlite_app.test_client().get(path)
    h = response.headers
    csp = h["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp
        and "frame-ancestors 'none'" in csp
    )
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "same-origin"
    assert h["Strict-Transport-Security"].startswith("max-age=")
    assert "Access-Control-Allow-Origin" not in h


def test_no_hsts_without_secure_cookies(tmp_path: Any) -> None:
    from .conftest import TEST_CONFIG

    app = create_app(
        Settings(database_url="sqlite://"),
        test_config=TEST_CONFIG | {"SESSION_COOKIE_SECURE": False},
    )
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers


def test_no_cors_even_when_asked(app: Flask, logged_in: AuthActions) -> None:
    client = app.test_client()
    token = logged_in.token()
    headers = {"Origin": "https://evil.example", "Authorization": f"Bearer {token}"}
    response = client.get("/api/v1/accounts", headers=headers)
    assert response.status_code == 200
    assert not any(k.lower().startswith("access-control-") for k, _ in response.headers)
    preflight = client.options(
        "/api/v1/paper/halt",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert not any(k.lower().startswith("access-control-") for k, _ in preflight.headers)


def test_session_cookie_flags(app: Flask, auth: AuthActions, client: Any) -> None:
    response = auth.login()
    cookie = next(
        v
        for k, v in response.headers.items()
        if k == "Set-Cookie" and v.startswith("falcon_session=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_secret_key_file_is_private_and_stable(tmp_path: Any) -> None:
    settings = Settings(home=tmp_path / "home")
    first = create_app(settings).config["SECRET_KEY"]
    key_file = tmp_path / "home" / "web_secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert create_app(settings).config["SECRET_KEY"] == first
    assert len(first) >= 40


def test_cluster_requires_the_secret_key() -> None:
    from falcon.errors import ConfigError

    with pytest.raises(ConfigError, match="FALCON_WEB_SECRET_KEY"):
        create_app(Settings(database_url="postgresql://falcon@db/falcon"))


def test_proxy_fix_when_configured(tmp_path: Any) -> None:
    from .conftest import TEST_CONFIG

    app = create_app(
        Settings(database_url="sqlite://"), test_config=TEST_CONFIG | {"PROXY_FIX": True}
    )

    @app.get("/_whoami")
    def _whoami() -> str:
        from flask import request

        return f"{request.remote_addr} {request.scheme}"

    from falcon.web.security import public

    public(_whoami)
    r = app.test_client().get(
        "/_whoami", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    )
    assert r.get_data(as_text=True) == "203.0.113.9 https"
