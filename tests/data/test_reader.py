"""The reader: pruning, ranges, tickers and split adjustment (no database needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from falcon.data.flatfile import parse_csv
from falcon.data.reader import adjust_for_splits, read_bars
from falcon.data.store import Store
from falcon.errors import DataError

from .helpers import bar, csv_bytes, week

DAYS = week(date(2024, 1, 29), 10)  # spans January and February


@pytest.fixture
def filled(tmp_path: object) -> Store:
    store = Store(tmp_path / "md")  # type: ignore[operator]
    rows = [bar(t, d, o=p, h=p + 1, low=p - 1, c=p, v=100.0)
            for i, d in enumerate(DAYS) for t, p in (("AAA", 100.0 + i), ("BBB", 50.0 + i))]
    store.replace_dates("day", parse_csv(csv_bytes(rows)).kept)
    return store


def test_reads_are_sorted_and_typed(filled: Store) -> None:
    bars = read_bars(filled).collect()
    assert bars.columns == ["ticker", "ts", "open", "high", "low", "close", "volume",
                            "transactions"]
    assert bars.schema["ts"] == pl.Datetime("ns", "UTC") and bars.schema["volume"] == pl.Float64
    assert bars.height == 20
    assert bars["ticker"].to_list() == ["AAA"] * 10 + ["BBB"] * 10
    assert bars.filter(pl.col("ticker") == "AAA")["ts"].is_sorted()


def test_date_range_prunes_files_and_filters_rows(filled: Store) -> None:
    # One batch of several sessions: one compacted file per month, named by its span.
    assert [p.stem for p in filled.partitions("day")] == [
        "2024-01-29_2024-01-31", "2024-02-01_2024-02-09"]
    assert [p.stem for p in filled.partitions("day", date(2024, 2, 1), None)] == [
        "2024-02-01_2024-02-09"]
    feb = read_bars(filled, start=date(2024, 2, 1), end=date(2024, 2, 2), tickers=["AAA"])
    frame = feb.collect()
    assert frame["close"].to_list() == [103.0, 104.0]
    plan = feb.explain()
    assert "2024-01-29_2024-01-31.parquet" not in plan


def test_datetime_bounds_must_be_aware(filled: Store) -> None:
    start = datetime(2024, 2, 1, 5, 0, tzinfo=UTC)
    assert read_bars(filled, start=start, tickers="BBB").collect().height == 7
    with pytest.raises(DataError, match="no time zone"):
        read_bars(filled, start=datetime(2024, 2, 1))


def test_missing_store_reads_empty(tmp_path: object) -> None:
    assert read_bars(Store(tmp_path / "none")).collect().height == 0  # type: ignore[operator]


def test_splits_adjust_before_execution_date_and_compound(filled: Store) -> None:
    splits = pl.DataFrame({
        "ticker": ["AAA", "AAA"],
        "execution_date": [DAYS[4], DAYS[7]],
        "split_from": [1.0, 1.0],
        "split_to": [2.0, 5.0],
    })
    adj = read_bars(filled, tickers=["AAA"], splits=splits).collect()
    raw = read_bars(filled, tickers=["AAA"], adjusted=False).collect()
    factors = (raw["close"] / adj["close"]).round(9).to_list()
    assert factors == [10.0] * 4 + [5.0] * 3 + [1.0] * 3
    assert (adj["volume"] / raw["volume"]).round(9).to_list() == factors
    # Other tickers are untouched.
    other = read_bars(filled, tickers=["BBB"], splits=splits).collect()
    assert other["close"].to_list() == read_bars(filled, tickers=["BBB"],
                                                 adjusted=False).collect()["close"].to_list()


def test_splits_mirror_in_store_is_used_by_default(filled: Store) -> None:
    filled.splits_path.parent.mkdir(parents=True)
    pl.DataFrame({"ticker": ["BBB"], "execution_date": [DAYS[-1]], "split_from": [1.0],
                  "split_to": [4.0]}).write_parquet(filled.splits_path)
    bbb = read_bars(filled, tickers=["BBB"]).collect()
    assert bbb["close"][0] == pytest.approx(50.0 / 4)
    assert bbb["close"][-1] == 59.0


def test_adjust_ignores_degenerate_splits() -> None:
    lf = pl.LazyFrame({"ticker": ["A"], "date": [date(2024, 1, 2)], "open": [1.0], "high": [1.0],
                       "low": [1.0], "close": [1.0], "volume": [1.0]})
    splits = pl.DataFrame({"ticker": ["A"], "execution_date": [date(2024, 2, 1)],
                           "split_from": [1.0], "split_to": [1.0]})
    assert adjust_for_splits(lf, splits).collect()["close"].to_list() == [1.0]
