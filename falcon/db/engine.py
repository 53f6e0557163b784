"""Engines and sessions for SQLite (single node) and PostgreSQL (cluster)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, configure_mappers, sessionmaker

from falcon.config import Settings
from falcon.errors import DatabaseError


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web process read while the trader writes; a busy timeout instead of
    # "database is locked" when two writers meet.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # No checkpoint inside a commit: the commit that crossed the WAL's 1,000 pages used to copy
    # them into the database and fsync it, a 10-50 ms stall in the trader's bar-to-commit path.
    # The process's checkpointer thread does it beside the writers instead (SQLite's advice
    # for latency-sensitive writers); see _Checkpointer.
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


class _Checkpointer:
    """One daemon thread per process that checkpoints the WAL of each SQLite database written.

    Commits mark their database; every :data:`INTERVAL` seconds the thread runs a PASSIVE
    checkpoint (it never blocks readers or writers) on its own connection to each marked one.
    The GIL is released while SQLite copies and syncs, so the writers go on meanwhile.
    """

    INTERVAL = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._gone: set[str] = set()  # disposed since marked: not to be opened again
        self._running = threading.Lock()  # held while a checkpoint runs
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, engine: Engine, path: str) -> None:
        """Checkpoint ``path`` after ``engine``'s commits (the last connection to close a
        database checkpoints it too, so a disposed engine leaves no WAL behind)."""

        def committed(_conn: Any) -> None:
            self.mark(path)

        def disposed(_engine: Engine) -> None:
            self.forget(path)

        event.listen(engine, "commit", committed)
        event.listen(engine, "engine_disposed", disposed)

    def mark(self, path: str) -> None:
        """``path`` has new WAL frames."""
        with self._lock:
            self._dirty.add(path)
            self._gone.discard(path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="falcon-wal-checkpoint",
                                                daemon=True)
                self._thread.start()

    def forget(self, path: str) -> None:
        """``path``'s engine was disposed: its database is not opened again (until a new
        commit marks it), and a checkpoint of it under way has finished when this returns. A
        caller that removes the file next (a test's temporary directory, an uninstall) does
        not race the checkpointer's connection and the -wal and -shm files it opens."""
        with self._lock:
            self._dirty.discard(path)
            self._gone.add(path)
        with self._running:
            pass

    def _run(self) -> None:
        while True:
            self._wake.wait(self.INTERVAL)
            with self._lock:
                paths, self._dirty = self._dirty, set()
            for path in paths:
                with self._running:
                    with self._lock:
                        if path in self._gone:
                            continue
                    self.checkpoint(path)

    @staticmethod
    def checkpoint(path: str) -> None:
        """A PASSIVE checkpoint of ``path`` (nothing when the file is gone)."""
        # mode=rw: never create a database that a test or an uninstall has just removed.
        with suppress(sqlite3.Error):
            conn = sqlite3.connect(f"{Path(path).as_uri()}?mode=rw", uri=True, timeout=0.1)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()


_CHECKPOINTER = _Checkpointer()
_PATHS: dict[str, str | None] = {}  # engine URL -> its SQLite file (None: not a SQLite file)


def note_commit(engine: Engine) -> None:
    """Tell the checkpointer that ``engine``'s database got a commit SQLAlchemy did not see.

    Commits through a session or connection are noticed by themselves; this is for code that
    commits on the driver's own connection (the alert outbox's kept connection). No-op on
    PostgreSQL.
    """
    url = str(engine.url)
    path = _PATHS.get(url, "")
    if path == "":
        parsed = engine.url
        path = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = str(Path(str(parsed.database)).resolve())
        _PATHS[url] = path
    if path is not None:
        _CHECKPOINTER.mark(path)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys, its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        if parsed.database and parsed.database != ":memory:":
            _CHECKPOINTER.watch(engine, str(Path(parsed.database).resolve()))
        return engine
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def engine_for(settings: Settings) -> Engine:
    """The engine the settings point at."""
    return make_engine(settings.effective_database_url)


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def check_reachable(engine: Engine) -> None:
    """Raise :class:`DatabaseError` (without the password) when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise DatabaseError(f"database {safe_url(str(engine.url))} unreachable: {reason}") from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker that keeps objects usable after commit.

    The ORM's mappers are configured here, at start-up, instead of lazily inside the first
    request, screen or trade that creates an object (about 40 ms on a small machine).
    """
    from falcon.db import models  # noqa: F401 - every mapper must be registered first

    configure_mappers()
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
