"""The day-bar layout: one file per imported session, compaction, superseded files, old layout."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falcon.data.flatfile import parse_csv
from falcon.data.reader import read_bars
from falcon.data.store import MAX_FILES_PER_MONTH, Store, span_of

from .helpers import bar, csv_bytes, week

MARCH = week(date(2024, 3, 1), 21)  # the sessions of March 2024 (and the first of April)


def one_day(store: Store, day: date, close: float = 10.5, tickers: tuple[str, ...] = ("A", "B")
            ) -> None:
    rows = [bar(t, day, h=30.0, c=close) for t in tickers]
    store.replace_dates("day", parse_csv(csv_bytes(rows), file_date=day).kept)


def names(store: Store) -> list[str]:
    return [p.stem for p in store.partitions("day")]


def test_one_session_is_its_own_file_and_touches_nothing_else(tmp_path: Path) -> None:
    store = Store(tmp_path)
    one_day(store, MARCH[0])
    first = store.partitions("day")[0]
    before = first.stat().st_mtime_ns
    one_day(store, MARCH[1])
    assert names(store) == [f"{MARCH[0]}", f"{MARCH[1]}"]
    assert first.stat().st_mtime_ns == before  # the earlier session was not rewritten
    assert store.dates("day") == MARCH[:2]
    assert read_bars(store).collect().height == 4


def test_a_month_is_compacted_when_a_later_month_arrives(tmp_path: Path) -> None:
    store = Store(tmp_path)
    feb = [date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29)]
    for day in feb:
        one_day(store, day)
    one_day(store, MARCH[0])
    assert names(store) == ["2024-02-27_2024-02-29", f"{MARCH[0]}"]
    bars = read_bars(store, with_date=True).collect()
    assert bars.height == 8  # no session counted twice
    assert bars.filter(pl.col("ticker") == "A")["date"].to_list() == [*feb, MARCH[0]]
    assert store.dates("day") == [*feb, MARCH[0]]


def _codecs(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    return {meta.row_group(g).column(c).compression
            for g in range(meta.num_row_groups) for c in range(meta.num_columns)}


def test_session_files_are_written_uncompressed_and_compacted_with_zstd(tmp_path: Path) -> None:
    store = Store(tmp_path)
    one_day(store, date(2024, 2, 28))
    assert _codecs(store.partition_path("day", date(2024, 2, 28))) == {"UNCOMPRESSED"}
    one_day(store, date(2024, 2, 29))
    one_day(store, MARCH[0])  # February is over: compacted
    compacted, session = store.partitions("day")
    assert span_of(compacted) == (date(2024, 2, 28), date(2024, 2, 29))
    assert _codecs(compacted) == {"ZSTD"}
    assert _codecs(session) == {"UNCOMPRESSED"}
    minute = parse_csv(csv_bytes([bar("A", MARCH[0], minute=0)]), file_date=MARCH[0]).kept
    store.replace_dates("minute", minute)  # minute files are never rewritten: compressed
    assert _codecs(store.partition_path("minute", MARCH[0])) == {"ZSTD"}


def test_a_month_with_too_many_files_is_compacted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for day in MARCH[: MAX_FILES_PER_MONTH + 1]:
        one_day(store, day)
    assert names(store) == [f"{MARCH[0]}_{MARCH[MAX_FILES_PER_MONTH]}"]
    one_day(store, MARCH[MAX_FILES_PER_MONTH + 1])
    assert len(store.partitions("day")) == 2
    assert read_bars(store).collect().height == 2 * (MAX_FILES_PER_MONTH + 2)


def test_a_session_inside_a_compacted_span_replaces_only_that_session(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rows = [bar(t, d, c=10.0) for d in MARCH[:5] for t in ("A", "B")]
    store.replace_dates("day", parse_csv(csv_bytes(rows)).kept)
    assert names(store) == [f"{MARCH[0]}_{MARCH[4]}"]
    one_day(store, MARCH[2], close=10.9, tickers=("A",))
    assert names(store) == [f"{MARCH[0]}_{MARCH[4]}"]  # rewritten in place, no second file
    bars = read_bars(store, with_date=True).collect()
    assert bars.height == 9
    assert bars.filter(pl.col("date") == MARCH[2])["close"].to_list() == [10.9]
    assert bars.filter(pl.col("date") != MARCH[2])["close"].unique().to_list() == [10.0]


def test_files_left_by_a_crash_after_compaction_are_skipped_then_removed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for day in MARCH[:3]:
        one_day(store, day)
    folder = store.partition_path("day", MARCH[0]).parent
    leftovers = {p.name: p.read_bytes() for p in folder.iterdir()}
    store.compact("day", 2024, 3)
    # As if the writer died before deleting what it folded in: put them back.
    for name, data in leftovers.items():
        (folder / name).write_bytes(data)
    assert names(store) == [f"{MARCH[0]}_{MARCH[2]}"]
    assert read_bars(store).collect().height == 6
    with store.lock():  # superseded a moment ago: a reader may still have them open
        pass
    assert sorted(p.name for p in folder.iterdir() if p.name in leftovers) == sorted(leftovers)
    compacted = store.partitions("day")[0]
    os.utime(compacted, (0, 0))
    with store.lock():
        pass
    assert sorted(p.name for p in folder.iterdir()) == [compacted.name]
    assert read_bars(store).collect().height == 6


def test_the_earlier_month_file_layout_is_read_and_replaced(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rows = [bar(t, d) for d in MARCH[:3] for t in ("A", "B")]
    legacy = tmp_path / "day" / "2024" / "2024-03.parquet"
    legacy.parent.mkdir(parents=True)
    parse_csv(csv_bytes(rows)).kept.write_parquet(legacy)
    assert store.partitions("day") == [legacy]
    assert store.dates("day") == MARCH[:3]
    assert store.has_date("day", MARCH[1]) and not store.has_date("day", MARCH[3])
    one_day(store, MARCH[3], close=10.9)  # inside the old file's span (the whole month)
    assert not legacy.exists()
    assert names(store) == ["2024-03-01_2024-03-31"]
    assert store.dates("day") == MARCH[:4]
    assert read_bars(store).collect().height == 8


def test_deleting_a_session_of_a_compacted_file_keeps_its_span(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rows = [bar("A", d) for d in MARCH[:3]]
    store.replace_dates("day", parse_csv(csv_bytes(rows)).kept)
    store.delete_dates("day", [MARCH[0]])
    assert names(store) == [f"{MARCH[0]}_{MARCH[2]}"]
    assert store.dates("day") == MARCH[1:3]
    assert not store.has_date("day", MARCH[0])


@pytest.mark.parametrize(("name", "span"), [
    ("2024-03-05.parquet", (date(2024, 3, 5), date(2024, 3, 5))),
    ("2024-03-01_2024-03-28.parquet", (date(2024, 3, 1), date(2024, 3, 28))),
    ("2024-02.parquet", (date(2024, 2, 1), date(2024, 2, 29))),
    ("2024-03-28_2024-03-01.parquet", None),
    (".2024-03-05.parquet.1.ab.tmp", None),
    ("2024-13-01.parquet", None),
    ("notes.parquet", None),
])
def test_spans_come_from_file_names(name: str, span: tuple[date, date] | None) -> None:
    assert span_of(Path(name)) == span


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2]])
def test_compacted_files_are_sorted_by_ticker_then_time(tmp_path: Path, order: list[int]) -> None:
    store = Store(tmp_path)
    one_day(store, MARCH[4], tickers=("B", "A", "C"))  # already in the month
    batch = [parse_csv(csv_bytes([bar(t, MARCH[i], h=30.0, c=10.0 + i) for t in ("C", "A", "B")]),
                       file_date=MARCH[i]).kept for i in order]
    store.replace_dates("day", pl.concat(batch))  # files of a backlog, in any order
    (path,) = store.partitions("day")
    frame = pl.read_parquet(path)
    assert frame.select("ticker", "ts").equals(frame.sort("ticker", "ts").select("ticker", "ts"))
    one_day(store, MARCH[2], close=20.0, tickers=("A", "B"))  # a session in the middle, again
    (path,) = store.partitions("day")
    frame = pl.read_parquet(path)
    assert frame.select("ticker", "ts").equals(frame.sort("ticker", "ts").select("ticker", "ts"))
    assert frame.filter(pl.col("ticker") == "A")["close"].to_list() == [10.0, 11.0, 20.0, 13.0,
                                                                         10.5]
    assert frame.filter(pl.col("ticker") == "C")["date"].to_list() == [
        MARCH[0], MARCH[1], MARCH[3], MARCH[4]]


@settings(max_examples=200, deadline=None)
@given(lo=st.dates(date(1990, 1, 1), date(2100, 12, 31)), days=st.integers(0, 30))
def test_span_names_round_trip(lo: date, days: int) -> None:
    hi = lo + timedelta(days=days)
    assert span_of(Store(Path("/x"))._span_path("day", lo, hi)) == (lo, hi)


@given(name=st.text(max_size=40))
def test_span_of_never_raises(name: str) -> None:
    span = span_of(Path(f"{name}.parquet"))
    assert span is None or span[0] <= span[1]
