"""Extensions: created here at import (doing nothing), bound to an app in ``create_app``.

``db.session`` is the request's SQLAlchemy session; views commit what they change and the session
is closed (rolling back anything uncommitted) when the app context ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import session_factory
from falcon.web.metrics import Metrics
from falcon.web.security import Guard

_KEY = "falcon.db"


@dataclass(frozen=True)
class _DbState:
    engine: Engine
    sessions: sessionmaker[Session]


class Database:
    """The app's engine and a session per request."""

    def init_app(self, app: Flask, engine: Engine) -> None:
        """Bind ``engine`` to ``app``."""
        app.extensions[_KEY] = _DbState(engine, session_factory(engine))
        app.teardown_appcontext(self._close)

    @staticmethod
    def sessions_for(app: Flask) -> sessionmaker[Session]:
        """``app``'s session factory, for hooks set up before any request."""
        state: _DbState = app.extensions[_KEY]
        return state.sessions

    @staticmethod
    def _state() -> _DbState:
        state: _DbState = current_app.extensions[_KEY]
        return state

    @property
    def engine(self) -> Engine:
        """The current app's engine."""
        return self._state().engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        """A session factory for work outside the request (streams, metrics)."""
        return self._state().sessions

    @property
    def session(self) -> Session:
        """The request's session, opened on first use."""
        if "db_session" not in g:
            g.db_session = self.sessions()
        session: Session = g.db_session
        return session

    @staticmethod
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
guard = Guard()
metrics = Metrics()
