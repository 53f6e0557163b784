"""Reference data from CSV files a user supplies, into the same cache as the Massive API.

Tickers: a header with ``ticker`` and any of ``name,type,exchange,sector,market_cap,active``
(``symbol``, ``primary_exchange`` and ``sic_description`` are accepted as aliases); only the
columns present are updated, so a file of market caps leaves names and sectors alone.
Splits: ``ticker,execution_date,split_from,split_to`` (a 4-for-1 split is ``1,4``).
Any bad row rejects the whole file, with its line and column named: nothing is half-loaded.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import transaction
from falcon.errors import ValidationError
from falcon.screener.reference import (
    _TICKER_FIELDS,
    SplitInfo,
    TickerInfo,
    _number,
    _text,
    upsert_splits,
    upsert_tickers,
)

__all__ = ["load_csv"]

_TICKER_ALIASES = {"symbol": "ticker", "primary_exchange": "exchange",
                   "sic_description": "sector"}
_SPLIT_COLUMNS = {"ticker", "execution_date", "split_from", "split_to"}


def _bool(text: str) -> bool | None:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "y", "t"}:
        return True
    if value in {"0", "false", "no", "n", "f"}:
        return False
    return None


def load_csv(sessions: sessionmaker[Session], path: Path,
             kind: Literal["tickers", "splits"] | None = None) -> tuple[str, int]:
    """Load a tickers or splits CSV into the cache; returns (kind, rows loaded).

    Tickers: a header with ``ticker`` and any of ``name,type,exchange,sector,market_cap,active``
    (only the columns present are updated). Splits: ``ticker,execution_date,split_from,split_to``.
    Any bad row rejects the whole file, with its line and column named.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        reader.fieldnames = [_TICKER_ALIASES.get(h, h) for h in header]
        columns = set(reader.fieldnames)
        if kind is None:
            kind = "splits" if "execution_date" in columns else "tickers"
        if "ticker" not in columns:
            raise ValidationError(
                f"{path}: line 1: no 'ticker' column (header: {','.join(header)})")
        problems: list[str] = []
        if kind == "splits":
            missing = _SPLIT_COLUMNS - columns
            if missing:
                raise ValidationError(
                    f"{path}: line 1: missing columns {', '.join(sorted(missing))}")
            splits = [sp for n, row in enumerate(reader, 2)
                      if (sp := _split_row(row, f"{path}: line {n}", problems)) is not None]
        else:
            fields = [f for f in _TICKER_FIELDS if f in columns]
            infos = [t for n, row in enumerate(reader, 2)
                     if (t := _ticker_row(row, f"{path}: line {n}", problems)) is not None]
    if problems:
        raise ValidationError(f"{problems[0]} ({len(problems)} bad rows; nothing loaded)", problems)
    with transaction(sessions) as session:
        if kind == "splits":
            return kind, upsert_splits(session, splits)
        return kind, upsert_tickers(session, infos, fields)


def _ticker_row(row: dict[str, Any], where: str, problems: list[str]) -> TickerInfo | None:
    symbol = (row.get("ticker") or "").strip().upper()
    if not symbol or len(symbol) > 16:
        problems.append(f"{where}: ticker: {symbol!r} is not a ticker")
        return None
    cap: float | None = None
    raw_cap = (row.get("market_cap") or "").strip()
    if raw_cap:
        cap = _number(raw_cap)
        if cap is None:
            problems.append(f"{where}: market_cap: {raw_cap!r} is not a non-negative number")
    active: bool | None = None
    raw_active = (row.get("active") or "").strip()
    if raw_active:
        active = _bool(raw_active)
        if active is None:
            problems.append(f"{where}: active: {raw_active!r} is not true or false")
    return TickerInfo(symbol, name=_text(row.get("name"), 200), type=_text(row.get("type"), 16),
                      exchange=_text(row.get("exchange"), 16),
                      sector=_text(row.get("sector"), 64), market_cap=cap,
                      active=active)


def _split_row(row: dict[str, Any], where: str, problems: list[str]) -> SplitInfo | None:
    symbol = (row.get("ticker") or "").strip().upper()
    if not symbol or len(symbol) > 16:
        problems.append(f"{where}: ticker: {symbol!r} is not a ticker")
        return None
    try:
        day = date.fromisoformat((row.get("execution_date") or "").strip())
    except ValueError:
        problems.append(f"{where}: execution_date: {row.get('execution_date')!r} is not YYYY-MM-DD")
        return None
    ratios = []
    for key in ("split_from", "split_to"):
        value = _number((row.get(key) or "").strip())
        if not value:
            problems.append(f"{where}: {key}: {row.get(key)!r} is not a positive number")
            return None
        ratios.append(value)
    return SplitInfo(symbol, day, ratios[0], ratios[1])
