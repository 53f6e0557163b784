"""Alembic environment: runs on the engine Falcon hands it, or on ``falcon`` settings."""

from __future__ import annotations

from alembic import context

from falcon.db.models import Base

config = context.config
target_metadata = Base.metadata


def _engine():  # type: ignore[no-untyped-def]
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` on the command line: use Falcon's settings
        from falcon.config import load_settings
        from falcon.db.engine import engine_for

        engine = engine_for(load_settings())
    return engine


def run_migrations_online() -> None:
    """Migrate over a live connection; batch mode so ALTERs work on SQLite too."""
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
