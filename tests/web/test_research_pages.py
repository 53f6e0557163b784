"""Research from the dashboard and the API: submit a video, read a result, promote and retire."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from falcon.db.models import Event, Job, Strategy
from falcon.research.jobs import payload_options
from falcon.web.views.research import clock, seconds, youtube_id

from .conftest import SQLITE_ONLY, AuthActions, csrf, sessions_of
from .factories import gen_strategy

VIDEO = "https://www.youtube.com/watch?v=abcdefghijk"
XSS = "<script>alert(1)</script>"


def _provenance(*, clean: bool | None = None, url: str = VIDEO, **extra: Any) -> dict[str, Any]:
    """A provenance shaped like falcon.research.pipeline's (evaluation only when ``clean`` set)."""
    prov: dict[str, Any] = {
        "kind": "youtube",
        "video": {"video_id": "abcdefghijk", "url": url, "title": "My edge",
                  "channel": "Trader Joe"},
        "transcript_sha256": "f" * 64,
        "model": "test-model",
        "prompt_version": "research-extract/1",
        "prompt_tokens": 1200,
        "completion_tokens": 150,
        "cost_usd": 0.0123,
        "llm_calls": [{"prompt_tokens": 1200}],
        "extraction": {
            "summary": "Buy the 20-day breakout.",
            "confidence": 0.8,
            "rules": [
                {"rule": "Enter on a 20-day high", "quote": "buy the breakout",
                 "timestamp": "02:05", "quote_found": True},
                {"rule": "Stop at 2 ATR", "quote": "two ATR stop", "timestamp": "1:02:03"},
            ],
            "ambiguities": ["exit not stated"],
        },
        "history": [],
    }
    if clean is not None:
        prov["evaluation"] = {
            "tickers": ["AAPL"], "start": "2020-01-01", "end": "2020-12-31",
            "metrics": {"return_pct": 12.0, "sharpe": 1.1},
            "lookahead": {"clean": clean, "problems": [] if clean else ["uses close[t+1]"]},
            "trades": 1,
        }
    return prov | extra


def _research(app: Flask, *, status: str = "extracted", **prov: Any) -> int:
    with sessions_of(app).begin() as s:
        row = gen_strategy(s, name=f"yt-{status}", source="research", status=status,
                           status_reason="extracted from video", provenance=_provenance(**prov))
        return row.id


def _json(response: TestResponse) -> dict[str, Any]:
    body = response.json
    assert isinstance(body, dict)
    return body


def _row(app: Flask, strategy_id: int) -> Strategy:
    with sessions_of(app)() as s:
        row = s.get(Strategy, strategy_id)
        assert row is not None
        return row


# --- submitting --------------------------------------------------------------------------------


def test_submit_form_queues_a_research_job(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    response = client.post("/research/", data={"url": f" {VIDEO} ", "csrf_token": csrf(client)})
    assert response.status_code == 302
    with sessions_of(app)() as s:
        job = s.scalars(select(Job)).one()
        assert (job.kind, job.status) == ("research", "queued")
        assert job.payload == {"url": VIDEO, "actor": "alice"}
        assert s.scalars(select(Event).where(Event.kind == "job_queued")).one().payload["by"] \
            == "alice"
    payload_options(job.payload)  # the worker accepts it
    assert response.headers["Location"].endswith(f"/research/?job={job.id}")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"data-job-url=\"/api/v1/jobs/{job.id}\"" in page
    assert "research.js" in page and "queued" in page


@SQLITE_ONLY
@pytest.mark.parametrize(
    "url",
    ["not a url", "javascript:alert(1)", "ftp://www.youtube.com/watch?v=abcdefghijk",
     "https://evil.example/watch?v=abcdefghijk", "https://www.youtube.com.evil.example/x",
     "https://www.youtube.com/" + "a" * 2001, ""],
)
def test_submit_form_rejects_bad_urls(
    app: Flask, client: FlaskClient, logged_in: AuthActions, url: str
) -> None:
    response = client.post("/research/", data={"url": url, "csrf_token": csrf(client)},
                           follow_redirects=True)
    assert "expected a YouTube video URL" in response.get_data(as_text=True)
    with sessions_of(app)() as s:
        assert s.scalars(select(Job)).all() == []


@SQLITE_ONLY
def test_posts_need_login_and_csrf(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    strategy_id = _research(app, status="backtested", clean=True)
    posts = ["/research/", f"/research/{strategy_id}/promote", f"/research/{strategy_id}/retire"]
    form = {"url": VIDEO, "reason": "looks good"}
    for path in posts:
        response = client.post(path, data=form | {"csrf_token": csrf(client)})
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    auth.login()
    for path in posts:
        assert client.post(path, data=form).status_code == 403
        assert client.post(path, data=form | {"csrf_token": "wrong"}).status_code == 403
    for path in ["/api/v1/research", f"/api/v1/research/{strategy_id}/promote"]:
        assert client.post(path, json={"url": VIDEO, "reason": "x"}).status_code == 403
    with sessions_of(app)() as s:
        assert s.scalars(select(Job)).all() == []
    assert _row(app, strategy_id).status == "backtested"


# --- the detail page ---------------------------------------------------------------------------


def test_detail_page_shows_rules_with_timestamps(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    strategy_id = _research(app, status="backtested", clean=True)
    page = client.get(f"/research/{strategy_id}").get_data(as_text=True)
    for text in ["My edge", "Trader Joe", "Buy the 20-day breakout.", "0.80",
                 "Enter on a 20-day high", "buy the breakout", "exit not stated", "clean",
                 "test-model", "1200", "0.0123", "Promote to paper", "Retire"]:
        assert text in page, text
    assert 'href="https://www.youtube.com/watch?v=abcdefghijk&amp;t=125s"' in page
    assert ">2:05</a>" in page
    assert 'href="https://www.youtube.com/watch?v=abcdefghijk&amp;t=3723s"' in page
    assert ">1:02:03</a>" in page
    listing = client.get("/research/").get_data(as_text=True)
    assert f'href="/research/{strategy_id}"' in listing and "My edge" in listing


def test_detail_page_escapes_hostile_provenance(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    prov = _provenance(url="javascript:alert(1)")
    prov["video"]["title"] = XSS
    prov["video"]["channel"] = XSS
    prov["extraction"] = {
        "summary": XSS,
        "confidence": "<b>high</b>",
        "rules": [{"rule": XSS, "quote": '"><img src=x onerror=alert(1)>',
                   "timestamp": "javascript:alert(1)"},
                  {"rule": "r", "quote": "q", "timestamp": "01:00"}],
        "ambiguities": [XSS],
    }
    prov["history"] = [{"ts": XSS, "from": XSS, "to": "extracted", "reason": XSS, "actor": XSS}]
    with sessions_of(app).begin() as s:
        strategy_id = gen_strategy(s, name="hostile", source="research", status="extracted",
                                   status_reason=XSS, provenance=prov).id
    page = client.get(f"/research/{strategy_id}").get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>high" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    # No YouTube link is derived from a URL that is not YouTube's, whatever the timestamps say.
    assert "youtube.com/watch" not in page
    assert ">1:00<" in page
    listing = client.get("/research/").get_data(as_text=True)
    assert "<script>alert" not in listing and 'href="javascript:' not in listing


@SQLITE_ONLY
def test_detail_of_a_missing_or_non_research_strategy(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    with sessions_of(app).begin() as s:
        builtin = gen_strategy(s).id
    page = client.get(f"/research/{builtin}")
    assert page.status_code == 200 and "did not come from research" in page.get_data(as_text=True)
    assert client.post(f"/research/{builtin}/promote",
                       data={"reason": "x", "csrf_token": csrf(client)}).status_code == 404
    assert client.get("/research/999").status_code == 404
    assert client.post("/research/999/retire",
                       data={"reason": "x", "csrf_token": csrf(client)}).status_code == 404


# --- promote and retire ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "clean"), [("extracted", None), ("backtested", False)])
def test_promote_is_refused_unless_backtested_and_clean(
    app: Flask, client: FlaskClient, logged_in: AuthActions, status: str, clean: bool | None
) -> None:
    strategy_id = _research(app, status=status, clean=clean)
    response = client.post(f"/research/{strategy_id}/promote",
                           data={"reason": "ship it", "csrf_token": csrf(client)})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f"is {status}: run" in page or "look-ahead check failed" in page
    assert _row(app, strategy_id).status == status


def test_promote_and_retire_from_the_page(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    strategy_id = _research(app, status="backtested", clean=True)
    missing = client.post(f"/research/{strategy_id}/promote",
                          data={"reason": "   ", "csrf_token": csrf(client)})
    assert missing.status_code == 422 and "reason is required" in missing.get_data(as_text=True)
    response = client.post(f"/research/{strategy_id}/promote",
                           data={"reason": "clean, Sharpe 1.1", "csrf_token": csrf(client)})
    assert response.status_code == 302
    row = _row(app, strategy_id)
    assert (row.status, row.status_reason) == ("paper", "clean, Sharpe 1.1")
    assert (row.provenance or {})["history"][-1] | {"ts": None} == {
        "ts": None, "from": "backtested", "to": "paper", "reason": "clean, Sharpe 1.1",
        "actor": "alice"}
    response = client.post(f"/research/{strategy_id}/retire",
                           data={"reason": "drawdown too deep", "csrf_token": csrf(client)})
    assert response.status_code == 302
    assert _row(app, strategy_id).status == "retired"
    page = client.get(f"/research/{strategy_id}").get_data(as_text=True)
    assert "drawdown too deep" in page and "alice" in page and "Retire</button>" not in page
    again = client.post(f"/research/{strategy_id}/retire",
                        data={"reason": "again", "csrf_token": csrf(client)})
    assert again.status_code == 422 and "already retired" in again.get_data(as_text=True)


# --- the API -----------------------------------------------------------------------------------


@pytest.fixture
def api(auth: AuthActions) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.token()}"}


def test_api_submit_get_promote_retire(
    app: Flask, client: FlaskClient, api: dict[str, str]
) -> None:
    response = client.post("/api/v1/research", json={"url": VIDEO}, headers=api)
    assert response.status_code == 202, response.json
    job = _json(response)["job"]
    assert (job["kind"], job["payload"]) == ("research", {"url": VIDEO, "actor": "alice"})
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    for body in [{"url": "javascript:alert(1)"}, {"url": 5}, {}, {"url": VIDEO, "lang": "en"}]:
        assert client.post("/api/v1/research", json=body, headers=api).status_code == 422

    strategy_id = _research(app, status="backtested", clean=True)
    base = f"/api/v1/research/{strategy_id}"
    assert client.post(f"{base}/promote", json={}, headers=api).status_code == 422
    promoted = client.post(f"{base}/promote", json={"reason": "clean"}, headers=api)
    assert promoted.status_code == 200 and _json(promoted)["status"] == "paper"
    assert client.post(f"{base}/promote", json={"reason": "again"}, headers=api).status_code == 409
    retired = client.post(f"{base}/retire", json={"reason": "done"}, headers=api)
    assert retired.status_code == 200 and _json(retired)["status"] == "retired"
    assert client.post(f"{base}/retire", json={"reason": "done"}, headers=api).status_code == 409
    assert client.post("/api/v1/research/999/retire", json={"reason": "x"},
                       headers=api).status_code == 404


# --- helpers -----------------------------------------------------------------------------------


def test_timestamps_and_youtube_ids() -> None:
    assert [seconds(t) for t in ["02:05", "1:02:03", "0:00", "99:99", "1:2", "x", None]] == [
        125, 3723, 0, None, None, None, None]
    assert [clock(s) for s in [0, 125, 3723]] == ["0:00", "2:05", "1:02:03"]
    assert youtube_id("https://youtu.be/abcdefghijk") == "abcdefghijk"
    assert youtube_id("https://www.youtube.com/shorts/abcdefghijk") == "abcdefghijk"
    assert youtube_id("https://www.youtube.com/watch?v=abc&x=1") is None
    assert youtube_id("https://evil.example/watch?v=abcdefghijk") is None
    assert youtube_id("javascript:alert(1)//youtube.com/watch?v=abcdefghijk") is None
