"""Reading and checking Massive (Polygon) flat files.

A flat file is CSV, usually gzip-compressed, with exactly this header::

    ticker,volume,open,close,high,low,window_start,transactions

``window_start`` is Unix nanoseconds (UTC); day bars start at 00:00 America/New_York, minute files
include pre- and post-market. ``volume`` can be fractional and is read as float.

What is wrong with a file decides what happens to it:

- structural problems (not gzip, truncated gzip, empty, wrong or missing header, unparseable CSV)
  raise :class:`FileRejected`: nothing of the file is used;
- row problems (missing or non-numeric values, bad ticker, zero/negative/non-finite prices,
  ``high < low``, open or close outside ``[low, high]``, negative volume, a bar of another date
  than the file's, duplicate ``(ticker, window_start)``) quarantine those rows with a reason and
  keep the rest.

Everything is vectorised in polars. The usual file takes the fast path: parsed with an explicit
schema, then judged whole by a few column reductions and comparisons (:func:`_clean_and_sorted`);
a clean, sorted file needs nothing more. Only a file that fails them gets the exact pass, which
sorts when needed and gives each row its first reason; only a file whose typed parse fails (a
non-numeric value somewhere) is parsed again as text to find which rows.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

Kind = Literal["day", "minute"]
KINDS: tuple[Kind, ...] = ("day", "minute")

COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")
HEADER = ",".join(COLUMNS)
SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "volume": pl.Float64(),
    "open": pl.Float64(),
    "close": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "window_start": pl.Int64(),
    "transactions": pl.Int64(),
}
#: Columns of a bar in the store and from the reader, in this order.
BAR_COLUMNS = ("ticker", "ts", "open", "high", "low", "close", "volume", "transactions")
TS_TYPE = pl.Datetime("ns", "UTC")

#: Reasons a row is quarantined, in the order they are checked (the first that applies wins).
REASONS = (
    "non_numeric",
    "missing_value",
    "bad_ticker",
    "bad_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "bad_volume",
    "bad_transactions",
    "wrong_date",
    "duplicate",
)

NEW_YORK = ZoneInfo("America/New_York")
_DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_NUMERIC = ("volume", "open", "close", "high", "low", "window_start", "transactions")
_PRICES = ("open", "close", "high", "low")


class FileRejected(Exception):
    """A structural problem: the whole file is refused (the message says why, in one line)."""


@dataclass(frozen=True)
class ParsedFile:
    """The outcome of checking one flat file.

    ``kept`` has :data:`BAR_COLUMNS` plus ``date`` (the New York session date), sorted by
    ticker and ts. ``rejected`` has the file's columns as text, plus ``reason`` and ``date``
    (null when the row's time could not be read).
    """

    kept: pl.DataFrame
    rejected: pl.DataFrame
    rows_total: int


def kind_from_path(path: Path | str) -> Kind | None:
    """``day`` or ``minute`` when the path says so (``day_aggs_v1``/``minute_aggs_v1``)."""
    text = str(path).lower()
    if "minute_aggs" in text or "minute" in Path(text).name:
        return "minute"
    if "day_aggs" in text or "day" in Path(text).name:
        return "day"
    return None


def date_from_path(path: Path | str) -> date | None:
    """The trade date in a file name such as ``2024-01-02.csv.gz`` (None when there is none)."""
    name = Path(path).name
    match = _DATE_IN_NAME.search(name)
    if not match or not name.startswith(match.group(0)):
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def decompress(raw: bytes, *, name: str = "") -> bytes:
    """The CSV bytes of ``raw``: gunzipped when it is gzip; a broken gzip is rejected whole."""
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            reason = "truncated" if isinstance(exc, EOFError) else "corrupt"
            raise FileRejected(f"bad gzip ({reason}: {exc})") from None
    if name.endswith(".gz"):
        raise FileRejected("bad gzip (not gzip data)")
    return raw


def check_header(data: bytes) -> None:
    """Reject ``data`` unless its first line is exactly :data:`HEADER`."""
    if not data.strip():
        raise FileRejected("empty file")
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
    text = first.decode("utf-8", errors="replace").strip()
    if text == HEADER:
        return
    shown = text if len(text) <= 80 else text[:77] + "..."
    if text.split(",")[0] != "ticker":
        raise FileRejected(f"missing header: expected '{HEADER}', first line is '{shown}'")
    raise FileRejected(f"wrong header: expected '{HEADER}', got '{shown}'")


def _ny_midnight_ns(day: date) -> int:
    return int(datetime.combine(day, time(0), NEW_YORK).timestamp()) * 1_000_000_000


def _read_typed(data: bytes) -> pl.DataFrame | None:
    """Parse with the explicit schema (polars gunzips gzip input itself, checking its CRC)."""
    try:
        return pl.read_csv(data, schema=SCHEMA, has_header=True, raise_if_empty=False)
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
        return None  # some value is not a number: find it on the slow path
    except OSError as exc:
        raise FileRejected(f"bad gzip ({exc})") from None


def _read_text(data: bytes) -> pl.DataFrame:
    schema = {name: pl.String() for name in COLUMNS}
    try:
        return pl.read_csv(data, schema=schema, has_header=True, raise_if_empty=False)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileRejected(f"unreadable CSV ({first[:160]})") from None


def _typed_from_text(text: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Cast the text columns; the second value flags rows with a value that is not a number."""
    casts = [
        pl.col(name).str.strip_chars().cast(SCHEMA[name], strict=False).alias(name)
        for name in _NUMERIC
    ]
    typed = text.with_columns(casts)
    bad = pl.any_horizontal(
        [typed[name].is_null() & text[name].is_not_null() for name in _NUMERIC]
    )
    return typed, text.select(bad.alias("non_numeric")).to_series()


def _date_expr(file_date: date | None) -> pl.Expr:
    if file_date is not None:
        # One date per file: every row belongs to it (a stray row is flagged, not moved).
        return pl.lit(file_date, dtype=pl.Date)
    return (
        pl.from_epoch(pl.col("window_start"), time_unit="ns")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("America/New_York")
        .dt.date()
    )


def _conditions(file_date: date | None) -> list[tuple[str, pl.Expr]]:
    """(reason, condition) for every row check but ``non_numeric``, in :data:`REASONS` order."""
    c = pl.col
    prices = [c(p) for p in _PRICES]
    missing = pl.any_horizontal([c(n).is_null() for n in COLUMNS])
    bad_price = ~pl.all_horizontal([p.is_finite() & (p > 0) for p in prices])
    ticker = c("ticker")
    bad_ticker = (ticker.str.len_bytes() == 0) | ticker.str.contains(r"\s")
    if file_date is not None:
        lo, hi = _ny_midnight_ns(file_date), _ny_midnight_ns(file_date + timedelta(days=1))
        wrong_date = (c("window_start") < lo) | (c("window_start") >= hi)
    else:
        wrong_date = c("window_start") <= 0
    # Rows are sorted by (ticker, window_start) by now, so a duplicate key sits next to its twin.
    same_prev = (ticker == ticker.shift(1)) & (c("window_start") == c("window_start").shift(1))
    same_next = (ticker == ticker.shift(-1)) & (c("window_start") == c("window_start").shift(-1))
    duplicate = (same_prev | same_next).fill_null(False)
    return [
        ("missing_value", missing),
        ("bad_ticker", bad_ticker),
        ("bad_price", bad_price),
        ("high_below_low", c("high") < c("low")),
        ("open_outside_range", (c("open") < c("low")) | (c("open") > c("high"))),
        ("close_outside_range", (c("close") < c("low")) | (c("close") > c("high"))),
        ("bad_volume", ~c("volume").is_finite() | (c("volume") < 0)),
        ("bad_transactions", c("transactions") < 0),
        ("wrong_date", wrong_date),
        ("duplicate", duplicate),
    ]


def _reason_expr(file_date: date | None, has_non_numeric: bool) -> pl.Expr:
    """The first reason that applies to a row (null for a good row)."""
    conditions = _conditions(file_date)
    first = pl.col("_non_numeric") if has_non_numeric else pl.lit(False)
    chain = pl.when(first).then(pl.lit("non_numeric"))
    for reason, condition in conditions:
        chain = chain.when(condition).then(pl.lit(reason))  # type: ignore[assignment]
    return chain.otherwise(pl.lit(None, dtype=pl.String))


_INF = float("inf")
_ASCII_SPACE = (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")


def _run_starts(ticker: pl.Series, ts: pl.Series) -> pl.Series | None:
    """The rows that start a ticker's run when rows are strictly sorted by (ticker, ts).

    None when they are not (a null, a step back, or a repeated key). Series kernels on slices:
    no query plan, no shifted copies (a tenth of the cost of the expression on a day file).
    """
    n = len(ticker)
    if ticker.null_count() or ts.null_count() or not ticker.is_sorted():
        return None
    if n < 2:
        return pl.Series([True] * n, dtype=pl.Boolean)
    # Shifted slices of a chunked column (a big CSV is read in chunks) do not line up, and the
    # kernels then split every chunk: one contiguous copy first is cheaper (half, on 1M rows).
    ticker, ts = ticker.rechunk(), ts.rechunk()
    new = ticker.slice(1) != ticker.slice(0, n - 1)
    if not (new | (ts.slice(1) > ts.slice(0, n - 1))).all():
        return None
    return pl.concat([pl.Series([True]), new], rechunk=False)


def strictly_sorted(ticker: pl.Series, ts: pl.Series) -> bool:
    """True when rows are strictly sorted by (ticker, ts) (a null breaks the order)."""
    return _run_starts(ticker, ts) is not None


def _tickers_ok(tickers: pl.Series) -> bool:
    """True when no ticker is empty or holds whitespace (the ``bad_ticker`` check).

    On the Arrow buffers: the lengths are the steps of the offsets, and the data buffer is every
    ticker end to end, so ASCII whitespace is a few memchr calls over one string instead of a
    regex per ticker (each ``.str`` call of polars costs a query on its thread pool).
    """
    if tickers.is_empty():
        return True
    # Imported here: pyarrow is ~40 MB and 80 ms that the screener, web and trader, which read
    # the store but never parse flat files, should not pay.
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = tickers.to_arrow()
    if not isinstance(arr, pa.LargeStringArray):  # pragma: no cover - another Arrow layout
        return not (tickers.str.len_bytes().min() == 0 or tickers.str.contains(r"\s").any())
    if pc.min(pc.binary_length(arr)).as_py() == 0:
        return False
    _, offsets, data = arr.buffers()
    bounds = memoryview(offsets).cast("q")
    start, end = bounds[arr.offset], bounds[arr.offset + len(arr)]
    joined = b"" if data is None else data.to_pybytes()[start:end]
    if joined.isascii():
        return not any(space in joined for space in _ASCII_SPACE)
    return not tickers.str.contains(r"\s").any()


def _clean_and_sorted(typed: pl.DataFrame, file_date: date | None) -> bool:
    """True when ``typed`` is sorted by (ticker, window_start) and no row fails a check.

    The usual file; then nothing more is computed. Otherwise the exact pass finds each bad row
    and its reason. Whole-column reductions and a few comparisons: nulls from the column
    metadata, the date from min and max, tickers once per run.
    """
    if typed.is_empty():
        return True
    if any(typed.null_count().row(0)):
        return False
    col = typed.get_column
    o, h, low, c = col("open"), col("high"), col("low"), col("close")
    # Every price tied between low > 0 and high < inf: this fails a zero, negative, infinite
    # or NaN price whether a comparison with NaN is false (IEEE) or NaN sorts above +inf
    # (polars), and it covers high < low and open or close outside [low, high].
    prices = (low > 0) & (h < _INF) & (o >= low) & (o <= h) & (c >= low) & (c <= h)
    if not prices.all():
        return False
    v = col("volume")
    if not ((v >= 0) & (v < _INF)).all() or col("transactions").min() < 0:  # type: ignore[operator]
        return False
    w = col("window_start")
    if file_date is not None:
        lo, hi = _ny_midnight_ns(file_date), _ny_midnight_ns(file_date + timedelta(days=1))
        if w.min() < lo or w.max() >= hi:  # type: ignore[operator]
            return False
    elif w.min() <= 0:  # type: ignore[operator]
        return False
    ticker = col("ticker").rechunk()
    starts = _run_starts(ticker, w)
    return starts is not None and _tickers_ok(ticker.filter(starts))


def _kept(good: pl.DataFrame, file_date: date | None) -> pl.DataFrame:
    """Good typed rows as the store's columns (:data:`BAR_COLUMNS` and ``date``)."""
    col = good.get_column
    if file_date is None:
        day = good.select(_date_expr(None).alias("date")).to_series()
    else:
        day = pl.Series("date", [file_date], dtype=pl.Date).new_from_index(0, good.height)
    return pl.DataFrame([
        col("ticker"), col("window_start").cast(TS_TYPE).alias("ts"),
        col("open"), col("high"), col("low"), col("close"), col("volume"), col("transactions"),
        day,
    ])


def parse_csv(data: bytes, *, file_date: date | None = None) -> ParsedFile:
    """Check flat-file bytes (header included; gzip or plain) and split good rows from bad.

    ``file_date`` is the date the file is for (from its name); when given, bars of another New
    York date are quarantined as ``wrong_date``. Without it (a multi-day file), each bar's date
    comes from its ``window_start``.
    """
    check_header(_head(data))
    typed = _read_typed(data)
    text: pl.DataFrame | None = None
    if typed is None:
        text = _read_text(decompress(data))
        typed, non_numeric = _typed_from_text(text)
        typed = typed.with_columns(non_numeric.alias("_non_numeric"))
        # Keep what the file said, not the nulls a failed cast left behind.
        typed = typed.hstack(text.rename({n: f"_raw_{n}" for n in COLUMNS}))
    rows_total = typed.height
    if text is None and _clean_and_sorted(typed, file_date):
        return ParsedFile(kept=_kept(typed, file_date), rejected=_empty_rejects(),
                          rows_total=rows_total)
    # The exact pass: sort when needed (the duplicate check looks at neighbours), then the first
    # reason of each row.
    if not strictly_sorted(typed.get_column("ticker"), typed.get_column("window_start")):
        typed = typed.sort(["ticker", "window_start"], nulls_last=True, maintain_order=True)
    reason = _reason_expr(file_date, has_non_numeric=text is not None)
    checked = typed.with_columns(reason.alias("reason"))
    bad_mask = checked.get_column("reason").is_not_null()
    any_bad = bool(bad_mask.any())
    good = checked.filter(~bad_mask) if any_bad else checked
    kept = _kept(good, file_date)
    if not any_bad:
        return ParsedFile(kept=kept, rejected=_empty_rejects(), rows_total=rows_total)
    row_date = (
        pl.lit(file_date, dtype=pl.Date)
        if file_date is not None
        else pl.when(pl.col("window_start") > 0).then(_date_expr(None))
    )
    if text is None:
        raw = [pl.col(n).cast(pl.String).alias(n) for n in COLUMNS]
    else:
        raw = [pl.col(f"_raw_{n}").alias(n) for n in COLUMNS]
    rejected = checked.filter(bad_mask).select(*raw, pl.col("reason"), row_date.alias("date"))
    return ParsedFile(kept=kept, rejected=rejected, rows_total=rows_total)


def _head(data: bytes, size: int = 1 << 16) -> bytes:
    """The first bytes of the (decompressed) content, enough for the header line."""
    if data[:2] != b"\x1f\x8b":
        return data[:size]
    try:
        # A few KB out is plenty for a 62-byte header (inflating 64 KB cost a day file 0.3 ms).
        head = zlib.decompressobj(wbits=31).decompress(data[:size], 4096)
    except zlib.error as exc:
        raise FileRejected(f"bad gzip (corrupt: {exc})") from None
    # Nothing (or only blanks) out of the first block: an empty member, a broken stream, or a
    # file that may be empty; the full pass knows.
    return head if head.strip() else decompress(data)


def _rejects_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {name: pl.String() for name in COLUMNS}
    schema["reason"] = pl.String()
    schema["date"] = pl.Date()
    return schema


_NO_REJECTS = pl.DataFrame(schema=_rejects_schema())


def _empty_rejects() -> pl.DataFrame:
    return _NO_REJECTS.clear()  # a new frame, at a fraction of building one from the schema


def parse_file(raw: bytes, *, name: str, file_date: date | None = None) -> ParsedFile:
    """:func:`parse_csv` the bytes of a flat file called ``name`` (``.csv.gz`` or ``.csv``)."""
    if name.endswith(".gz") and raw[:2] != b"\x1f\x8b":
        raise FileRejected("bad gzip (not gzip data)")
    return parse_csv(raw, file_date=file_date)
