"""The one reference-CSV loader (``falcon reference load``): parsing, rejection, upserts."""

from __future__ import annotations

import csv
import io
import string
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.data.reference import load_csv, read_csv
from falcon.data.store import Store
from falcon.db.models import Split, Ticker
from falcon.errors import ValidationError

_symbols = st.text(string.ascii_uppercase + ".", min_size=1, max_size=8)
_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
_caps = st.one_of(st.none(), st.floats(min_value=0, max_value=1e13, allow_nan=False))


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_symbols, _names, _caps), min_size=1, max_size=8))
def test_tickers_round_trip(tmp_path_factory: pytest.TempPathFactory,
                            rows: list[tuple[str, str, float | None]]) -> None:
    path = _write(tmp_path_factory.mktemp("csv") / "t.csv", ["symbol", "name", "market_cap"],
                  [[t.lower(), n, c] for t, n, c in rows])
    table = read_csv(path)
    assert table.kind == "tickers" and table.fields == ("name", "market_cap")
    assert [r["ticker"] for r in table.rows] == [t for t, _, _ in rows]
    assert [r["market_cap"] for r in table.rows] == [c for _, _, c in rows]
    # Names are kept as one line of text (whitespace runs folded), never longer than 200.
    assert [r["name"] for r in table.rows] == [(" ".join(n.split()) or None) for _, n, _ in rows]


@settings(max_examples=40, deadline=None)
@given(bad=st.sampled_from(["lots", "-1", "nan", "inf", "1e400"]), line=st.integers(0, 4))
def test_one_bad_value_rejects_the_file_naming_its_line(
        tmp_path_factory: pytest.TempPathFactory, bad: str, line: int) -> None:
    rows: list[list[object]] = [[f"T{i}", "1000"] for i in range(5)]
    rows[line][1] = bad
    path = _write(tmp_path_factory.mktemp("csv") / "t.csv", ["ticker", "market_cap"], rows)
    with pytest.raises(ValidationError, match=rf"line {line + 2}: market_cap"):
        read_csv(path)


def test_load_upserts_only_the_columns_present_and_mirrors_splits(
    tmp_path: Path, dsessions: sessionmaker[Session], store: Store
) -> None:
    tickers = _write(tmp_path / "t.csv", ["ticker", "name", "type", "sector", "market_cap"],
                     [["AAPL", "Apple Inc.", "CS", "Technology", "3e12"]])
    assert load_csv(dsessions, tickers) == ("tickers", 1)
    caps = _write(tmp_path / "caps.csv", ["ticker", "market_cap", "active"],
                  [["aapl", "", "false"]])
    assert load_csv(dsessions, caps) == ("tickers", 1)  # an empty cell leaves what is cached
    splits = _write(tmp_path / "s.csv", ["ticker", "execution_date", "split_from", "split_to"],
                    [["AAPL", "2020-08-31", "1", "4"]])
    assert load_csv(dsessions, splits, store=store) == ("splits", 1)
    assert load_csv(dsessions, splits, store=store) == ("splits", 1)  # idempotent
    with dsessions() as s:
        row = s.get(Ticker, "AAPL")
        assert row is not None
        assert (row.name, row.sector, row.market_cap, row.active) == (
            "Apple Inc.", "Technology", 3e12, False)
        assert [(x.execution_date, x.split_to) for x in s.scalars(select(Split))] == [
            (date(2020, 8, 31), 4.0)]
    assert store.splits_path.exists()  # the reader's mirror


def test_a_bad_splits_file_loads_nothing(
    tmp_path: Path, dsessions: sessionmaker[Session]
) -> None:
    bad = _write(tmp_path / "s.csv", ["ticker", "execution_date", "split_from", "split_to"],
                 [["AAPL", "2020-08-31", "1", "4"], ["TSLA", "31/08/2020", "1", "5"]])
    with pytest.raises(ValidationError) as info:
        load_csv(dsessions, bad)
    assert info.value.problems == [f"{bad}: line 3: execution_date: '31/08/2020' is not YYYY-MM-DD"]
    with dsessions() as s:
        assert list(s.scalars(select(Split))) == []
