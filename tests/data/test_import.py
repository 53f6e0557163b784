"""Importing flat files into the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.data.importer import import_files
from falcon.data.reader import read_bars
from falcon.data.store import Store
from falcon.db.models import DataImport
from falcon.errors import ImportRejected

from .helpers import bar, day_file, minute_file, week, write_flat

D1, D2, D3 = week(date(2024, 2, 5), 3)


def records(sessions: sessionmaker[Session]) -> list[DataImport]:
    with sessions() as s:
        return list(s.scalars(select(DataImport).order_by(DataImport.id)))


def test_import_then_same_file_is_unchanged(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    f = day_file(tmp_path, D1, [bar("MSFT", D1), bar("AAPL", D1, v=1.5)])
    report = import_files([f], store=dsettings, sessions=dsessions)
    assert [r.status for r in report.files] == ["imported"]
    part = store.partition_path("day", D1)
    assert part == store.root / "day" / "2024" / "02" / "2024-02-05.parquet"
    before = part.stat().st_mtime_ns
    again = import_files([f], store=dsettings, sessions=dsessions)
    assert again.files[0].status == "unchanged"
    assert part.stat().st_mtime_ns == before  # nothing rewritten
    rows = records(dsessions)
    assert [(r.status, r.trade_date, r.rows_kept) for r in rows] == [
        ("imported", D1, 2), ("unchanged", D1, 2)]
    assert rows[0].sha256 == rows[1].sha256 and len(rows[0].sha256) == 64
    bars = read_bars(dsettings, "day").collect()
    assert bars["ticker"].to_list() == ["AAPL", "MSFT"]
    assert bars["volume"].to_list() == [1.5, 1000.0]


def test_changed_file_replaces_its_date_only(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session]
) -> None:
    import_files([day_file(tmp_path / "a", D1, [bar("A", D1), bar("B", D1)]),
                  day_file(tmp_path / "a", D2, [bar("A", D2)])], store=dsettings,
                 sessions=dsessions)
    changed = day_file(tmp_path / "b", D1, [bar("A", D1, c=10.9)])
    report = import_files([changed], store=dsettings, sessions=dsessions)
    assert report.files[0].status == "imported"
    bars = read_bars(dsettings, "day").collect()
    assert bars.select("ticker", "close").rows() == [("A", 10.9), ("A", 10.5)]
    # Importing the first version again is a change again (it is not what the store holds).
    first = tmp_path / "a" / "day_aggs_v1" / "2024" / "02" / f"{D1}.csv.gz"
    assert import_files([first], store=dsettings, sessions=dsessions).files[0].status == "imported"
    assert read_bars(dsettings, "day", start=D1, end=D1).collect().height == 2


def test_bad_rows_are_quarantined_and_good_rows_kept(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    f = day_file(tmp_path, D1, [bar("A", D1), bar("B", D1, h=8.0), bar("C", D1, o=-1.0)])
    report = import_files([f], store=dsettings, sessions=dsessions)
    result = report.files[0]
    assert (result.status, result.rows_kept, result.rows_rejected) == ("partial", 1, 2)
    assert "bad_price 1" in result.line() and "high_below_low 1" in result.line()
    rejects = pl.read_csv(store.rejects_path("day", str(D1)))
    assert rejects.columns[-1] == "reason"
    assert sorted(rejects["reason"].to_list()) == ["bad_price", "high_below_low"]
    assert read_bars(dsettings, "day").collect()["ticker"].to_list() == ["A"]
    row = records(dsessions)[0]
    assert (row.status, row.rows_total, row.rows_kept, row.rows_rejected) == ("partial", 3, 1, 2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "bad gzip"),
        (lambda p: write_flat(p, [bar("A", D1)], header="ticker,open,close"), "wrong header"),
        (lambda p: write_flat(p, [bar("A", D1)], header=""), "header"),
        (lambda p: write_flat(p, [bar("A", D1, o=-1), bar("B", D1, o=0)]), "no valid rows"),
    ],
)
def test_rejected_files_leave_the_store_alone_and_fail_at_the_end(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store,
    make: object, message: str,
) -> None:
    bad = tmp_path / "day_aggs_v1" / f"{D1}.csv.gz"
    bad.parent.mkdir(parents=True)
    make(bad)  # type: ignore[operator]
    good = day_file(tmp_path, D2, [bar("A", D2)])
    with pytest.raises(ImportRejected, match="1 of 2 files rejected") as info:
        import_files([bad, good], store=dsettings, sessions=dsessions)
    report = info.value.report  # type: ignore[attr-defined]
    assert report.files[0].status == "rejected" and message in report.files[0].message
    assert report.files[1].status == "imported"  # processing went on after the bad file
    assert store.dates("day") == [D2]
    assert [r.status for r in records(dsessions)] == ["rejected", "imported"]


def test_kind_comes_from_the_path_or_the_option(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    plain = write_flat(tmp_path / f"{D1}.csv", [bar("A", D1, minute=0), bar("A", D1, minute=1)],
                       gz=False)
    with pytest.raises(ImportRejected):
        import_files([plain], store=dsettings, sessions=dsessions)
    report = import_files([plain], store=dsettings, sessions=dsessions, kind="minute")
    assert report.files[0].status == "imported"
    assert store.partition_path("minute", D1).exists()
    assert read_bars(dsettings, "minute").collect().height == 2


def test_minute_files_get_one_partition_per_session(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    files = [minute_file(tmp_path, d, [bar("A", d, minute=m) for m in range(5)]) for d in (D1, D2)]
    import_files(files, store=dsettings, sessions=dsessions)
    assert [p.name for p in store.partitions("minute")] == [f"{D1}.parquet", f"{D2}.parquet"]
    assert store.partitions("minute", D2, D2) == [store.partition_path("minute", D2)]


def test_multi_date_file_is_split_by_date_and_recorded_per_date(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    f = write_flat(tmp_path / "day_aggs_v1" / "history.csv.gz",
                   [bar("A", d) for d in (D1, D2, D3)] + [bar("B", D2, o=0)])
    report = import_files([f], store=dsettings, sessions=dsessions)
    assert report.files[0].dates == [D1, D2, D3]
    assert store.dates("day") == [D1, D2, D3]
    rows = records(dsessions)
    assert [(r.trade_date, r.status, r.rows_rejected) for r in rows] == [
        (D1, "imported", 0), (D2, "partial", 1), (D3, "imported", 0)]
    assert import_files([f], store=dsettings, sessions=dsessions).files[0].status == "unchanged"


def test_a_crash_while_writing_leaves_no_partial_file(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import_files([day_file(tmp_path, D1, [bar("A", D1)])], store=dsettings, sessions=dsessions)
    part = store.partition_path("day", D1)
    original = part.read_bytes()

    def crash(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"PAR1 half a file")
        raise OSError("disk died")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk died"):
        import_files([day_file(tmp_path / "2", D2, [bar("B", D2)])], store=dsettings,
                     sessions=dsessions)
    assert part.read_bytes() == original
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no temp file left behind
    assert [r.trade_date for r in records(dsessions)] == [D1]  # nothing recorded for D2
    monkeypatch.undo()
    assert read_bars(dsettings, "day").collect()["ticker"].to_list() == ["A"]


def test_stale_temp_files_are_cleaned_and_never_read(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    stale = store.root / "day" / "2024" / ".2024-02.parquet.1.abc.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"junk")
    os.utime(stale, (0, 0))
    assert store.partitions("day") == []
    import_files([day_file(tmp_path, D1, [bar("A", D1)])], store=dsettings, sessions=dsessions)
    assert not stale.exists()
