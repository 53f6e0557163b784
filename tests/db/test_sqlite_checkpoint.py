"""SQLite's WAL is checkpointed beside the writers, never inside their commits."""

from __future__ import annotations

import time
from pathlib import Path

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
