"""Checks of the market data for ``falcon doctor`` and ``/healthz``.

Freshness is judged from the database, not from this machine's Parquet store: on a cluster the
compute node imports the flat files and records each in ``data_imports``, while the web node's
own store stays empty. Reading the newest imported session from the database makes every node
that shares it give the same answer. The store checks (present, coverage) describe this machine's
store, which is what ``falcon doctor`` on the compute node or a single node wants to know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from falcon.config import Settings
from falcon.errors import DataError

# An "unchanged" import re-confirmed bars the store already holds: they count as imported.
_IMPORTED = ("imported", "partial", "unchanged")
_KINDS = ("day", "minute")


@dataclass(frozen=True)
class KindFreshness:
    """The newest session imported for one kind of bars and how far behind the calendar it is."""

    kind: str
    last: date
    expected: date
    behind: int  # completed NYSE sessions after ``last``, up to ``expected``


def last_imported(engine: Engine) -> dict[str, date]:
    """The newest trade date successfully imported per kind (``day``, ``minute``) per the database.

    Kinds never imported are absent. Raises DataError when the database cannot be read (the
    message never carries the URL: it may hold a password).
    """
    from falcon.db.models import DataImport

    stmt = (
        select(DataImport.kind, func.max(DataImport.trade_date))
        .where(DataImport.kind.in_(_KINDS), DataImport.status.in_(_IMPORTED),
               DataImport.trade_date.is_not(None))
        .group_by(DataImport.kind)
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
    except SQLAlchemyError as exc:
        raise DataError(
            f"cannot read the data imports from the database ({type(exc).__name__})"
        ) from None
    return {kind: last for kind, last in rows if last is not None}


def freshness_of(engine: Engine) -> dict[str, KindFreshness]:
    """Per imported kind: the last session in the database against the NYSE calendar."""
    from falcon import calendar

    expected = calendar.last_completed_session()
    lo, _ = calendar.bounds()
    out: dict[str, KindFreshness] = {}
    for kind, last in last_imported(engine).items():
        behind = (len(calendar.trading_days(max(last, lo), expected)) - 1
                  if last < expected else 0)
        out[kind] = KindFreshness(kind, last, expected, behind)
    return out


def data_checks(settings: Settings, engine: Engine | None = None
                ) -> list[tuple[str, Callable[[], str]]]:
    """(name, check) pairs; a check returns a detail line or raises a FalconError.

    ``engine`` is the database the imports are recorded in (the caller's, so that no second
    connection pool is made); without it, one is made from ``settings`` for the check and disposed.
    """
    from falcon.data.store import Store

    store = Store.of(settings)

    def present() -> str:
        path = settings.market_data_dir
        return f"{path} ({'present' if path.exists() else 'empty: run `falcon data sample`'})"

    def coverage() -> str:
        from falcon.data.status import kind_status

        day = kind_status(store, "day")
        if day.sessions == 0:
            return ("no day bars in this node's store (a web node needs none; elsewhere run "
                    "`falcon data sample` or `falcon data sync`)")
        detail = f"day bars {day.first_date}..{day.last_date}, {day.tickers} tickers"
        if day.missing:
            shown = ", ".join(str(d) for d in day.missing[:3])
            raise DataError(
                f"{detail}: {len(day.missing)} session(s) missing ({shown}"
                f"{' ...' if len(day.missing) > 3 else ''}): run `falcon data sync`"
            )
        return f"{detail}, no session missing"

    def freshness() -> str:
        if engine is not None:
            kinds = freshness_of(engine)
        else:
            from falcon.db.engine import make_engine

            own = make_engine(settings.effective_database_url)
            try:
                kinds = freshness_of(own)
            finally:
                own.dispose()
        day = kinds.get("day")
        if day is None:
            return "no day bars imported yet: run `falcon data sample` or `falcon data sync`"
        others = "".join(f"; {k.kind} bars to {k.last} ({k.behind} behind)"
                         for k in kinds.values() if k.kind != "day")
        # Only day bars are judged: the screens need them, minute bars are optional.
        if day.behind < settings.data.stale_after_days:
            return f"last session {day.last} ({day.behind} behind {day.expected}){others}"
        if not settings.secrets.s3_access_key_id:
            # Sample-only install: old data is expected, there is nothing to sync from.
            return (f"last session {day.last}, {day.behind} sessions old "
                    f"(no S3 credentials: sample data){others}")
        raise DataError(
            f"last session {day.last} is {day.behind} sessions behind {day.expected} "
            f"(limit {settings.data.stale_after_days}): is `falcon data sync` running?"
        )

    return [("data store", present), ("data coverage", coverage), ("data freshness", freshness)]
