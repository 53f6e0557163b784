"""Reference data: ticker names, types, exchanges, sectors, market caps and stock splits.

Two sources, one cache (the ``tickers`` and ``splits`` tables):

- the Massive (formerly Polygon.io) reference REST API: ``/v3/reference/tickers`` (paginated with
  ``next_url``), ``/v3/reference/tickers/{ticker}`` (market cap and SIC description) and
  ``/v3/reference/splits`` (paginated);
- CSV files a user supplies (``falcon reference load tickers.csv``), for an offline install.

The API key travels in an ``Authorization: Bearer`` header, never in a URL, so it cannot end up in
a log line or an error message; a ``next_url`` pointing at another host is refused rather than
sent the key. 429 and 5xx answers are retried with exponential backoff, honouring ``Retry-After``.

Example::

    client = ReferenceClient.from_settings(settings)
    stats = refresh(client, sessions, details="missing")
    load_csv(sessions, Path("splits.csv"))
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.data import reference as reference_db
from falcon.db.engine import transaction
from falcon.db.models import Split, Ticker
from falcon.db.types import utcnow
from falcon.errors import ConfigError, ExternalServiceError

log = logging.getLogger(__name__)

__all__ = [
    "ReferenceClient",
    "RefreshStats",
    "SplitInfo",
    "TickerInfo",
    "load_csv",
    "mirror_splits",
    "refresh",
    "sectors",
    "upsert_splits",
    "upsert_tickers",
]

_RETRY_STATUSES = {429, 500, 502, 503, 504}
_MAX_WAIT_S = 120.0
_PAGE_LIMIT = 1000


@dataclass(frozen=True)
class TickerInfo:
    """One ticker's reference data; None means "not known from this source"."""

    ticker: str
    name: str | None = None
    type: str | None = None
    exchange: str | None = None
    sector: str | None = None
    market_cap: float | None = None
    active: bool | None = None


@dataclass(frozen=True)
class SplitInfo:
    """A split: ``split_to`` new shares for every ``split_from`` old ones, on ``execution_date``."""

    ticker: str
    execution_date: date
    split_from: float
    split_to: float


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ReferenceClient:
    """The Massive reference REST API, with retries and key-safe pagination."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError("no Massive API key: set FALCON_MASSIVE_API_KEY "
                              "(or load reference data from CSV with `falcon reference load`)")
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._sleep = sleep
        origin = urllib.parse.urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.netloc)
        self.requests = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ReferenceClient:
        """A client for ``data.rest_base_url`` with ``FALCON_MASSIVE_API_KEY``."""
        return cls(settings.data.rest_base_url, settings.secrets.massive_api_key or "",
                   retries=settings.data.sync_retries, backoff_s=settings.data.sync_backoff_s,
                   **kwargs)

    def _url(self, path_or_url: str, params: dict[str, Any] | None) -> str:
        if path_or_url.startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(path_or_url)
            if (parts.scheme, parts.netloc) != self._origin:
                # Following it would hand our bearer token to a host we were not configured for.
                raise ExternalServiceError(
                    f"reference API pagination points at another host ({parts.netloc}); refused")
            url = path_or_url
        else:
            url = self.base_url + path_or_url
        if params:
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            url += sep + urllib.parse.urlencode(params)
        return url

    @staticmethod
    def _safe(url: str) -> str:
        # Some servers echo apiKey into next_url; never repeat it in a message.
        parts = urllib.parse.urlsplit(url)
        query = [(k, "***" if k.lower() == "apikey" else v)
                 for k, v in urllib.parse.parse_qsl(parts.query)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def get(self, path_or_url: str, params: dict[str, Any] | None = None,
            *, allow_404: bool = False) -> dict[str, Any] | None:
        """GET one JSON document, retrying 429/5xx and network errors with backoff."""
        url = self._url(path_or_url, params)
        request = urllib.request.Request(url, headers={  # noqa: S310 - scheme checked above
            "Authorization": f"Bearer {self._key}", "Accept": "application/json",
            "User-Agent": "falcon-reference/1"})
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                self.requests += 1
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                    body = resp.read()
                try:
                    data = json.loads(body)
                except json.JSONDecodeError:
                    raise ExternalServiceError(
                        f"reference API {self._safe(url)}: answer is not JSON") from None
                if not isinstance(data, dict):
                    raise ExternalServiceError(
                        f"reference API {self._safe(url)}: answer is not a JSON object")
                return data
            except urllib.error.HTTPError as exc:
                status = exc.code
                exc.close()
                if status == 404 and allow_404:
                    return None
                if status not in _RETRY_STATUSES:
                    hint = " (check FALCON_MASSIVE_API_KEY)" if status in (401, 403) else ""
                    raise ExternalServiceError(
                        f"reference API {self._safe(url)} answered HTTP {status}{hint}") from None
                wait = _retry_after(exc.headers.get("Retry-After"))
                problem = f"HTTP {status}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem = type(exc).__name__
            if attempt > self.retries:
                raise ExternalServiceError(
                    f"reference API {self._safe(url)} failed after {attempt} attempts: {problem}")
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1)
            wait = min(wait, _MAX_WAIT_S)
            log.warning("reference API %s: %s, retrying in %.1fs", self._safe(url), problem, wait)
            self._sleep(wait)

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The ``results`` of each page, following ``next_url`` until there is none."""
        url: str | None = path
        query: dict[str, Any] | None = params
        while url:
            data = self.get(url, query) or {}
            results = data.get("results") or []
            if not isinstance(results, list):
                raise ExternalServiceError(f"reference API {path}: 'results' is not a list")
            yield [r for r in results if isinstance(r, dict)]
            url, query = data.get("next_url"), None

    def tickers(self, *, active: bool = True) -> Iterator[TickerInfo]:
        """Every US stock ticker (``market=stocks``), ``active`` ones by default."""
        params = {"market": "stocks", "active": str(active).lower(), "limit": _PAGE_LIMIT}
        for page in self.pages("/v3/reference/tickers", params):
            for r in page:
                info = _ticker_from_api(r)
                if info is not None:
                    yield info

    def ticker_details(self, ticker: str) -> TickerInfo | None:
        """Market cap and SIC description of one ticker (None when the API does not know it)."""
        path = "/v3/reference/tickers/" + urllib.parse.quote(ticker, safe="")
        data = self.get(path, allow_404=True)
        if not data or not isinstance(data.get("results"), dict):
            return None
        return _ticker_from_api(data["results"])

    def splits(self, *, since: date | None = None) -> Iterator[SplitInfo]:
        """Stock splits, optionally only those executed on or after ``since``."""
        params: dict[str, Any] = {"limit": _PAGE_LIMIT}
        if since is not None:
            params["execution_date.gte"] = since.isoformat()
        for page in self.pages("/v3/reference/splits", params):
            for r in page:
                info = _split_from_api(r)
                if info is not None:
                    yield info


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())  # no control characters or newlines in reference text
    return text[:limit] or None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _ticker_from_api(r: dict[str, Any]) -> TickerInfo | None:
    symbol = _text(r.get("ticker"), 16)
    if not symbol:
        return None
    active = r.get("active")
    return TickerInfo(
        ticker=symbol.upper(),
        name=_text(r.get("name"), 200),
        type=_text(r.get("type"), 16),
        exchange=_text(r.get("primary_exchange"), 16),
        sector=_text(r.get("sic_description"), 64),
        market_cap=_number(r.get("market_cap")),
        active=active if isinstance(active, bool) else None,
    )


def _split_from_api(r: dict[str, Any]) -> SplitInfo | None:
    try:
        ticker = str(r["ticker"]).strip().upper()
        day = date.fromisoformat(str(r["execution_date"]))
        ratio_from, ratio_to = float(r["split_from"]), float(r["split_to"])
    except (KeyError, TypeError, ValueError):
        log.warning("reference API: skipping malformed split %r", r)
        return None
    if not ticker or not (ratio_from > 0 and ratio_to > 0):
        return None
    return SplitInfo(ticker, day, ratio_from, ratio_to)


# --- the cache ---------------------------------------------------------------------------------


def upsert_tickers(session: Session, infos: Iterable[TickerInfo],
                   fields: Sequence[str] = reference_db.TICKER_FIELDS) -> int:
    """Insert or update tickers; only ``fields`` that are not None overwrite what is cached.

    A ticker list from the API knows no market cap, and a details call no exchange listing; each
    source updates what it knows and leaves the rest (the data layer's upsert, shared with the
    CSV loader).
    """
    return reference_db.upsert_tickers(session, (asdict(i) for i in infos), fields)


def upsert_splits(session: Session, splits: Iterable[SplitInfo]) -> int:
    """Insert or update splits, keyed by (ticker, execution date)."""
    return reference_db.upsert_splits(session, (asdict(s) for s in splits))


@dataclass
class RefreshStats:
    """What a refresh did."""

    tickers: int = 0
    deactivated: int = 0
    details: int = 0
    details_missing: int = 0
    splits: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI and the scheduler's record."""
        return (f"{self.tickers} tickers ({self.deactivated} deactivated), {self.details} details, "
                f"{self.splits} splits, {self.requests} requests")


Details = Literal["none", "missing", "all"]


def refresh(
    client: ReferenceClient,
    sessions: sessionmaker[Session],
    *,
    details: Details = "missing",
    tickers: Sequence[str] | None = None,
    max_details: int | None = None,
    splits_since: date | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RefreshStats:
    """Refresh the cache from the API: the ticker list, per-ticker details, and splits.

    ``details``: which tickers get a details call (market cap, sector): ``missing`` those without a
    sector or market cap, ``all`` every active one, ``none`` nobody; ``tickers`` narrows it to a
    list. Splits are fetched from ``splits_since`` or, by default, from 30 days before the newest
    cached one (everything on the first run).
    """
    stats = RefreshStats()
    say = on_progress or (lambda _text: None)

    listed = list(client.tickers(active=True))
    with transaction(sessions) as s:
        stats.tickers = upsert_tickers(s, listed)
        seen = {t.ticker for t in listed}
        if seen:
            # Only a complete list may retire tickers: the loop above raised if a page failed.
            active_now = set(s.scalars(select(Ticker.ticker).where(Ticker.active.is_(True))))
            gone = sorted(active_now - seen)
            for i in range(0, len(gone), 500):
                s.execute(update(Ticker).where(Ticker.ticker.in_(gone[i:i + 500]))
                          .values(active=False, updated_at=utcnow()))
            stats.deactivated = len(gone)
    say(f"{stats.tickers} tickers listed")

    if details != "none":
        with sessions() as s:
            query = select(Ticker.ticker).where(Ticker.active.is_(True)).order_by(Ticker.ticker)
            if details == "missing":
                query = query.where((Ticker.sector.is_(None)) | (Ticker.market_cap.is_(None)))
            if tickers:
                query = query.where(Ticker.ticker.in_([t.upper() for t in tickers]))
            wanted = list(s.scalars(query))
        if max_details is not None and len(wanted) > max_details:
            stats.notes.append(f"details limited to {max_details} of {len(wanted)} tickers")
            wanted = wanted[:max_details]
        batch: list[TickerInfo] = []
        for i, symbol in enumerate(wanted, 1):
            info = client.ticker_details(symbol)
            if info is None:
                stats.details_missing += 1
            else:
                batch.append(info)
            if len(batch) >= 200 or i == len(wanted):
                with transaction(sessions) as s:
                    stats.details += upsert_tickers(s, batch, ("sector", "market_cap", "name"))
                batch = []
                say(f"details {i}/{len(wanted)}")

    if splits_since is None:
        with sessions() as s:
            newest = s.scalar(select(func.max(Split.execution_date)))
        splits_since = newest - timedelta(days=30) if newest else None
    found = list(client.splits(since=splits_since))
    with transaction(sessions) as s:
        stats.splits = upsert_splits(s, found)
    stats.requests = client.requests
    say(stats.summary())
    return stats


# --- queries for the screener and the paper trader --------------------------------------------


def sectors(session: Session, tickers: Iterable[str]) -> dict[str, str | None]:
    """The cached sector (SIC description) of each ticker; None when unknown."""
    wanted = sorted({t.upper() for t in tickers})
    out: dict[str, str | None] = dict.fromkeys(wanted)
    for i in range(0, len(wanted), 500):
        for symbol, sector in session.execute(
            select(Ticker.ticker, Ticker.sector).where(Ticker.ticker.in_(wanted[i:i + 500]))
        ):
            out[symbol] = sector
    return out


def reference_rows(session: Session) -> list[dict[str, Any]]:
    """Every cached ticker as a dict (ticker, name, type, exchange, sector, market_cap, active)."""
    return [
        {"ticker": t.ticker, "name": t.name, "type": t.type, "exchange": t.exchange,
         "sector": t.sector, "market_cap": t.market_cap, "active": t.active}
        for t in session.scalars(select(Ticker))
    ]


def load_csv(sessions: sessionmaker[Session], path: Path,
             kind: Literal["tickers", "splits"] | None = None) -> tuple[str, int]:
    """Load a tickers or splits CSV into the cache (see :mod:`falcon.screener.reference_csv`)."""
    from falcon.screener.reference_csv import load_csv as _load

    return _load(sessions, path, kind)


def mirror_splits(settings: Settings, sessions: sessionmaker[Session]) -> Path | None:
    """Write the splits table to the store's mirror, which the split-adjusting reader uses.

    The reader needs no database (it runs on any node), so a change of the table is only seen
    once the mirror is rewritten; None when this build's data package cannot do it.
    """
    try:
        from falcon.data.reference import export_splits
        from falcon.data.store import Store
    except ImportError:
        log.warning("falcon.data.reference.export_splits missing: splits not mirrored")
        return None
    return export_splits(sessions, Store.of(settings))
