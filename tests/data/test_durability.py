"""Durability of the store: the ``data.fsync`` setting, and re-imports that repair damaged files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings, load_settings
from falcon.data.importer import import_files
from falcon.data.reader import read_bars
from falcon.data.store import Store, parquet_intact

from .helpers import bar, day_file, minute_file, week

D1, D2, D3 = week(date(2024, 2, 5), 3)


def test_fsync_is_off_by_default_and_set_from_file_or_env(tmp_path: Path) -> None:
    assert load_settings(environ={}).data.fsync is False
    cfg = tmp_path / "falcon.toml"
    cfg.write_text("[data]\nfsync = true\n")
    assert load_settings(environ={}, config_file=cfg).data.fsync is True
    assert load_settings(environ={"FALCON_DATA__FSYNC": "yes"}).data.fsync is True
    assert load_settings(environ={"FALCON_DATA__FSYNC": "0"}, config_file=cfg).data.fsync is False
    store = Store.of(load_settings({"data.fsync": True}, environ={}))
    assert store.fsync is True


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every os.fsync call, as "file" or "dir" (SQLite syncs in C, not through os.fsync)."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize("enabled", [False, True])
def test_fsync_only_when_the_setting_says_so(
    tmp_path: Path, db_url: str, dsessions: sessionmaker[Session], fsyncs: list[str],
    enabled: bool,
) -> None:
    settings = load_settings({"database_url": db_url, "data.fsync": enabled})
    good = day_file(tmp_path, D1, [bar("A", D1), bar("B", D1)])
    minute = minute_file(tmp_path, D1, [bar("A", D1, minute=0), bar("A", D1, minute=1)])
    report = import_files([good, minute], store=settings, sessions=dsessions)
    assert [f.status for f in report.files] == ["imported", "imported"]
    if enabled:
        # Each of the two Parquet files: the temporary file before the rename, the folder after.
        assert sorted(fsyncs) == ["dir", "dir", "file", "file"]
    else:
        assert fsyncs == []
    assert read_bars(settings, "day").collect().height == 2


def _truncate(path: Path) -> None:
    path.write_bytes(b"")


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _remove(path: Path) -> None:
    path.unlink()


def _zero(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


@pytest.mark.parametrize("damage", [_truncate, _tear, _remove, _zero])
def test_reimport_repairs_a_damaged_session_file(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store,
    damage: Callable[[Path], None],
) -> None:
    f = day_file(tmp_path, D1, [bar("MSFT", D1), bar("AAPL", D1, v=1.5)])
    assert import_files([f], store=dsettings, sessions=dsessions).files[0].status == "imported"
    part = store.partition_path("day", D1)
    assert parquet_intact(part)
    damage(part)  # what a power loss without data.fsync can leave behind
    assert not parquet_intact(part)
    assert store.readable_dates("day", [D1]) == set()
    again = import_files([f], store=dsettings, sessions=dsessions)
    assert again.files[0].status == "imported"  # not skipped as unchanged
    bars = read_bars(dsettings, "day").collect()
    assert bars["ticker"].to_list() == ["AAPL", "MSFT"]
    assert bars["volume"].to_list() == [1.5, 1000.0]
    # Whole again: the same file is now unchanged.
    assert import_files([f], store=dsettings, sessions=dsessions).files[0].status == "unchanged"


def test_reimport_repairs_a_damaged_compacted_file(
    tmp_path: Path, dsettings: Settings, dsessions: sessionmaker[Session], store: Store
) -> None:
    files = [day_file(tmp_path, d, [bar("A", d, c=10.0 + i / 10), bar("B", d)])
             for i, d in enumerate((D1, D2, D3))]
    import_files(files, store=dsettings, sessions=dsessions)  # one call: one compacted file
    (_, path), = store.spans("day")
    _truncate(path)
    assert store.dates("day") == []  # a damaged file shows no dates (and does not raise)
    # Re-importing one session rewrites the month around it; the others follow when re-imported.
    assert import_files([files[1]], store=dsettings,
                        sessions=dsessions).files[0].status == "imported"
    assert store.dates("day") == [D2]
    report = import_files(files, store=dsettings, sessions=dsessions)
    assert [f.status for f in report.files] == ["imported", "unchanged", "imported"]
    bars = read_bars(dsettings, "day").collect().sort("ts", "ticker")
    assert bars.height == 6
    assert bars.filter(pl.col("ticker") == "A")["close"].to_list() == [10.0, 10.1, 10.2]
