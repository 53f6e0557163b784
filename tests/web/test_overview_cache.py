"""The overview's content is cached per worker: shared by users, never stale, never their own.

The content (accounts, equity chart, screen, fills, events) is rendered once and reused until
``views.overview.page_version`` moves; the frame (username, CSRF token) is rendered per request.
``_content`` is wrapped to count renders, so each test can see a hit from a rebuild.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from falcon.db.models import Event, PaperAccount, Position, ScreenRun
from falcon.web.views import overview

from .conftest import AuthActions, csrf, sessions_of
from .factories import gen_everything, gen_fill, gen_order


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per render of the overview's content."""
    calls: list[int] = []
    real = overview._content

    def counted(s: object) -> object:
        calls.append(1)
        return real(s)  # type: ignore[arg-type]

    monkeypatch.setattr(overview, "_content", counted)
    return calls


def _page(client: FlaskClient) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_cached_content_but_each_session_gets_its_own_frame(
    app: Flask, client: FlaskClient, logged_in: AuthActions, renders: list[int]
) -> None:
    with sessions_of(app).begin() as s:
        gen_everything(s)
    alice_page = _page(client)
    assert "momentum" in alice_page and renders == [1]
    logged_in.create("bob")
    bob = app.test_client()
    AuthActions(app, bob).login("bob")
    bob_page = _page(bob)
    assert renders == [1]  # served from the cache
    assert '<span class="who">bob</span>' in bob_page
    assert '<span class="who">alice</span>' not in bob_page
    assert f'content="{csrf(bob)}"' in bob_page and csrf(client) not in bob_page
    assert f'content="{csrf(client)}"' in _page(client)
    # Same content for both: the section after the header is identical.
    assert alice_page.split("<main>")[1] == bob_page.split("<main>")[1]


def test_every_change_shows_at_once(
    app: Flask, client: FlaskClient, logged_in: AuthActions, renders: list[int]
) -> None:
    with sessions_of(app).begin() as s:
        ids = gen_everything(s)
    _page(client)
    assert _page(client) and len(renders) == 1

    def changed(step: str) -> str:
        before = len(renders)
        page = _page(client)
        assert len(renders) == before + 1, f"{step}: not rebuilt"
        return page

    with sessions_of(app).begin() as s:
        account = s.get(PaperAccount, 1)
        assert account is not None
        order = gen_order(s, account, n=2, ticker="ZZNEW")
        gen_fill(s, order, idempotency_key="fill-new")
    assert "ZZNEW" in changed("a new fill")

    with sessions_of(app).begin() as s:
        s.add(Event(kind="note", payload={"text": "fresh-event-text"}))
    assert "fresh-event-text" in changed("a new event")

    with sessions_of(app).begin() as s:  # a halt written without any event (as by the trader)
        account = s.get(PaperAccount, 1)
        assert account is not None
        account.halted, account.halt_reason = True, "risk-limit-hit"
    assert "risk-limit-hit" in changed("a halt")

    with sessions_of(app).begin() as s:
        account = s.get(PaperAccount, 1)
        assert account is not None
        account.cash = Decimal("12345.67")
    assert "12,345.67" in changed("cash")

    with sessions_of(app).begin() as s:
        s.add(Position(account_id=1, ticker="QQQ", qty=3, avg_cost=Decimal(1)))
    changed("a new position")

    with sessions_of(app).begin() as s:
        run = s.get(ScreenRun, 1)
        assert run is not None
        run.status = "failed"
    changed("a screen run's status")
    assert ids is not None
    assert _page(client) and len(renders) == 7  # and nothing else rebuilds


def test_the_account_choice_is_part_of_the_key(
    app: Flask, client: FlaskClient, logged_in: AuthActions, renders: list[int]
) -> None:
    with sessions_of(app).begin() as s:
        gen_everything(s)
    _page(client)
    client.get("/?account=1")
    client.get("/?account=1")
    assert len(renders) == 2
