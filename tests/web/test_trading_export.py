"""The trading page's filters and its CSV exports."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from .conftest import AuthActions, sessions_of
from .factories import T0, gen_account, gen_fill, gen_order


def _seed(app: Flask) -> None:
    with sessions_of(app).begin() as s:
        main = gen_account(s, name="main")
        other = gen_account(s, name="other")
        a = gen_order(s, main, n=1, ticker="AAPL", side="buy", reason="=HYPERLINK(\"x\")")
        b = gen_order(s, main, n=2, ticker="MSFT", side="sell")
        c = gen_order(s, other, n=3, ticker="AAPL", side="sell")
        gen_fill(s, a, ts=T0)
        gen_fill(s, b, ts=T0 + timedelta(days=3))
        gen_fill(s, c, ts=T0 + timedelta(days=10))


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_fills_csv_follows_the_filters(app: Flask, client: FlaskClient,
                                       logged_in: AuthActions) -> None:
    _seed(app)
    all_rows = _rows(client.get("/trading/fills.csv").get_data(as_text=True))
    assert len(all_rows) == 3
    only_aapl = client.get("/trading/fills.csv?ticker=aapl")
    assert only_aapl.mimetype == "text/csv"
    assert "attachment" in only_aapl.headers["Content-Disposition"]
    assert {r["ticker"] for r in _rows(only_aapl.get_data(as_text=True))} == {"AAPL"}
    sells = _rows(client.get("/trading/fills.csv?side=sell").get_data(as_text=True))
    assert {r["side"] for r in sells} == {"sell"} and len(sells) == 2
    day = (T0 + timedelta(days=3)).date().isoformat()
    window = _rows(client.get(f"/trading/fills.csv?start={day}&end={day}").get_data(as_text=True))
    assert [r["ticker"] for r in window] == ["MSFT"]
    # junk filters are ignored, not errors
    assert len(_rows(client.get("/trading/fills.csv?ticker=<x>&start=nope").get_data(
        as_text=True))) == 3


def test_orders_csv_neutralises_formulas(app: Flask, client: FlaskClient,
                                         logged_in: AuthActions) -> None:
    _seed(app)
    rows = _rows(client.get("/trading/orders.csv?ticker=AAPL&side=buy").get_data(as_text=True))
    assert len(rows) == 1
    assert rows[0]["reason"].startswith("'=")  # a spreadsheet shows it as text, never runs it


def test_the_page_filters_and_links_the_exports(app: Flask, client: FlaskClient,
                                                logged_in: AuthActions) -> None:
    _seed(app)
    page = client.get("/trading/?ticker=MSFT").get_data(as_text=True)
    assert "/trading/fills.csv?ticker=MSFT" in page
    fills_section = page.split("<h2>Fills</h2>")[1]
    assert "MSFT" in fills_section and "AAPL" not in fills_section


def test_exports_need_login(app: Flask, client: FlaskClient) -> None:
    assert client.get("/trading/fills.csv").status_code == 302
    assert client.get("/trading/orders.csv").status_code == 302
