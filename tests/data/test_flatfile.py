"""The flat-file parser: structural rejects, row quarantine with reasons, and properties."""

from __future__ import annotations

import gzip
from datetime import date

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon.data import flatfile
from falcon.data.flatfile import (
    HEADER,
    FileRejected,
    date_from_path,
    kind_from_path,
    parse_csv,
    parse_file,
)

from .helpers import bar, csv_bytes, ny_ns

DAY = date(2024, 1, 2)


def reasons(data: bytes, file_date: date | None = DAY) -> dict[str, str]:
    parsed = parse_csv(data, file_date=file_date)
    return dict(zip(parsed.rejected["ticker"].to_list(), parsed.rejected["reason"].to_list(),
                    strict=True))


def test_paths_tell_kind_and_date() -> None:
    assert kind_from_path("us_stocks_sip/day_aggs_v1/2024/01/2024-01-02.csv.gz") == "day"
    assert kind_from_path("us_stocks_sip/minute_aggs_v1/2024/01/2024-01-02.csv.gz") == "minute"
    assert kind_from_path("/tmp/x/2024-01-02.csv.gz") is None
    assert date_from_path("a/2024-01-02.csv.gz") == DAY
    assert date_from_path("a/sample_2024-01-02.csv.gz") is None
    assert date_from_path("a/2024-13-02.csv") is None


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["BAD", 100, 0, 10, 11, 9, ny_ns(DAY), 1], "bad_price"),
        (["BAD", 100, -1, 10, 11, 9, ny_ns(DAY), 1], "bad_price"),
        (["BAD", 100, "inf", 10, 11, 9, ny_ns(DAY), 1], "bad_price"),
        (["BAD", 100, "NaN", 10, 11, 9, ny_ns(DAY), 1], "bad_price"),
        (["BAD", 100, 10, 10, 9, 11, ny_ns(DAY), 1], "high_below_low"),
        (["BAD", 100, 12, 10, 11, 9, ny_ns(DAY), 1], "open_outside_range"),
        (["BAD", 100, 10, 8, 11, 9, ny_ns(DAY), 1], "close_outside_range"),
        (["BAD", -5, 10, 10, 11, 9, ny_ns(DAY), 1], "bad_volume"),
        (["BAD", 100, 10, 10, 11, 9, ny_ns(DAY), -1], "bad_transactions"),
        (["BAD", 100, 10, 10, 11, 9, ny_ns(date(2024, 1, 3)), 1], "wrong_date"),
        (["BAD", 100, "ten", 10, 11, 9, ny_ns(DAY), 1], "non_numeric"),
        (["BAD", 100, 10, 10, 11, 9, "yesterday", 1], "non_numeric"),
        (["BAD", 100, None, 10, 11, 9, ny_ns(DAY), 1], "missing_value"),
        (["BAD", 100, 10, 10, 11, 9, ny_ns(DAY), None], "missing_value"),
    ],
)
def test_bad_rows_are_quarantined_with_their_reason(row: list[object], reason: str) -> None:
    data = csv_bytes([bar("AAPL", DAY), row, bar("MSFT", DAY)])
    parsed = parse_csv(data, file_date=DAY)
    assert parsed.kept["ticker"].to_list() == ["AAPL", "MSFT"]
    assert parsed.rejected["reason"].to_list() == [reason]
    assert parsed.rows_total == 3


def test_non_numeric_rejects_keep_the_original_text() -> None:
    data = csv_bytes([bar("AAPL", DAY), ["BAD", "12x", 10, 10, 11, 9, ny_ns(DAY), 1]])
    parsed = parse_csv(data, file_date=DAY)
    assert parsed.rejected.row(0, named=True)["volume"] == "12x"


def test_duplicates_quarantine_every_copy() -> None:
    data = csv_bytes([bar("X", DAY), bar("A", DAY), bar("X", DAY, c=10.7), bar("B", DAY)])
    parsed = parse_csv(data, file_date=DAY)
    assert parsed.kept["ticker"].to_list() == ["A", "B"]
    assert parsed.rejected["reason"].to_list() == ["duplicate", "duplicate"]


def test_blank_ticker_is_bad() -> None:
    assert reasons(csv_bytes([bar(" ", DAY), bar("A", DAY)])) == {" ": "bad_ticker"}


def test_kept_rows_are_sorted_and_typed() -> None:
    data = csv_bytes([bar("MSFT", DAY), bar("AAPL", DAY, v=12.5)])
    kept = parse_csv(data, file_date=DAY).kept
    assert kept["ticker"].to_list() == ["AAPL", "MSFT"]
    assert kept.schema["ts"] == pl.Datetime("ns", "UTC")
    assert kept["volume"].to_list() == [12.5, 1000.0]
    assert kept["date"].to_list() == [DAY, DAY]


def test_multi_date_files_take_each_rows_new_york_date() -> None:
    d2 = date(2024, 1, 3)
    kept = parse_csv(csv_bytes([bar("A", DAY), bar("A", d2)]), file_date=None).kept
    assert kept["date"].to_list() == [DAY, d2]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty file"),
        (b"ticker,volume,open,close,high,low,window_start\nA,1,1,1,1,1,1\n", "wrong header"),
        (b"ticker,open,volume,close,high,low,window_start,transactions\n", "wrong header"),
        (b"AAPL,1,1,1,1,1,1,1\n", "missing header"),
        (HEADER.encode() + b'\nA,1,1,1,1,1,1,1,9,9\n"unterminated\n', "unreadable CSV"),
    ],
)
def test_structural_problems_reject_the_file(raw: bytes, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        parse_file(raw, name="2024-01-02.csv", file_date=DAY)


def test_bad_gzip_is_rejected() -> None:
    good = gzip.compress(csv_bytes([bar(f"T{i}", DAY) for i in range(2000)]))
    with pytest.raises(FileRejected, match="bad gzip"):
        parse_file(good[: len(good) // 2], name="2024-01-02.csv.gz", file_date=DAY)
    with pytest.raises(FileRejected, match="bad gzip"):
        parse_file(good[:-8] + b"\0\0\0\0" + good[-4:], name="x.csv.gz", file_date=DAY)
    with pytest.raises(FileRejected, match="not gzip"):
        parse_file(b"plain text", name="2024-01-02.csv.gz", file_date=DAY)


# --- properties ------------------------------------------------------------------------------

prices = st.floats(min_value=0.0001, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def valid_rows(draw: st.DrawFn) -> list[list[object]]:
    tickers = draw(st.lists(st.from_regex(r"[A-Z][A-Z.]{0,5}", fullmatch=True), min_size=1,
                            max_size=8, unique=True))
    rows = []
    for ticker in tickers:
        minutes = draw(st.lists(st.integers(0, 389), min_size=1, max_size=4, unique=True))
        for m in minutes:
            a, b, c, d = (draw(prices) for _ in range(4))
            low, high = min(a, b, c, d), max(a, b, c, d)
            o, cl = draw(st.sampled_from([a, b, c, d])), draw(st.sampled_from([a, b, c, d]))
            vol = draw(st.floats(0, 1e9, allow_nan=False))
            rows.append([ticker, vol, o, cl, high, low,
                         ny_ns(DAY, 9, 30) + m * 60_000_000_000, draw(st.integers(0, 10**6))])
    return rows


BAD_ROWS = {
    "bad_price": lambda r: [r[0], r[1], -abs(r[2]), r[3], r[4], r[5], r[6], r[7]],
    "high_below_low": lambda r: [r[0], r[1], r[2], r[3], r[5] * 0.5, r[5], r[6], r[7]],
    "non_numeric": lambda r: [r[0], "n/a", r[2], r[3], r[4], r[5], r[6], r[7]],
    "missing_value": lambda r: [r[0], r[1], r[2], None, r[4], r[5], r[6], r[7]],
    "wrong_date": lambda r: [r[0], r[1], r[2], r[3], r[4], r[5], r[6] + 86_400 * 10**9, r[7]],
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rows())
def test_valid_rows_round_trip_exactly(rows: list[list[object]]) -> None:
    kept = parse_csv(csv_bytes(rows), file_date=DAY).kept
    expected = sorted(rows, key=lambda r: (str(r[0]), int(r[6])))  # type: ignore[call-overload]
    assert kept.height == len(rows)
    got = kept.select("ticker", "volume", "open", "close", "high", "low", "ts",
                      "transactions").rows()
    for g, e in zip(got, expected, strict=True):
        assert list(g[:6]) == [e[0], float(e[1]), *[float(x) for x in e[2:6]]]  # type: ignore[arg-type]
        assert g[6].timestamp() * 10**9 == pytest.approx(e[6], abs=1000)
        assert g[7] == e[7]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rows(), st.data())
def test_bad_rows_never_reach_the_kept_rows(rows: list[list[object]], data: st.DataObject) -> None:
    n_bad = data.draw(st.integers(1, len(rows)))
    picks = data.draw(st.lists(st.sampled_from(sorted(BAD_ROWS)), min_size=n_bad,
                               max_size=n_bad))
    bad = {i: BAD_ROWS[reason](rows[i]) for i, reason in enumerate(picks)}
    mixed = [bad.get(i, r) for i, r in enumerate(rows)]
    parsed = parse_csv(csv_bytes(mixed), file_date=DAY)
    assert parsed.rejected.height == len(bad)
    assert sorted(parsed.rejected["reason"].to_list()) == sorted(picks)
    assert parsed.kept.height == len(rows) - len(bad)
    good = parsed.kept
    assert good.filter((pl.col("high") < pl.col("low")) | (pl.col("open") <= 0)).is_empty()
    assert (good["date"] == DAY).all()


# The fast path (a clean, sorted file judged whole) must agree with the exact pass on any input:
# mostly good rows, each maybe with one edge value in one field.
EDGES: dict[int, list[object]] = {
    0: ["E F", "G\tH", "É", "I\x1fJ", '""', "A"],
    1: [0.0, -1.0, float("inf"), float("nan")],
    **{i: [0.0, -1.0, 8.0, 12.0, float("inf"), float("-inf"), float("nan")] for i in (2, 3, 4, 5)},
    6: [ny_ns(DAY) - 1, ny_ns(date(2024, 1, 3)), ny_ns(DAY, 9, 30)],
    7: [-1, 0],
}


@st.composite
def edgy_rows(draw: st.DrawFn) -> list[list[object]]:
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        row = bar(draw(st.sampled_from(["A", "B", "C.D"])), DAY,
                  minute=draw(st.integers(0, 2)))  # o 10, c 10.5, h 11, low 9
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(EDGES)))
            row[field] = draw(st.sampled_from(EDGES[field]))
        rows.append(row)
    if draw(st.booleans()):
        rows.sort(key=lambda r: (str(r[0]), int(r[6])))  # type: ignore[call-overload]
    return rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edgy_rows())
def test_fast_path_agrees_with_the_exact_pass(rows: list[list[object]]) -> None:
    data = csv_bytes(rows)
    fast = parse_csv(data, file_date=DAY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flatfile, "_clean_and_sorted", lambda typed, file_date: False)
        exact = parse_csv(data, file_date=DAY)
    assert fast.rows_total == exact.rows_total
    assert fast.kept.equals(exact.kept)
    assert fast.rejected.equals(exact.rejected)


def test_fast_path_takes_a_clean_sorted_file_whole() -> None:
    data = csv_bytes([bar("A", DAY), bar("B", DAY, o=9.0, c=11.0)])
    typed = flatfile._read_typed(data)
    assert typed is not None and flatfile._clean_and_sorted(typed, DAY)
    for bad in ([bar("B", DAY), bar("A", DAY)], [bar("A", DAY), bar("A", DAY)],
                [bar("A B", DAY)], [bar("A", DAY, o=float("nan"))], [bar("A", DAY, h=8.5)]):
        typed = flatfile._read_typed(csv_bytes(bad))
        assert typed is not None and not flatfile._clean_and_sorted(typed, DAY), bad
