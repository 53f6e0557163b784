"""What every command gets: settings, the database, output preferences; all built lazily."""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings, load_settings


class AppContext:
    """Carried in ``click.Context.obj``; nothing touches disk or network until asked."""

    def __init__(
        self,
        *,
        overrides: dict[str, Any] | None = None,
        config_file: Path | None = None,
        quiet: bool = False,
    ) -> None:
        self._overrides = overrides or {}
        self._config_file = config_file
        self.quiet = quiet
        self._engine: Engine | None = None

    @cached_property
    def settings(self) -> Settings:
        """Validated settings from every layer (raises ConfigError with the key)."""
        return load_settings(self._overrides, config_file=self._config_file)

    @property
    def engine(self) -> Engine:
        """The database engine, created on first use."""
        if self._engine is None:
            from falcon.db.engine import engine_for

            self._engine = engine_for(self.settings)
        return self._engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """A session factory over :attr:`engine`."""
        from falcon.db.engine import session_factory

        return session_factory(self.engine)

    def ready_engine(self) -> Engine:
        """The engine, after checking it is reachable and migrated (one clear error if not)."""
        from falcon.db.engine import check_reachable
        from falcon.db.migrate import current_revision, head_revision
        from falcon.errors import DatabaseError

        engine = self.engine
        check_reachable(engine)
        current = current_revision(engine)
        if current != head_revision(engine):
            if self.settings.is_sqlite:
                # Single node: the database is ours alone, bring it up to date quietly.
                from falcon.db.migrate import upgrade

                upgrade(engine)
            else:
                raise DatabaseError(
                    f"database is at revision {current or 'none'}, this Falcon needs "
                    f"{head_revision(engine)}: run `falcon db upgrade`"
                )
        return engine

    def export_to_environment(self) -> None:
        """Put ``--home``/``--database-url``/``--config`` into this process's environment.

        Job handlers run in the worker's process and load settings themselves; without this a
        worker started with ``falcon --home X worker run`` would hand its jobs the default home.
        The environment of our own process is not argv: a password in the URL stays private.
        """
        import os

        s = self.settings
        os.environ["FALCON_HOME"] = str(s.home)
        if s.database_url:
            os.environ["FALCON_DATABASE_URL"] = s.database_url
        if s.source_file is not None:
            os.environ["FALCON_CONFIG"] = str(s.source_file)

    @property
    def show_progress(self) -> bool:
        """Progress bars only for a person at a terminal."""
        return not self.quiet and sys.stderr.isatty()

    def close(self) -> None:
        """Release the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()


def app(ctx: click.Context | None = None) -> AppContext:
    """The AppContext of the running command."""
    ctx = ctx or click.get_current_context()
    obj = ctx.find_object(AppContext)
    if obj is None:  # invoked directly (tests of a single command)
        obj = ctx.ensure_object(AppContext)
    return obj
