"""Market-data sources: replay, and live polling of a loopback server speaking the Massive API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from falcon.domain.market import Bar
from falcon.errors import ExternalServiceError
from falcon.paper.sources import MassivePollingSource, ReplaySource, StaleData

from ..massive_server import MassiveServer

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)


def _row(minute: int, price: float) -> dict[str, float]:
    return {
        "t": int((T0 + timedelta(minutes=minute)).timestamp() * 1000),
        "o": price,
        "h": price + 1,
        "l": price - 1,
        "c": price + 0.5,
        "v": 1000.0,
    }


@pytest.fixture
def massive() -> Iterator[MassiveServer]:
    server = MassiveServer().start()
    yield server
    server.stop()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _source(massive: MassiveServer, clock: Clock, tickers: list[str], **kw) -> MassivePollingSource:  # type: ignore[no-untyped-def]
    return MassivePollingSource(
        base_url=massive.base_url,
        api_key="mk-secret",
        tickers=lambda: tickers,
        is_open=lambda _now: True,
        clock=clock,
        sleep=clock.sleep,
        backoff_s=0.01,
        **kw,
    )


def test_replay_orders_by_time_and_resumes() -> None:
    frame = pl.DataFrame(
        {
            "ticker": ["B", "A", "A"],
            "ts": [T0, T0 + timedelta(minutes=1), T0],
            "open": [1.0, 2.0, 3.0],
            "high": [2.0, 3.0, 4.0],
            "low": [0.5, 1.5, 2.5],
            "close": [1.5, 2.5, 3.5],
            "volume": [10.0, 20.0, 30.0],
        }
    )
    got = [(b.ticker, b.ts) for b in ReplaySource.from_frame(frame).bars()]
    assert got == [("A", T0), ("B", T0), ("A", T0 + timedelta(minutes=1))]
    resumed = [(b.ticker, b.ts) for b in ReplaySource.from_frame(frame, skip_through=T0).bars()]
    assert resumed == [("A", T0 + timedelta(minutes=1))]


def test_polling_yields_each_complete_bar_once(massive: MassiveServer) -> None:
    massive.minute_bars = {
        "AAPL": [_row(0, 100), _row(1, 101), _row(2, 102)],
        "MSFT": [_row(0, 300), _row(1, 301)],
    }
    clock = Clock(T0 + timedelta(minutes=2, seconds=30))  # minute 2 is still being built
    source = _source(massive, clock, ["MSFT", "AAPL"])
    first = source.poll_once()
    assert [(b.ticker, b.ts.minute) for b in first] == [
        ("AAPL", 30),
        ("MSFT", 30),
        ("AAPL", 31),
        ("MSFT", 31),
    ]
    assert isinstance(first[0], Bar) and first[0].close == 100.5
    clock.now += timedelta(minutes=1)
    second = source.poll_once()
    assert [(b.ticker, b.ts.minute) for b in second] == [("AAPL", 32)]
    assert source.poll_once() == []
    # the key goes in a header, never in the URL
    assert all("mk-secret" not in path for path, _ in massive.requests)
    assert massive.requests[0][1]["authorization"] == "Bearer mk-secret"
    source.close()


def test_pagination_is_followed(massive: MassiveServer) -> None:
    massive.minute_bars = {"AAPL": [_row(i, 100 + i) for i in range(7)]}
    massive.page_size = 3
    clock = Clock(T0 + timedelta(minutes=10))
    bars = _source(massive, clock, ["AAPL"]).poll_once()
    assert [b.ts.minute for b in bars] == [30, 31, 32, 33, 34, 35, 36]


def test_rate_limit_waits_for_retry_after_and_5xx_backs_off(massive: MassiveServer) -> None:
    massive.minute_bars = {"AAPL": [_row(0, 100)]}
    massive.failures.extend([(429, {"Retry-After": "7"}), (503, {}), (500, {})])
    clock = Clock(T0 + timedelta(minutes=5))
    bars = _source(massive, clock, ["AAPL"]).poll_once()
    assert len(bars) == 1
    assert clock.slept == [7.0, 0.01, 0.02]


def test_gives_up_after_retries_with_a_clear_error(massive: MassiveServer) -> None:
    massive.failures.extend([(500, {})] * 10)
    clock = Clock(T0 + timedelta(minutes=5))
    with pytest.raises(ExternalServiceError, match=r"failed after 3 retries \(HTTP 500\)"):
        _source(massive, clock, ["AAPL"], max_retries=3).poll_once()


def test_bad_key_is_reported_without_the_key(massive: MassiveServer) -> None:
    massive.failures.append((401, {}))
    with pytest.raises(ExternalServiceError) as info:
        _source(massive, Clock(T0), ["AAPL"]).poll_once()
    assert "FALCON_MASSIVE_API_KEY" in str(info.value)
    assert "mk-secret" not in str(info.value)


def test_stale_data_is_reported(massive: MassiveServer) -> None:
    massive.minute_bars = {"AAPL": [_row(0, 100)], "MSFT": []}
    stale: list[StaleData] = []
    clock = Clock(T0 + timedelta(minutes=3))
    source = _source(
        massive, clock, ["AAPL", "MSFT"], on_stale=stale.append, stale_after=timedelta(minutes=5)
    )
    source.poll_once()
    assert [s.ticker for s in stale] == ["MSFT"]  # never had a bar
    clock.now += timedelta(minutes=10)
    source.poll_once()
    assert [s.ticker for s in stale] == ["MSFT", "AAPL", "MSFT"]
    assert stale[1].last_bar == T0


def test_malformed_rows_are_dropped(massive: MassiveServer) -> None:
    bad = _row(1, 100)
    bad["h"] = 1.0  # high below open
    massive.minute_bars = {"AAPL": [_row(0, 100), bad, {"t": 5}]}
    bars = _source(massive, Clock(T0 + timedelta(minutes=5)), ["AAPL"]).poll_once()
    assert [b.ts.minute for b in bars] == [30]
