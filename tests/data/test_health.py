"""Data health: freshness comes from the database's data_imports, so every node agrees.

Two "nodes" share one database (SQLite and PostgreSQL): the compute node imports flat files into
its own store; the web node's store stays empty, and both must report the same freshness.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from falcon import calendar
from falcon.cli import main
from falcon.config import Settings, load_settings
from falcon.data.health import data_checks, freshness_of, last_imported
from falcon.data.importer import import_files
from falcon.db.engine import make_engine, session_factory
from falcon.errors import DataError

from .helpers import bar, day_file, minute_file


def _node(db_url: str, home: Path, *, s3: bool = False) -> Settings:
    env = {"FALCON_S3_ACCESS_KEY_ID": "key-id"} if s3 else {}
    return load_settings({"database_url": db_url, "home": str(home)}, environ=env)


def _check(settings: Settings, engine: Engine | None, name: str) -> str:
    return dict(data_checks(settings, engine))[name]()


def _sessions_back(n: int) -> date:
    """The NYSE session ``n`` sessions before the last completed one."""
    last = calendar.last_completed_session()
    lo, _ = calendar.bounds()
    days = calendar.trading_days(lo, last)
    return days[-1 - n]


def _import(compute: Settings, engine: Engine, tmp_path: Path, *days: date,
            minute: date | None = None) -> None:
    files = [day_file(tmp_path / "flat", d, [bar("AAA", d), bar("BBB", d)]) for d in days]
    if minute is not None:
        files.append(minute_file(tmp_path / "flat", minute, [bar("AAA", minute, minute=0)]))
    import_files(files, store=compute, sessions=session_factory(engine))


@pytest.fixture
def shared(db_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(db_url)
    yield db_url, engine
    engine.dispose()


def test_web_node_with_an_empty_store_sees_the_compute_nodes_fresh_data(
    shared: tuple[str, Engine], tmp_path: Path
) -> None:
    db_url, engine = shared
    compute = _node(db_url, tmp_path / "compute", s3=True)
    web = _node(db_url, tmp_path / "web", s3=True)
    recent = [_sessions_back(2), _sessions_back(1), _sessions_back(0)]
    _import(compute, engine, tmp_path, *recent, minute=recent[1])

    assert last_imported(engine) == {"day": recent[-1], "minute": recent[1]}
    fresh = freshness_of(engine)
    assert fresh["day"].behind == 0 and fresh["minute"].behind == 1

    web_detail = _check(web, engine, "data freshness")
    compute_detail = _check(compute, engine, "data freshness")
    assert web_detail == compute_detail
    assert web_detail.startswith(f"last session {recent[-1]} (0 behind")
    assert f"minute bars to {recent[1]} (1 behind)" in web_detail
    # the web node's own store is empty, and says so without failing
    assert "no day bars in this node's store" in _check(web, engine, "data coverage")
    assert not (web.market_data_dir / "day").exists()
    # without an engine the check makes its own from the settings, with the same answer
    assert _check(web, None, "data freshness") == web_detail


def test_stale_imports_fail_on_every_node(shared: tuple[str, Engine], tmp_path: Path) -> None:
    db_url, engine = shared
    compute = _node(db_url, tmp_path / "compute", s3=True)
    web = _node(db_url, tmp_path / "web", s3=True)
    old = _sessions_back(9)
    _import(compute, engine, tmp_path, old)
    for node in (compute, web):
        with pytest.raises(DataError, match=rf"last session {old} is 9 sessions behind"):
            _check(node, engine, "data freshness")
    # a sample-only install (no S3 credentials) expects old data
    sample_only = _node(db_url, tmp_path / "web")
    assert "no S3 credentials: sample data" in _check(sample_only, engine, "data freshness")


def test_a_local_store_without_import_records_is_not_fresh(
    shared: tuple[str, Engine], tmp_path: Path
) -> None:
    """Bars in this node's store that the database never recorded do not count: the database is
    the one source every node reads."""
    db_url, engine = shared
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    from falcon.db.migrate import upgrade

    upgrade(other)
    node = _node(db_url, tmp_path / "node", s3=True)
    _import(node, other, tmp_path, _sessions_back(0))  # recorded in another database
    other.dispose()
    assert (node.market_data_dir / "day").exists()
    assert last_imported(engine) == {}
    assert "no day bars imported yet" in _check(node, engine, "data freshness")


def test_rejected_and_unchanged_imports(shared: tuple[str, Engine], tmp_path: Path) -> None:
    db_url, engine = shared
    node = _node(db_url, tmp_path / "node", s3=True)
    good, bad = _sessions_back(1), _sessions_back(0)
    _import(node, engine, tmp_path, good)
    _import(node, engine, tmp_path, good)  # the same bytes again: "unchanged" still counts
    broken = day_file(tmp_path / "bad", bad, [bar("AAA", bad, h=1.0, low=2.0)])  # high < low
    import_files([broken], store=node, sessions=session_factory(engine), raise_on_reject=False)
    assert last_imported(engine) == {"day": good}


def test_unreadable_database_is_a_data_error_without_the_url(tmp_path: Path) -> None:
    engine = make_engine("postgresql://falcon:hunter2-secret@127.0.0.1:1/falcon")
    try:
        with pytest.raises(DataError, match="cannot read the data imports") as info:
            last_imported(engine)
        assert "hunter2" not in str(info.value)
    finally:
        engine.dispose()


def test_doctor_reports_the_databases_freshness(
    shared: tuple[str, Engine], tmp_path: Path
) -> None:
    db_url, engine = shared
    compute = _node(db_url, tmp_path / "compute", s3=True)
    last = _sessions_back(0)
    _import(compute, engine, tmp_path, last)
    # doctor on a "web node": its own home, an empty store, the same database
    result = CliRunner().invoke(
        main, ["--database-url", db_url, "doctor", "--json"],
        env={"FALCON_HOME": str(tmp_path / "web"), "FALCON_S3_ACCESS_KEY_ID": "key-id"},
    )
    assert result.exit_code == 0, result.output
    assert f"last session {last} (0 behind" in result.output
