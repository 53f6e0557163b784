"""Builders of flat files for the data tests."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from falcon.data.flatfile import HEADER

NY = ZoneInfo("America/New_York")

Row = Sequence[object]


def ny_ns(day: date, hour: int = 0, minute: int = 0) -> int:
    """Unix nanoseconds of a New York wall-clock time."""
    return int(datetime.combine(day, time(hour, minute), NY).timestamp()) * 1_000_000_000


def bar(ticker: str, day: date, o: float = 10.0, h: float = 11.0, low: float = 9.0,
        c: float = 10.5, v: float = 1000.0, n: int = 7, minute: int | None = None) -> list[object]:
    """One flat-file row in Massive's column order."""
    ws = ny_ns(day) if minute is None else ny_ns(day, 9, 30) + minute * 60_000_000_000
    return [ticker, v, o, c, h, low, ws, n]


def csv_bytes(rows: Iterable[Row], header: str = HEADER) -> bytes:
    lines = [header] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def write_flat(path: Path, rows: Iterable[Row], *, header: str = HEADER, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = csv_bytes(rows, header)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def day_file(root: Path, day: date, rows: Iterable[Row], **kw: object) -> Path:
    """A Massive-style day file: root/day_aggs_v1/YYYY/MM/YYYY-MM-DD.csv.gz."""
    path = root / "day_aggs_v1" / f"{day:%Y}" / f"{day:%m}" / f"{day:%Y-%m-%d}.csv.gz"
    return write_flat(path, rows, **kw)  # type: ignore[arg-type]


def minute_file(root: Path, day: date, rows: Iterable[Row]) -> Path:
    path = root / "minute_aggs_v1" / f"{day:%Y}" / f"{day:%m}" / f"{day:%Y-%m-%d}.csv.gz"
    return write_flat(path, rows)


def week(start: date, n: int) -> list[date]:
    """``n`` weekdays from ``start`` (tests pick ranges without holidays)."""
    out: list[date] = []
    day = start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out
