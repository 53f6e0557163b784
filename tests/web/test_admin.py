"""Admin-only actions: halting, resuming and cancelling orders, promoting and retiring strategies.

A user without ``is_admin`` reads everything but gets 403 for these, through the page forms (with
a valid CSRF token, so the refusal is the admin check's) and through the API (token and cookie).
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from falcon.db.models import Order, PaperAccount, Strategy
from falcon.web.security import ADMIN_ONLY_MESSAGE

from .conftest import AuthActions, csrf, sessions_of
from .factories import gen_everything
from .test_research_pages import _research

PAGE_POSTS = [
    "/trading/halt",
    "/trading/resume",
    "/trading/orders/{order}/cancel",
    "/research/{strategy}/promote",
    "/research/{strategy}/retire",
]
API_POSTS = [
    "/api/v1/paper/halt",
    "/api/v1/paper/resume",
    "/api/v1/orders/{order}/cancel",
    "/api/v1/research/{strategy}/promote",
    "/api/v1/research/{strategy}/retire",
]


@pytest.fixture
def ids(app: Flask, auth: AuthActions) -> dict[str, int]:
    """One of every row, a backtested clean strategy, and bob (not an admin) logged in."""
    with sessions_of(app).begin() as s:
        gen_everything(s)
    strategy = _research(app, status="backtested", clean=True)
    with sessions_of(app)() as s:
        order = s.scalars(select(Order.id).where(Order.status == "open")).first()
    assert order is not None
    auth.create("bob")
    assert auth.login("bob").status_code == 302
    return {"order": order, "strategy": strategy}


def _unchanged(app: Flask, ids: dict[str, int]) -> None:
    with sessions_of(app)() as s:
        assert not any(s.scalars(select(PaperAccount.halted)))
        order = s.get(Order, ids["order"])
        assert order is not None and order.status == "open"
        strategy = s.get(Strategy, ids["strategy"])
        assert strategy is not None and strategy.status == "backtested"


@pytest.mark.parametrize("path", PAGE_POSTS)
def test_non_admin_gets_403_from_the_forms(
    app: Flask, client: FlaskClient, ids: dict[str, int], path: str
) -> None:
    form = {"csrf_token": csrf(client), "reason": "because", "account_id": "1"}
    response = client.post(path.format(**ids), data=form)
    assert response.status_code == 403
    assert "only an admin" in response.get_data(as_text=True)
    _unchanged(app, ids)


@pytest.mark.parametrize("path", API_POSTS)
def test_non_admin_gets_403_from_the_api(
    app: Flask, client: FlaskClient, auth: AuthActions, ids: dict[str, int], path: str
) -> None:
    bearer = {"Authorization": f"Bearer {auth.token('bob')}"}
    response = client.post(path.format(**ids), json={"reason": "because"}, headers=bearer)
    assert response.status_code == 403 and response.json == {"error": ADMIN_ONLY_MESSAGE}
    # The page's own fetch (cookie and CSRF header) is refused the same way.
    cookie = client.post(path.format(**ids), json={"reason": "because"},
                         headers={"X-CSRF-Token": csrf(client)})
    assert cookie.status_code == 403 and cookie.json == {"error": ADMIN_ONLY_MESSAGE}
    _unchanged(app, ids)


def test_non_admin_sees_no_controls_but_reads_everything(
    client: FlaskClient, ids: dict[str, int]
) -> None:
    trading = client.get("/trading/").get_data(as_text=True)
    assert "Open orders" in trading
    for action in ("/trading/halt", "/trading/resume", f"/trading/orders/{ids['order']}/cancel"):
        assert f'action="{action}"' not in trading
    research = client.get(f"/research/{ids['strategy']}").get_data(as_text=True)
    assert "Only an admin can promote or retire" in research
    assert "/promote" not in research and "/retire" not in research
    assert client.get("/api/v1/accounts").status_code == 200


def test_admin_can_halt_and_sees_the_controls(
    app: Flask, client: FlaskClient, auth: AuthActions, ids: dict[str, int]
) -> None:
    auth.logout()
    assert auth.login("alice").status_code == 302
    assert 'action="/trading/halt"' in client.get("/trading/").get_data(as_text=True)
    response = client.post("/trading/halt", data={"csrf_token": csrf(client), "reason": "x"})
    assert response.status_code == 302
    with sessions_of(app)() as s:
        assert all(s.scalars(select(PaperAccount.halted)))
