"""Reference data from CSV files: tickers (name, type, sector ...) and stock splits.

``tickers.csv``: ``ticker,name,type,exchange,sector,market_cap`` (market_cap may be empty).
``splits.csv``: ``ticker,execution_date,split_from,split_to`` (``split_to`` new shares for every
``split_from`` old ones: a 4-for-1 split is ``1,4``).

Loading upserts rows (by ticker, and by ticker and execution date) so it can run again. After the
splits table changes, :func:`export_splits` writes its mirror into the store, which is what
:func:`falcon.data.reader.read_bars` adjusts with (readers need no database connection).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.data.reader import SPLITS_SCHEMA
from falcon.data.store import Store, atomic_write
from falcon.db.engine import transaction
from falcon.db.models import Split, Ticker
from falcon.errors import DataError

TICKER_COLUMNS = ("ticker", "name", "type", "exchange", "sector", "market_cap")
SPLIT_COLUMNS = ("ticker", "execution_date", "split_from", "split_to")


def _read(path: Path, columns: tuple[str, ...], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    try:
        frame = pl.read_csv(path, schema_overrides=schema, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0][:160]})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        need = ",".join(columns)
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need {need})")
    try:
        return frame.select(columns).cast(schema)  # type: ignore[arg-type]
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: bad value ({str(exc).splitlines()[0][:160]})") from None


def read_tickers_csv(path: Path) -> pl.DataFrame:
    """The rows of a tickers CSV, checked."""
    schema: dict[str, pl.DataType] = {c: pl.String() for c in TICKER_COLUMNS}
    schema["market_cap"] = pl.Float64()
    frame = _read(path, TICKER_COLUMNS, schema)
    if frame.get_column("ticker").is_null().any():
        raise DataError(f"{path}: a row has no ticker")
    return frame


def read_splits_csv(path: Path) -> pl.DataFrame:
    """The rows of a splits CSV, checked (ratios must be positive)."""
    frame = _read(path, SPLIT_COLUMNS, dict(SPLITS_SCHEMA))
    bad = frame.filter(
        pl.any_horizontal(pl.all().is_null())
        | (pl.col("split_from") <= 0) | (pl.col("split_to") <= 0)
    )
    if not bad.is_empty():
        row = bad.row(0, named=True)
        raise DataError(f"{path}: bad split for {row['ticker']} on {row['execution_date']}")
    return frame


def load_tickers(sessions: sessionmaker[Session], frame: pl.DataFrame) -> int:
    """Upsert ticker reference rows; returns how many rows were given."""
    with transaction(sessions) as session:
        existing = {t.ticker: t for t in session.scalars(select(Ticker))}
        for row in frame.iter_rows(named=True):
            obj = existing.get(row["ticker"]) or Ticker(ticker=row["ticker"])
            obj.name, obj.type, obj.exchange = row["name"], row["type"], row["exchange"]
            obj.sector, obj.market_cap, obj.active = row["sector"], row["market_cap"], True
            session.add(obj)
    return frame.height


def load_splits(
    sessions: sessionmaker[Session], frame: pl.DataFrame, store: Store | None = None
) -> int:
    """Upsert split rows (and refresh the store's mirror when ``store`` is given)."""
    with transaction(sessions) as session:
        existing = {(s.ticker, s.execution_date): s for s in session.scalars(select(Split))}
        for row in frame.iter_rows(named=True):
            key = (row["ticker"], row["execution_date"])
            obj = existing.get(key) or Split(ticker=key[0], execution_date=key[1])
            obj.split_from, obj.split_to = row["split_from"], row["split_to"]
            session.add(obj)
    if store is not None:
        export_splits(sessions, store)
    return frame.height


def splits_frame(sessions: sessionmaker[Session]) -> pl.DataFrame:
    """Every split in the database."""
    with sessions() as session:
        rows: list[tuple[str, date, float, float]] = [
            (s.ticker, s.execution_date, s.split_from, s.split_to)
            for s in session.scalars(select(Split).order_by(Split.ticker, Split.execution_date))
        ]
    return pl.DataFrame(rows, schema=SPLITS_SCHEMA, orient="row")


def export_splits(sessions: sessionmaker[Session], store: Store) -> Path:
    """Write the splits table to the store's mirror, atomically."""
    frame = splits_frame(sessions)
    atomic_write(store.splits_path, lambda tmp: frame.write_parquet(tmp))
    return store.splits_path
