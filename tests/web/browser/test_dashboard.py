"""The dashboard in headless Chromium: charts drawn, a backtest started from the page and seen.

Screenshots go to test-artifacts/ (overview.png, overview-390.png, backtest.png): look at them
when a chart changes.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from .conftest import CHROMIUM_ARGS, PASSWORD, USERNAME, Site, chromium_path

pytestmark = pytest.mark.slow

# Pixels of a colour in the chart's own rendering (the library composes its canvases into one).
_COUNT_COLOUR = """
([fig, rgb]) => {
  const chart = fig.falconChart;
  if (!chart) { return -1; }
  const canvas = chart.takeScreenshot();
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40 &&
        Math.abs(data[i + 2] - rgb[2]) < 40 && data[i + 3] > 200) { n++; }
  }
  return n;
}
"""
STRATEGY_BLUE = (0x00, 0x72, 0xB2)  # charts.PALETTE[0]: the account's / strategy's line
BENCHMARK_ORANGE = (0xE6, 0x9F, 0x00)  # charts.PALETTE[1]
CANDLE_UP = (0x26, 0xA6, 0x9A)  # charts.js candlestick colours


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium through Playwright (Playwright's own browser download is never used)."""
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of ``page`` (CSP violations show up here)."""
    seen: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # A missing favicon is the only 404 a page of ours asks for.
        if msg.type == "error" and "favicon" not in (msg.location or {}).get("url", ""):
            seen.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: seen.append(f"uncaught: {exc}"))
    return seen


def _login(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/login")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{site.url}/")


def _drawn(page: Page, chart: str) -> Any:
    """The chart's figure once charts.js has drawn it; asserts its canvas has a real size."""
    figure = page.wait_for_selector(f'figure.chart-slot.chart-drawn[data-chart="{chart}"]')
    assert figure is not None
    canvas = figure.query_selector("canvas")
    assert canvas is not None, f"{chart}: no canvas"
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, (chart, box)
    return figure


def _pixels(page: Page, figure: Any, rgb: tuple[int, int, int]) -> int:
    return int(page.evaluate(_COUNT_COLOUR, [figure, list(rgb)]))


def test_overview_draws_the_paper_equity_against_the_benchmark(
    browser: Browser, site: Site, artifacts: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = _errors(page)
    _login(page, site)
    figure = _drawn(page, "equity")
    caption = figure.inner_text()
    assert "Paper account main" in caption and "I:SPX" in caption
    # Both lines are really on the canvas: the account's and buy-and-hold of the index.
    assert _pixels(page, figure, STRATEGY_BLUE) > 200
    assert _pixels(page, figure, BENCHMARK_ORANGE) > 200
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)
    assert errors == []
    page.close()


def test_overview_fits_a_phone(browser: Browser, site: Site, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = _errors(page)
    _login(page, site)
    figure = _drawn(page, "equity")
    box = figure.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    # Nothing pushes the page sideways: wide tables scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert _pixels(page, figure, STRATEGY_BLUE) > 100
    page.screenshot(path=str(artifacts / "overview-390.png"))
    assert errors == []
    context.close()


def test_backtest_started_from_the_page_shows_trades_on_candles(
    browser: Browser, site: Site, artifacts: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = _errors(page)
    _login(page, site)
    page.goto(f"{site.url}/strategies/{site.strategy_id}")
    page.fill("input[name=symbols]", "AAPL MSFT")
    page.fill("input[name=start]", "2016-01-04")
    page.fill("input[name=end]", "2017-12-29")
    page.click("text=Queue backtest")
    page.wait_for_url(re.compile(r".*\?job=\d+$"))
    panel = page.wait_for_selector(".job-status")
    assert panel is not None and "queued" in panel.inner_text()

    # A worker on the "compute node": drains the queue and exits; the page polls meanwhile.
    worker = subprocess.run(site.worker_argv(), env=site.worker_env(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert worker.returncode == 0, worker.stderr
    link = page.wait_for_selector(".job-status a.job-link", timeout=20_000)
    assert link is not None and page.locator(".job-state").inner_text() == "done"
    link.click()
    page.wait_for_url(re.compile(r".*/strategies/backtests/\d+$"))

    metrics = page.locator("dl.metrics").inner_text()
    assert "sharpe" in metrics and "trades" in metrics
    assert page.get_by_text("fills at the next bar's open").count() == 1  # the conventions
    equity = _drawn(page, "equity")
    assert _pixels(page, equity, STRATEGY_BLUE) > 200
    _drawn(page, "drawdown")
    price = _drawn(page, "price")
    assert int(price.get_attribute("data-markers") or 0) >= 2
    # The library holds the markers (it would drop ones it could not place on a bar).
    held = page.evaluate("fig => fig.falconMarkers.markers().length", price)
    assert held == int(price.get_attribute("data-markers") or 0)
    assert _pixels(page, price, CANDLE_UP) > 200
    caption = price.inner_text()
    assert "sma(close, 10)" in caption and "sma(close, 20)" in caption
    page.screenshot(path=str(artifacts / "backtest.png"), full_page=True)

    # Another ticker of the run, picked from the form.
    page.select_option("select[name=ticker]", "MSFT")
    page.wait_for_url(re.compile(r".*ticker=MSFT$"))
    assert "MSFT" in _drawn(page, "price").inner_text()
    assert errors == []
    page.close()


def test_research_job_panel_follows_the_job_and_links_the_strategy(
    browser: Browser, site: Site
) -> None:
    """research.js and charts.js share falcon.js's job polling: the research side of it."""
    from falcon.db.engine import make_engine, session_factory
    from falcon.db.models import Job, Strategy

    engine = make_engine(site.settings.effective_database_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as s:
            job = Job(kind="research", payload={"url": "https://www.youtube.com/watch?v=abc"},
                      status="running", progress=0.4, progress_note="<b>reading</b> transcript")
            strategy = Strategy(name="yt-browser", source="research", status="backtested",
                                spec={"entry": {"all": []}})
            s.add_all([job, strategy])
            s.flush()
            job_id, strategy_id = job.id, strategy.id
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = _errors(page)
        _login(page, site)
        page.goto(f"{site.url}/research/?job={job_id}")
        panel = page.wait_for_selector(".job-status[data-status=running]")
        assert panel is not None
        # Notes are text, never markup, whichever script wrote them.
        assert page.locator(".job-note").inner_text() == "<b>reading</b> transcript"
        with sessions.begin() as s:
            row = s.get(Job, job_id)
            assert row is not None
            row.status, row.progress, row.result = "done", 1.0, {"strategy_id": strategy_id}
        link = page.wait_for_selector(".job-status[data-status=done] a.job-link", timeout=20_000)
        assert link is not None and link.inner_text() == f"Open research #{strategy_id}"
        assert link.get_attribute("href") == f"/research/{strategy_id}"
        assert page.evaluate("document.querySelectorAll('progress')[0].value") == 1
        assert errors == []
        page.close()
    finally:
        engine.dispose()
