"""Where the paper trader's bars come from: one interface, two implementations.

- :class:`ReplaySource` replays bars already in hand (from the Parquet store) in time order: for
  tests, for ``falcon paper replay`` and for the single-node demo.
- :class:`MassivePollingSource` polls the Massive (Polygon-compatible) REST aggregates endpoint for
  each watched ticker and yields each minute bar once it is complete, in time order.

Both yield :class:`~falcon.domain.market.Bar` values; the trader cannot tell them apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from falcon.domain.market import Bar
from falcon.errors import ExternalServiceError

log = logging.getLogger(__name__)


class BarSource(Protocol):
    """Anything that yields bars in non-decreasing time order."""

    def bars(self) -> Iterator[Bar]:
        """Bars as they become available; ends when the source is exhausted or stopped."""
        ...


@dataclass
class ReplaySource:
    """Bars from memory, sorted by (ts, ticker); ``skip_through`` resumes after a restart."""

    rows: Iterable[Bar]
    skip_through: datetime | None = None

    def bars(self) -> Iterator[Bar]:
        for bar in sorted(self.rows, key=lambda b: (b.ts, b.ticker)):
            if self.skip_through is not None and bar.ts <= self.skip_through:
                continue
            yield bar

    def batches(self) -> Iterator[list[Bar]]:
        """The bars grouped by timestamp: what the trader commits as one transaction."""
        yield from group_by_ts(self.bars())

    @classmethod
    def from_store(
        cls,
        settings: Any,
        tickers: Iterable[str] | None,
        start: Any,
        end: Any,
        kind: str = "day",
        *,
        skip_through: datetime | None = None,
    ) -> ReplaySource:
        """Split-adjusted bars of ``tickers`` from the Parquet store, ``start``..``end`` inclusive.

        ``start``/``end`` are session dates or aware datetimes, as for
        :func:`falcon.data.reader.read_bars`.
        """
        import warnings

        from falcon.data.reader import read_bars  # polars and the store only when replaying

        with warnings.catch_warnings():
            # polars cannot prove the store's (ticker, ts) order to itself; the reader sorts.
            warnings.filterwarnings("ignore", "Sortedness of columns", UserWarning)
            frame = read_bars(settings, kind=kind, tickers=tickers, start=start, end=end).collect()
        return cls.from_frame(frame, skip_through=skip_through)

    @classmethod
    def from_frame(cls, frame: Any, skip_through: datetime | None = None) -> ReplaySource:
        """From a polars DataFrame with columns ticker, ts, open, high, low, close, volume."""
        cols = ["ticker", "ts", "open", "high", "low", "close", "volume"]
        rows = [
            Bar(ticker=t, ts=_aware(ts), open=o, high=h, low=lo, close=c, volume=v or 0.0)
            for t, ts, o, h, lo, c, v in frame.select(cols).iter_rows()
        ]
        return cls(rows=rows, skip_through=skip_through)


def group_by_ts(bars: Iterable[Bar]) -> Iterator[list[Bar]]:
    """Consecutive bars of equal ``ts`` as one list (the input is in time order)."""
    batch: list[Bar] = []
    for bar in bars:
        if batch and bar.ts != batch[0].ts:
            yield batch
            batch = []
        batch.append(bar)
    if batch:
        yield batch


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class StaleData:
    """A ticker whose newest bar is older than the staleness limit while the market is open."""

    ticker: str
    last_bar: datetime | None
    checked_at: datetime


@dataclass
class MassivePollingSource:
    """Poll ``/v2/aggs/ticker/{T}/range/1/minute/{from}/{to}`` for every watched ticker.

    A bar is yielded only when complete (its minute has ended) and only once. 429 answers wait
    for ``Retry-After``; 5xx and network errors back off exponentially and give up with
    :class:`ExternalServiceError` after ``max_retries``. A ticker with no new bar for longer than
    ``stale_after`` while ``is_open(now)`` is reported through ``on_stale``.
    """

    base_url: str
    api_key: str
    tickers: Callable[[], Iterable[str]]
    is_open: Callable[[datetime], bool]
    poll_interval_s: float = 5.0
    max_retries: int = 5
    backoff_s: float = 0.5
    stale_after: timedelta = timedelta(minutes=5)
    on_stale: Callable[[StaleData], None] = lambda _s: None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    stop_event: threading.Event = field(default_factory=threading.Event)
    timeout_s: float = 10.0
    _last_seen: dict[str, datetime] = field(default_factory=dict)
    _last_new: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The key travels in a header, never in a URL, so it cannot leak into logs.
        self._http = httpx.Client(
            base_url=self.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=self.timeout_s,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.get(url, params=params)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code == 200:
                    data: dict[str, Any] = response.json()
                    return data
                if response.status_code == 429:
                    retry_after = response.headers.get("Retry-After", "")
                    wait = (
                        float(retry_after) if retry_after.replace(".", "", 1).isdigit() else delay
                    )
                    log.warning("massive rate limit: waiting %.1fs", wait)
                    self.sleep(wait)
                    continue
                if response.status_code in (401, 403):
                    raise ExternalServiceError(
                        f"Massive API refused the key (HTTP {response.status_code}): "
                        "check FALCON_MASSIVE_API_KEY"
                    )
                if response.status_code < 500:
                    raise ExternalServiceError(f"Massive API answered HTTP {response.status_code}")
                problem = f"HTTP {response.status_code}"
            if attempt < self.max_retries:
                log.warning("massive API %s, retry %d in %.1fs", problem, attempt + 1, delay)
                self.sleep(delay)
                delay *= 2
        raise ExternalServiceError(
            f"Massive API failed after {self.max_retries} retries ({problem})"
        )

    def fetch(self, ticker: str, start: datetime, end: datetime) -> list[Bar]:
        """Minute bars of ``ticker`` whose start lies in [start, end], following pagination."""
        url: str | None = (
            f"/v2/aggs/ticker/{ticker}/range/1/minute/"
            f"{int(start.timestamp() * 1000)}/{int(end.timestamp() * 1000)}"
        )
        params: dict[str, Any] | None = {"adjusted": "false", "sort": "asc", "limit": 50000}
        bars: list[Bar] = []
        while url:
            data = self._get(url, params)
            for row in data.get("results") or []:
                try:
                    bars.append(
                        Bar(
                            ticker=ticker,
                            ts=datetime.fromtimestamp(row["t"] / 1000, UTC),
                            open=float(row["o"]),
                            high=float(row["h"]),
                            low=float(row["l"]),
                            close=float(row["c"]),
                            volume=float(row.get("v") or 0.0),
                        )
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("massive API: dropped a malformed %s bar (%s)", ticker, exc)
            next_url = data.get("next_url")
            # Pagination URLs are absolute; only follow them on the configured host.
            if next_url and next_url.startswith(self.base_url.rstrip("/")):
                url, params = next_url[len(self.base_url.rstrip("/")) :], None
            else:
                url = None
        return bars

    def poll_once(self) -> list[Bar]:
        """One round over the watched tickers: the new, complete bars, in time order."""
        now = self.clock()
        complete_before = now - timedelta(minutes=1)
        out: list[Bar] = []
        for ticker in sorted(set(self.tickers())):
            since = self._last_seen.get(ticker, now - timedelta(minutes=30))
            for bar in self.fetch(ticker, since, now):
                if bar.ts > complete_before:
                    continue  # the minute is still being built
                if ticker in self._last_seen and bar.ts <= self._last_seen[ticker]:
                    continue
                out.append(bar)
                self._last_seen[ticker] = bar.ts
                self._last_new[ticker] = now
            last = self._last_seen.get(ticker)
            if self.is_open(now) and (last is None or now - last > self.stale_after):
                self.on_stale(StaleData(ticker=ticker, last_bar=last, checked_at=now))
        out.sort(key=lambda b: (b.ts, b.ticker))
        return out

    def bars(self) -> Iterator[Bar]:
        while not self.stop_event.is_set():
            yield from self.poll_once()
            self.stop_event.wait(self.poll_interval_s)

    def batches(self) -> Iterator[list[Bar]]:
        """Each poll's bars grouped by timestamp, then an empty list: a poll ended.

        The empty list gives the caller control between polls (watchdog, stop requests) without
        waiting for the next minute's bars to close the current batch.
        """
        while not self.stop_event.is_set():
            yield from group_by_ts(self.poll_once())
            yield []
            self.stop_event.wait(self.poll_interval_s)
