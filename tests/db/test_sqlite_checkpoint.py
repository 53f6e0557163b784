"""SQLite's WAL is checkpointed beside the writers, never inside their commits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from falcon.db.engine import make_engine


def test_commits_do_not_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    # A folder name that must be quoted in a file: URI.
    db = tmp_path / "a b#c" / "falcon.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        conn.execute(text("CREATE TABLE t (x BLOB)"))
    # 200 commits of 20 kB: far past the 1,000 pages at which a commit would checkpoint itself.
    for _ in range(200):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (randomblob(20000))"))
    wal = db.with_name("falcon.db-wal")
    assert wal.stat().st_size > 4_000_000
    deadline = time.monotonic() + 30
    while db.stat().st_size < 4_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The rows reached the database file itself: the background checkpoint ran.
    assert db.stat().st_size >= 4_000_000
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 200
    engine.dispose()


def test_a_removed_database_is_not_recreated(tmp_path: Path) -> None:
    from falcon.db.engine import _Checkpointer

    gone = tmp_path / "gone.db"
    _Checkpointer.checkpoint(str(gone))
    assert not gone.exists()


def test_a_disposed_engines_database_is_not_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The checkpointer must not open a database after its engine is disposed: the caller may
    # be removing the file (a temporary directory's cleanup failed on the -wal and -shm files
    # the checkpointer's connection created meanwhile).
    from falcon.db.engine import _Checkpointer

    opened: list[str] = []
    real = _Checkpointer.checkpoint
    monkeypatch.setattr(_Checkpointer, "checkpoint",
                        staticmethod(lambda path: (opened.append(path), real(path))))
    db = tmp_path / "disposed.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()  # right after a commit: the database is marked for a checkpoint
    time.sleep(_Checkpointer.INTERVAL * 3)
    assert str(db) not in opened
    # A commit after the dispose (the engine is used again) marks it again.
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    deadline = time.monotonic() + 10
    while str(db) not in opened and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(db) in opened
    engine.dispose()
