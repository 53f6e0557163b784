"""The trading page shows the entries a paper trader holds in memory only (quiet retries).

The trader runs on the app's own database: strategy ``hog`` takes all the cash (and holds an
entry if flat for A), strategy ``stuck`` is refused for want of cash at every open.
"""

from __future__ import annotations

import re
from datetime import date

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from falcon.db.models import PaperAccount
from falcon.paper.decisions import DecisionLog, client_order_id
from falcon.paper.trader import Trader

from ..paper.helpers import LOOSE, bar, days, make_account, slot
from .conftest import SQLITE_ONLY, AuthActions, sessions_of

D = days(date(2024, 1, 2), 6)
SECTION = "Held entries (quiet retries)"


def _cells(page: str, text: str) -> list[str]:
    """The cells of the one row of the held entries' table in ``page`` holding ``text``."""
    section = page.split(SECTION, 1)[1].split("</section>", 1)[0]
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S) if text in r]
    assert len(rows) == 1, page
    return [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], flags=re.S)]


def test_the_trading_page_shows_held_entries(
    app: Flask, client: FlaskClient, logged_in: AuthActions,
) -> None:
    sessions = sessions_of(app)
    make_account(sessions, "main")
    slots = [
        slot("hog", ["A"], entry="close > 0", exit_="close < 0",
             sizing={"kind": "fraction", "value": 1.0}),
        slot("stuck", ["B"], entry="close > 50", exit_="close < 0",
             sizing={"kind": "fraction", "value": 0.5}),
    ]
    trader = Trader(sessions, account="main", slots=slots, kind="day", limits=LOOSE,
                    log_sink=DecisionLog(None))
    trader.process([bar("A", D[0], 100.0), bar("B", D[0], 100.0)])
    assert SECTION not in client.get("/trading/").get_data(as_text=True)  # nothing held yet

    for i in range(1, 5):  # refused at the opens of D1..D4
        trader.process([bar("A", D[i], 100.0), bar("B", D[i], 100.0)])
    response = client.get("/trading/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert SECTION in page and "No open orders." in page
    assert _cells(page, "insufficient_cash") == [
        "main", "stuck", "B", "buy", "insufficient_cash", "4",
        "2024-01-03 00:00 EST", "2024-01-08 00:00 EST",
        client_order_id("main", "stuck", "B", D[0], "entry"),
        "retry: " + client_order_id("main", "stuck", "B", D[4], "entry")]
    assert _cells(page, "position open") == [
        "main", "hog", "A", "buy", "position open", "", "", "", "",
        "if flat: " + client_order_id("main", "hog", "A", D[4], "entry")]


def test_the_api_gives_an_accounts_held_entries(
    app: Flask, client: FlaskClient, auth: AuthActions,
) -> None:
    sessions = sessions_of(app)
    account_id = make_account(sessions, "main")
    headers = {"Authorization": f"Bearer {auth.token()}"}
    url = f"/api/v1/accounts/{account_id}"
    assert client.get(url, headers=headers).json["held_entries"] == []
    trader = Trader(sessions, account="main", slots=[
        slot("hog", ["A"], entry="close > 0", exit_="close < 0",
             sizing={"kind": "fraction", "value": 1.0}),
        slot("stuck", ["B"], entry="close > 50", exit_="close < 0",
             sizing={"kind": "fraction", "value": 0.5}),
    ], kind="day", limits=LOOSE, log_sink=DecisionLog(None))
    for i in range(5):
        trader.process([bar("A", D[i], 100.0), bar("B", D[i], 100.0)])
    body = client.get(url, headers=headers).json
    assert body["held_entries_warning"] is None and body["name"] == "main"
    quiet = [h for h in body["held_entries"] if h["kind"] == "quiet_retry"]
    assert [(h["strategy"], h["ticker"], h["cause"], h["count"]) for h in quiet] == [
        ("stuck", "B", "insufficient_cash", 4)]
    assert quiet[0]["client_order_id"] == client_order_id("main", "stuck", "B", D[4], "entry")
    assert [(h["strategy"], h["ticker"]) for h in body["held_entries"]
            if h["kind"] == "if_flat"] == [("hog", "A")]


@SQLITE_ONLY
def test_an_unreadable_quiet_state_is_a_warning_on_the_page(
    app: Flask, client: FlaskClient, logged_in: AuthActions,
) -> None:
    sessions = sessions_of(app)
    make_account(sessions, "main")
    with sessions.begin() as s:
        s.scalars(select(PaperAccount)).one().quiet_state = {"v": 1, "streaks": [["junk"]]}
    response = client.get("/trading/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert SECTION in page
    assert re.search(r'class="flash error">main: paper_accounts.quiet_state cannot be read', page)
