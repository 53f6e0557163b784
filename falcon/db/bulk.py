"""Many rows into one table with one driver call: the hot paths' inserts and updates.

SQLAlchemy Core prepares every row of an ``executemany`` in Python (parameter dictionaries,
type processing, "insertmanyvalues" batches): for the paper trader's batches of a few hundred
small rows that preparation cost more than SQLite's own work. Here the statement text and each
column's bind processor are worked out once per (dialect, table, columns); a row then costs one
tuple, and the rows go to the driver's ``executemany`` in one call (SQLite's loops in C).

The same column defaults and type conversions as Core apply (Python-side ``default=`` for
missing columns, ``onupdate=`` on updates, every type's bind processor), so the rows stored are
the rows Core would store; tests/db/test_bulk.py checks that, column by column.

PostgreSQL gets the same rows by ``COPY ... FROM STDIN`` (:func:`insert_rows`), or, when the
new ids are wanted, by one ``INSERT ... SELECT FROM unnest(arrays) RETURNING``
(:func:`insert_returning`); updates there go through Core, whose statement text is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Table, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from falcon.db.types import UTCDateTime

__all__ = ["insert_returning", "insert_rows", "update_rows"]

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]  # row keys, in the statement's parameter order
    processors: tuple[_Processor, ...]
    defaults: tuple[tuple[int, Callable[[], Any]], ...]  # (position, value maker) of defaults


_PLANS: dict[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], _Plan] = {}


def _processor(column: Column[Any], dialect: Dialect) -> _Processor:
    if isinstance(column.type, UTCDateTime) and dialect.name == "sqlite":
        return _sqlite_utc
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_utc(value: datetime) -> str:
    """UTCDateTime's value as SQLAlchemy's SQLite DATETIME stores it (naive UTC text with
    microseconds), without its two conversions per value."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: Falcon stores only aware UTC times")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _maker(default: Any) -> Callable[[], Any] | None:
    """A zero-argument function giving the column default's value (None: no Python default)."""
    if default is None or not (default.is_scalar or default.is_callable):
        return None
    if default.is_scalar:
        value = default.arg
        return lambda: value
    fn = default.arg
    return lambda: fn(None)  # SQLAlchemy wraps zero-argument defaults to take a context


def _insert_plan(dialect: Dialect, table: Table, keys: tuple[str, ...],
                 raw: tuple[str, ...]) -> _Plan:
    cache_key = (dialect.name, "insert", table.name, keys, raw)
    plan = _PLANS.get(cache_key)
    if plan is not None:
        return plan
    columns = [table.c[k] for k in keys]
    defaults = []
    for column in table.c:
        if column.key in keys or column.primary_key:
            continue
        make = _maker(column.default)
        if make is not None:
            defaults.append((len(columns), make))
            columns.append(column)
    names = ", ".join(dialect.identifier_preparer.format_column(c) for c in columns)
    target = dialect.identifier_preparer.format_table(table)
    # Only our own tables' and columns' names are spliced in; every value is a parameter.
    if dialect.name == "postgresql":
        sql = f"COPY {target} ({names}) FROM STDIN"
    else:
        sql = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608
    processors = tuple(None if c.key in raw else _processor(c, dialect) for c in columns)
    plan = _PLANS[cache_key] = _Plan(sql, keys, processors, tuple(defaults))
    return plan


def _tuples(plan: _Plan, rows: Sequence[dict[str, Any]], after: Sequence[str] = (),
            constants: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Each row's parameters: its values of ``plan.keys``, the defaults, its values of
    ``after``, then ``constants`` (the order of the statement's placeholders).

    Built column by column (``map`` and ``zip`` loop in C): a batch has a few hundred rows of a
    dozen columns, and a Python step per value was most of the cost.
    """
    n = len(rows)
    columns: list[list[Any]] = [[row[k] for row in rows] for k in plan.keys]
    columns += [[make() for _ in range(n)] for _, make in plan.defaults]
    columns += [[row[k] for row in rows] for k in after]
    columns += [[v] * n for v in constants]
    for i, process in enumerate(plan.processors):
        if process is not None:
            columns[i] = [None if v is None else process(v) for v in columns[i]]
    return list(zip(*columns, strict=True))


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], *,
                raw: tuple[str, ...] = ()) -> None:
    """Insert ``rows`` (every row with the same keys) into ``table`` in the session's transaction.

    SQLite: one ``executemany``. PostgreSQL: one ``COPY ... FROM STDIN`` (a multi-row INSERT's
    text changes with its row count, so psycopg parsed every one anew; COPY streams the rows
    through one fixed statement). ``raw`` names columns whose values are passed as given (e.g.
    JSON that is text already). No ids come back: read them by a unique key when needed.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        _copy(session, table, rows, raw)
        return
    plan = _insert_plan(dialect, table, tuple(rows[0]), raw)
    session.connection().exec_driver_sql(plan.sql, _tuples(plan, rows))


def insert_returning(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                     key: str) -> dict[Any, int]:
    """Insert ``rows`` as :func:`insert_rows` does; ``{row[key]: new id}`` (``key`` unique).

    PostgreSQL: one ``INSERT ... SELECT * FROM unnest(one array per column) RETURNING``, whose
    text depends only on the columns (prepared once by psycopg), and one round trip. Read back
    by the key instead, the ids cost a second statement, planned on the table's statistics:
    until autovacuum analyzed a table that grew fast (a replay), that was a scan of all of it.
    SQLite: one ``executemany``, then the ids by the keys (its driver has no executemany with
    ``RETURNING``).
    """
    if not rows:
        return {}
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        insert_rows(session, table, rows)
        if _rowid_key(table, dialect) and "id" not in rows[0]:
            # An INTEGER PRIMARY KEY is SQLite's rowid: each new row gets the largest rowid + 1,
            # so the rows of one executemany (under the caller's write lock) got consecutive
            # ids, the last of which the connection reports; no read back by the keys.
            last = session.connection().exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
            first = int(last) - len(rows) + 1
            return {row[key]: first + i for i, row in enumerate(rows)}
        column = table.c[key]
        wanted = [row[key] for row in rows]
        found = session.execute(select(column, table.c.id).where(column.in_(wanted)))
        return dict(found.tuples().all())
    plan = _insert_plan(dialect, table, tuple(rows[0]), ())
    cache_key = (dialect.name, "returning", table.name, plan.keys, (key,))
    sql = _RETURNING.get(cache_key)
    if sql is None:
        fmt = dialect.identifier_preparer.format_column
        columns = [table.c[k] for k in plan.keys]
        columns += [c for c in table.c if c.key not in plan.keys and not c.primary_key
                    and _maker(c.default) is not None]
        arrays = ", ".join(f"%s::{c.type.compile(dialect=dialect)}[]" for c in columns)
        # Only our own tables' and columns' names are spliced in; every value is a parameter.
        sql = _RETURNING[cache_key] = (
            f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "  # noqa: S608
            f"({', '.join(fmt(c) for c in columns)}) SELECT * FROM unnest({arrays}) "
            f"RETURNING {fmt(table.c[key])}, {fmt(table.c.id)}")
    params = _tuples(plan, rows)
    arrays_ = [list(col) for col in zip(*params, strict=True)]
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(sql, arrays_)
        return {k: int(i) for k, i in cursor.fetchall()}


def _rowid_key(table: Table, dialect: Dialect) -> bool:
    """True when ``table``'s primary key is its single ``id INTEGER`` column, which SQLite
    makes its rowid (no AUTOINCREMENT: a new row gets the largest rowid + 1)."""
    pk = list(table.primary_key.columns)
    return (len(pk) == 1 and pk[0].key == "id"
            and pk[0].type.compile(dialect=dialect) == "INTEGER"
            and not table.kwargs.get("sqlite_autoincrement", False))


_RETURNING: dict[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], str] = {}


def _copy(session: Session, table: Table, rows: Sequence[dict[str, Any]],
          raw: tuple[str, ...]) -> None:
    dialect = session.get_bind().dialect
    plan = _insert_plan(dialect, table, tuple(rows[0]), raw)
    params = _tuples(plan, rows)
    # The psycopg connection under the session's: the COPY runs in the same transaction.
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(plan.sql) as copy:  # type: ignore[union-attr]
        for row in params:
            copy.write_row(row)


def update_rows(session: Session, table: Table, key: str, rows: Sequence[dict[str, Any]], *,
                where: dict[str, Any] | None = None) -> None:
    """``UPDATE table SET <the rows' other keys> WHERE key = row[key]`` for every row.

    Every row has the same keys; ``where`` adds fixed conditions (e.g. the account). Columns with
    ``onupdate=`` (``updated_at``) get it, as Core would give them.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    keys = tuple(k for k in rows[0] if k != key)
    fixed = tuple(sorted((where or {}).items()))
    if dialect.name != "sqlite":
        from sqlalchemy import bindparam

        stmt = update(table).where(table.c[key] == bindparam("b_key"),
                                   *(table.c[c] == v for c, v in fixed))
        stmt = stmt.values({k: bindparam(k) for k in keys})
        session.execute(stmt, [{"b_key": r[key], **{k: r[k] for k in keys}} for r in rows])
        return
    cache_key = (dialect.name, "update", table.name, (key, *keys), tuple(c for c, _ in fixed))
    plan = _PLANS.get(cache_key)
    if plan is None:
        fmt = dialect.identifier_preparer.format_column
        sets = [table.c[k] for k in keys]
        defaults = []
        for column in table.c:
            if column.key in keys or column.key == key:
                continue
            make = _maker(column.onupdate)
            if make is not None:
                defaults.append((len(sets), make))
                sets.append(column)
        conds = [table.c[key], *(table.c[c] for c, _ in fixed)]
        sql = (f"UPDATE {dialect.identifier_preparer.format_table(table)} SET "  # noqa: S608
               + ", ".join(f"{fmt(c)} = ?" for c in sets)
               + " WHERE " + " AND ".join(f"{fmt(c)} = ?" for c in conds))
        columns = [*sets, *conds]
        plan = _PLANS[cache_key] = _Plan(
            sql, keys, tuple(_processor(c, dialect) for c in columns), tuple(defaults))
    params = _tuples(plan, rows, (key,), [v for _, v in fixed])
    session.connection().exec_driver_sql(plan.sql, params)
