"""Reference data from CSV files: tickers (name, type, sector ...) and stock splits.

The one loader of reference CSVs (``falcon reference load``; ``falcon data reference load`` and
``falcon data sample`` call it too):

- tickers: a header with ``ticker`` and any of ``name,type,exchange,sector,market_cap,active``
  (``symbol``, ``primary_exchange`` and ``sic_description`` are accepted as aliases); only the
  columns present are updated, so a file of market caps leaves names and sectors alone, and an
  empty cell leaves what is cached;
- splits: ``ticker,execution_date,split_from,split_to`` (``split_to`` new shares for every
  ``split_from`` old ones: a 4-for-1 split is ``1,4``).

Any bad row rejects the whole file, with its line and column named: nothing is half-loaded.
Loading upserts (by ticker, and by ticker and execution date), so it can run again. After the
splits table changes, :func:`export_splits` writes its mirror into the store, which is what
:func:`falcon.data.reader.read_bars` adjusts with (readers need no database connection).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.data.reader import SPLITS_SCHEMA
from falcon.data.store import Store, atomic_write
from falcon.db.engine import transaction
from falcon.db.models import Split, Ticker
from falcon.db.types import utcnow
from falcon.errors import ValidationError

CsvKind = Literal["tickers", "splits"]
TICKER_COLUMNS = ("ticker", "name", "type", "exchange", "sector", "market_cap")
TICKER_FIELDS = ("name", "type", "exchange", "sector", "market_cap", "active")
SPLIT_COLUMNS = ("ticker", "execution_date", "split_from", "split_to")
_ALIASES = {"symbol": "ticker", "primary_exchange": "exchange", "sic_description": "sector"}
_LIMITS = {"name": 200, "type": 16, "exchange": 16, "sector": 64}


@dataclass(frozen=True)
class ReferenceCsv:
    """A checked reference CSV: what it holds, the columns it has, and its rows."""

    kind: CsvKind
    fields: tuple[str, ...]  # ticker columns present (tickers only)
    rows: list[dict[str, Any]]


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())  # no control characters or newlines in reference text
    return text[:limit] or None


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _bool(text: str) -> bool | None:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "y", "t"}:
        return True
    if value in {"0", "false", "no", "n", "f"}:
        return False
    return None


def _symbol(row: dict[str, Any], where: str, problems: list[str]) -> str | None:
    symbol = (row.get("ticker") or "").strip().upper()
    if not symbol or len(symbol) > 16:
        problems.append(f"{where}: ticker: {symbol!r} is not a ticker")
        return None
    return symbol


def _ticker_row(row: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any] | None:
    symbol = _symbol(row, where, problems)
    if symbol is None:
        return None
    out: dict[str, Any] = {"ticker": symbol}
    for key, limit in _LIMITS.items():
        out[key] = _text(row.get(key), limit)
    out["market_cap"] = out["active"] = None
    raw_cap = (row.get("market_cap") or "").strip()
    if raw_cap:
        out["market_cap"] = _number(raw_cap)
        if out["market_cap"] is None:
            problems.append(f"{where}: market_cap: {raw_cap!r} is not a non-negative number")
    raw_active = (row.get("active") or "").strip()
    if raw_active:
        out["active"] = _bool(raw_active)
        if out["active"] is None:
            problems.append(f"{where}: active: {raw_active!r} is not true or false")
    return out


def _split_row(row: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any] | None:
    symbol = _symbol(row, where, problems)
    if symbol is None:
        return None
    try:
        day = date.fromisoformat((row.get("execution_date") or "").strip())
    except ValueError:
        problems.append(f"{where}: execution_date: {row.get('execution_date')!r} is not YYYY-MM-DD")
        return None
    out: dict[str, Any] = {"ticker": symbol, "execution_date": day}
    for key in ("split_from", "split_to"):
        value = _number((row.get(key) or "").strip())
        if not value:
            problems.append(f"{where}: {key}: {row.get(key)!r} is not a positive number")
            return None
        out[key] = value
    return out


def read_csv(path: Path, kind: CsvKind | None = None) -> ReferenceCsv:
    """Read and check a tickers or splits CSV (``kind`` None: splits when it has
    ``execution_date``). Raises :class:`~falcon.errors.ValidationError` naming every bad line.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read: {exc.strerror}") from None
    problems: list[str] = []
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        reader.fieldnames = [_ALIASES.get(h, h) for h in header]
        columns = set(reader.fieldnames)
        fields: tuple[str, ...] = ()
        if kind is None:
            kind = "splits" if "execution_date" in columns else "tickers"
        if "ticker" not in columns:
            raise ValidationError(
                f"{path}: line 1: no 'ticker' column (header: {','.join(header)})")
        if kind == "splits":
            missing = set(SPLIT_COLUMNS) - columns
            if missing:
                raise ValidationError(
                    f"{path}: line 1: missing columns {', '.join(sorted(missing))}")
            parse = _split_row
        else:
            parse = _ticker_row
            fields = tuple(f for f in TICKER_FIELDS if f in columns)
        rows = [r for n, row in enumerate(reader, 2)
                if (r := parse(row, f"{path}: line {n}", problems)) is not None]
    if problems:
        raise ValidationError(f"{problems[0]} ({len(problems)} bad rows; nothing loaded)", problems)
    return ReferenceCsv(kind, fields, rows)


def _insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def upsert_tickers(session: Session, rows: Iterable[dict[str, Any]],
                   fields: Sequence[str] = TICKER_FIELDS) -> int:
    """Insert or update tickers; only ``fields`` whose value is not None overwrite the cache."""
    insert = _insert(session)
    now = utcnow()
    count = 0
    # One statement per set of known fields, so that "unknown" never overwrites "known".
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        known = tuple(f for f in fields if row.get(f) is not None)
        groups.setdefault(known, []).append(
            {"ticker": row["ticker"], "updated_at": now, **{f: row[f] for f in known}})
        count += 1
    for known, values in groups.items():
        for i in range(0, len(values), 500):
            stmt = insert(Ticker).values(values[i:i + 500])
            stmt = stmt.on_conflict_do_update(
                index_elements=["ticker"],
                set_={c: stmt.excluded[c] for c in (*known, "updated_at")},
            )
            session.execute(stmt)
    return count


def upsert_splits(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Insert or update splits, keyed by (ticker, execution date)."""
    insert = _insert(session)
    keyed = {(r["ticker"], r["execution_date"]): {k: r[k] for k in SPLIT_COLUMNS} for r in rows}
    values = list(keyed.values())
    for i in range(0, len(values), 500):
        stmt = insert(Split).values(values[i:i + 500])
        stmt = stmt.on_conflict_do_update(
            index_elements=["ticker", "execution_date"],
            set_={"split_from": stmt.excluded.split_from, "split_to": stmt.excluded.split_to},
        )
        session.execute(stmt)
    return len(values)


def load_csv(sessions: sessionmaker[Session], path: Path, kind: CsvKind | None = None,
             store: Store | None = None) -> tuple[CsvKind, int]:
    """Load a tickers or splits CSV into the reference tables; returns (kind, rows loaded).

    With ``store``, a splits file also rewrites the store's splits mirror.
    """
    table = read_csv(path, kind)
    with transaction(sessions) as session:
        if table.kind == "splits":
            count = upsert_splits(session, table.rows)
        else:
            count = upsert_tickers(session, table.rows, table.fields)
    if table.kind == "splits" and store is not None:
        export_splits(sessions, store)
    return table.kind, count


def read_tickers_csv(path: Path) -> pl.DataFrame:
    """The rows of a tickers CSV, checked, as a frame with :data:`TICKER_COLUMNS`."""
    table = read_csv(path, "tickers")
    schema: dict[str, pl.DataType] = {c: pl.String() for c in TICKER_COLUMNS}
    schema["market_cap"] = pl.Float64()
    return pl.DataFrame([{c: r[c] for c in TICKER_COLUMNS} for r in table.rows], schema=schema)


def load_splits(
    sessions: sessionmaker[Session], frame: pl.DataFrame, store: Store | None = None
) -> int:
    """Upsert split rows of a frame (and refresh the store's mirror when ``store`` is given)."""
    with transaction(sessions) as session:
        count = upsert_splits(session, frame.select(SPLIT_COLUMNS).iter_rows(named=True))
    if store is not None:
        export_splits(sessions, store)
    return count


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
    atomic_write(store.splits_path, lambda tmp: frame.write_parquet(tmp), fsync=store.fsync)
    return store.splits_path
