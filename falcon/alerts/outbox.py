"""The outbox: alerts and their deliveries as rows, so that no alert is lost across a restart.

:func:`queue_alerts` (:func:`queue_alert` for one) writes each
:class:`~falcon.db.models.AlertEvent` and one :class:`~falcon.db.models.AlertDelivery` per channel
in the caller's transaction, a few bulk statements for any number of alerts: either an alert and
all of its deliveries exist, or none do. After the commit, delivery workers in the same process
are woken (:func:`add_waiter`); others hear a NOTIFY (PostgreSQL) or see the commit (SQLite).
The alert engine queues through :class:`AlertWriter` instead: the rules' cooldown claim and the
same rows in a transaction of its own, committed before it returns, on a connection it keeps.

The hot statements (queueing, and on SQLite the worker's claim and ``sent``) are fixed SQL text
handed to the driver, not SQLAlchemy constructs compiled per call: on PostgreSQL the whole
write is one statement (one round trip), and on SQLite the write lock is held only as long as
the database needs it.

The dashboard channel is a row in the same database, so it is delivered right there (an ``Event``
of kind ``alert`` for the live pages) and its delivery row is born ``sent``; the other channels
start ``pending`` and wait for the delivery worker.

Life of a delivery::

    pending --claim (attempts+1, leased until now+lease)--> sending
       ^            |--ok--> sent
       |            |--error, attempts left--> pending (next_attempt_at = now + backoff)
       |            |--error, last attempt or permanent--> dead (last_error kept)
       +--lease expires (the worker died mid-send)--+

A claim is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL, so
workers skip each other's rows; SQLite ignores ``FOR UPDATE`` but runs the whole statement under its
single write lock, which is just as exclusive. Delivery is at least once: a worker killed after the
receiver got the message but before ``sent`` was written sends it again when the lease expires, with
the same event id (the idempotency hint every channel carries).

Times are the Python clock of whichever node writes them; a few seconds of skew between nodes only
shifts a retry by as much.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, event, func, select, update
from sqlalchemy.orm import Session

from falcon.db.engine import note_commit
from falcon.db.models import AlertDelivery, AlertEvent
from falcon.db.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "ALERTS_CHANNEL",
    "EVENTS_CHANNEL",
    "AlertWriter",
    "Claim",
    "Claimed",
    "Due",
    "NewAlert",
    "Written",
    "add_waiter",
    "claim_due",
    "due_channels",
    "mark_failed",
    "mark_sent",
    "queue_alert",
    "queue_alerts",
    "release",
    "remove_waiter",
    "write_lock",
]

#: NOTIFY channel the delivery worker LISTENs on (PostgreSQL): a new alert wakes it at once.
ALERTS_CHANNEL = "falcon_alerts"
#: NOTIFY channel of the live dashboard pages (the same one the screener signals). The outbox does
#: not signal it itself: the ``events_notify`` trigger does, for the ``events`` row of each
#: dashboard alert (payload ``alert``, the row's kind).
EVENTS_CHANNEL = "falcon_events"


def _is_pg(bind: Session | Engine) -> bool:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True)
class NewAlert:
    """One alert to queue with :func:`queue_alerts`."""

    rule_id: int | None
    channels: Sequence[str]
    message: str
    ticker: str | None = None
    latency_ms: float | None = None
    test: bool = False


def queue_alerts(session: Session, alerts: Sequence[NewAlert]) -> list[int]:
    """Insert alerts and their deliveries in ``session``'s transaction; their event ids in order.

    One statement on PostgreSQL whatever the number of alerts, a few on SQLite (see
    :class:`AlertWriter`), handed to the driver as they are rather than an ORM flush per alert:
    the alert engine queues a whole batch of bars' alerts at once and every statement holds
    SQLite's write lock. The caller commits; in-process delivery workers are woken right after
    that commit.
    """
    if not alerts:
        return []
    conn = session.connection()
    written = _statements(conn.engine).write(conn.connection.driver_connection, (), alerts,
                                             None)
    if written.remote:
        _wake_after_commit(session)
    return [i for i in written.ids if i is not None]


@dataclass(frozen=True)
class Claim:
    """A rule's cooldown to take while queueing its alerts (see :class:`AlertWriter`).

    The rule is taken only if it is enabled and last fired no later than ``cutoff``; its
    ``last_fired_at`` becomes ``stamp``.
    """

    rule_id: int
    cutoff: datetime
    stamp: datetime


@dataclass(frozen=True)
class Written:
    """What :meth:`AlertWriter.write` queued: an event id per alert (None: its rule was not
    claimed), the latency recorded on them, and whether any has a remote channel."""

    ids: list[int | None]
    latency_ms: float | None
    remote: bool


class _Statements:
    """The outbox's statements for one dialect, run on a DBAPI connection.

    Fixed SQL text (arrays on PostgreSQL, JSON on SQLite, never a list of placeholders), so the
    driver caches or prepares each statement once, and nothing is compiled per call: the
    ORM's and Core's per-execution overhead was most of an alert's queueing time.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.pg = dialect.name == "postgresql"
        proc = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        if proc is None:  # pragma: no cover - the type always converts
            raise TypeError("UTCDateTime has no bind processor")
        self.dt: Callable[[datetime], Any] = proc
        out = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
        if out is None:  # pragma: no cover - the type always converts
            raise TypeError("UTCDateTime has no result processor")
        self.dt_out: Callable[[Any], Any] = out

    def write(self, dbapi: Any, claims: Sequence[Claim], alerts: Sequence[NewAlert],
              arrived: datetime | None) -> Written:
        """Claim ``claims`` and queue the alerts of the claimed rules (all, without claims).

        ``arrived`` given, each alert's latency is from it to the rows' ``created_at``.
        """
        now = utcnow()
        latency = None if arrived is None else (now - arrived).total_seconds() * 1000.0
        chans = [list(dict.fromkeys(a.channels)) for a in alerts]
        if self.pg:
            ids = self._write_pg(dbapi, claims, alerts, chans, now, latency, arrived is not None)
        else:
            ids = self._write_sqlite(dbapi, claims, alerts, chans, now, latency,
                                     arrived is not None)
        remote = any(i is not None and any(ch != "dashboard" for ch in cs)
                     for i, cs in zip(ids, chans, strict=True))
        return Written(ids, latency, remote)

    def _write_pg(self, conn: Any, claims: Sequence[Claim], alerts: Sequence[NewAlert],
                  chans: list[list[str]], now: datetime, latency: float | None,
                  timed: bool) -> list[int | None]:
        dt = self.dt
        params: dict[str, Any] = {
            "rule_id": [a.rule_id for a in alerts],
            "ticker": [a.ticker for a in alerts],
            "message": [a.message for a in alerts],
            "latency": [latency if timed else a.latency_ms for a in alerts],
            "test": [a.test for a in alerts],
            "ch_ord": [k for k, cs in enumerate(chans, 1) for _ in cs],
            "ch_name": [ch for cs in chans for ch in cs],
            "now": dt(now),
            "iso": now.isoformat(),
        }
        if claims:
            params["k_id"] = [c.rule_id for c in claims]
            params["k_cutoff"] = [dt(c.cutoff) for c in claims]
            params["k_stamp"] = [dt(c.stamp) for c in claims]
        ids: list[int | None] = [None] * len(alerts)
        for ordinal, event_id, _notes in conn.execute(
                _PG_CLAIM_AND_QUEUE if claims else _PG_QUEUE, params).fetchall():
            ids[ordinal - 1] = event_id
        return ids

    def _write_sqlite(self, conn: Any, claims: Sequence[Claim], alerts: Sequence[NewAlert],
                      chans: list[list[str]], now: datetime, latency: float | None,
                      timed: bool) -> list[int | None]:
        dt = self.dt
        cur = conn.cursor()
        try:
            claimed: set[int] | None = None
            if claims:
                cur.execute(_SQLITE_CLAIM, (json.dumps(
                    [[c.rule_id, dt(c.cutoff), dt(c.stamp)] for c in claims]),))
                claimed = {row[0] for row in cur.fetchall()}
            stamp, iso = dt(now), now.isoformat()
            ids: list[int | None] = []
            deliveries: list[tuple[Any, ...]] = []
            live: list[tuple[Any, ...]] = []
            for a, cs in zip(alerts, chans, strict=True):
                if claimed is not None and a.rule_id not in claimed:
                    ids.append(None)
                    continue
                lat = latency if timed else a.latency_ms
                cur.execute(_SQLITE_EVENT, (a.rule_id, a.ticker, a.message, lat, stamp))
                event_id = int(cur.lastrowid)
                ids.append(event_id)
                for ch in cs:
                    if ch == "dashboard":
                        live.append((stamp, json.dumps({
                            "event_id": event_id, "rule_id": a.rule_id, "ticker": a.ticker,
                            "message": a.message, "latency_ms": lat, "created_at": iso,
                            "test": a.test})))
                        deliveries.append((event_id, ch, "sent", 1, stamp, stamp))
                    else:
                        deliveries.append((event_id, ch, "pending", 0, stamp, None))
            if deliveries:
                cur.executemany(_SQLITE_DELIVERY, deliveries)
            if live:
                cur.executemany(_SQLITE_LIVE, live)
        finally:
            cur.close()
        return ids


_SQLITE_CLAIM = """
UPDATE alert_rules SET last_fired_at = k.stamp
FROM (SELECT json_extract(value, '$[0]') AS rid, json_extract(value, '$[1]') AS cutoff,
             json_extract(value, '$[2]') AS stamp FROM json_each(?)) AS k
WHERE alert_rules.id = k.rid AND alert_rules.enabled
  AND (alert_rules.last_fired_at IS NULL OR alert_rules.last_fired_at <= k.cutoff)
RETURNING id"""
_SQLITE_EVENT = ("INSERT INTO alert_events (rule_id, ticker, message, latency_ms, created_at) "
                 "VALUES (?, ?, ?, ?, ?)")
_SQLITE_DELIVERY = ("INSERT INTO alert_deliveries (event_id, channel, status, attempts, "
                    "next_attempt_at, delivered_at) VALUES (?, ?, ?, ?, ?, ?)")
_SQLITE_LIVE = "INSERT INTO events (ts, kind, payload) VALUES (?, 'alert', ?)"

# PostgreSQL: one statement, so one round trip (and, on the engine's autocommit connection, its
# own transaction). The cooldown claim is an UPDATE ... RETURNING whose rows gate the alerts;
# event ids are drawn in the alerts' order, so deliveries and live-page events join on the
# alert's ordinal and the ids come back in order; one NOTIFY on ALERTS_CHANNEL for the whole
# batch when it has remote deliveries (transactional: heard once this commits). The dashboard's
# NOTIFY is not here: the events_notify trigger (migration 0002) sends pg_notify(EVENTS_CHANNEL,
# kind) for every events row, alert rows included, and a second, identical one from this
# statement was folded into it by PostgreSQL: work in the hot statement that no listener saw.
# The final SELECT reads nt only so that it runs: a plain CTE nothing reads is never evaluated.
_PG_CLAIMED = """claimed AS (
    UPDATE alert_rules AS r SET last_fired_at = k.stamp
    FROM unnest(%(k_id)s::bigint[], %(k_cutoff)s::timestamp[], %(k_stamp)s::timestamp[])
         AS k(id, cutoff, stamp)
    WHERE r.id = k.id AND r.enabled
      AND (r.last_fired_at IS NULL OR r.last_fired_at <= k.cutoff)
    RETURNING r.id
), """
_PG_BODY = """a AS MATERIALIZED (
    SELECT nextval((SELECT pg_get_serial_sequence('alert_events', 'id'))::regclass) AS id, u.*
    FROM (SELECT * FROM unnest(%(rule_id)s::bigint[], %(ticker)s::text[], %(message)s::text[],
                               %(latency)s::float8[], %(test)s::boolean[])
                        WITH ORDINALITY AS u(rule_id, ticker, message, latency_ms, test, ord)
          {where} ORDER BY u.ord) AS u
), ch AS (
    SELECT * FROM unnest(%(ch_ord)s::bigint[], %(ch_name)s::text[])
                  WITH ORDINALITY AS c(ord, channel, pos)
), ev AS (
    INSERT INTO alert_events (id, rule_id, ticker, message, latency_ms, created_at)
    SELECT id, rule_id, ticker, message, latency_ms, %(now)s::timestamp FROM a ORDER BY id
), dl AS (
    INSERT INTO alert_deliveries (event_id, channel, status, attempts, next_attempt_at,
                                  delivered_at)
    SELECT a.id, ch.channel,
           CASE WHEN ch.channel = 'dashboard' THEN 'sent' ELSE 'pending' END,
           CASE WHEN ch.channel = 'dashboard' THEN 1 ELSE 0 END, %(now)s::timestamp,
           CASE WHEN ch.channel = 'dashboard' THEN %(now)s::timestamp END
    FROM a JOIN ch ON ch.ord = a.ord ORDER BY ch.pos
), lv AS (
    INSERT INTO events (ts, kind, payload)
    SELECT %(now)s::timestamp, 'alert', json_build_object(
        'event_id', a.id, 'rule_id', a.rule_id, 'ticker', a.ticker, 'message', a.message,
        'latency_ms', a.latency_ms, 'created_at', %(iso)s::text, 'test', a.test)
    FROM a JOIN ch ON ch.ord = a.ord WHERE ch.channel = 'dashboard' ORDER BY a.id
), nt AS (
    SELECT pg_notify('{alerts}', max(a.id)::text) FROM a JOIN ch ON ch.ord = a.ord
    WHERE ch.channel <> 'dashboard' HAVING count(*) > 0
)
SELECT a.ord, a.id, (SELECT count(*) FROM nt) FROM a ORDER BY a.ord"""
# Composed of this module's constants only; every value is a bound parameter.
_PG_QUEUE = "WITH " + _PG_BODY.format(where="", alerts=ALERTS_CHANNEL)
_PG_CLAIM_AND_QUEUE = "WITH " + _PG_CLAIMED + _PG_BODY.format(  # noqa: S608
    where="WHERE u.rule_id IN (SELECT id FROM claimed)", alerts=ALERTS_CHANNEL)

_statements_by_dialect: dict[str, _Statements] = {}


def _statements(engine: Engine) -> _Statements:
    found = _statements_by_dialect.get(engine.dialect.name)
    if found is None:
        found = _statements_by_dialect[engine.dialect.name] = _Statements(engine.dialect)
    return found


_sqlite_held: weakref.WeakKeyDictionary[Engine, _HeldConnection] = weakref.WeakKeyDictionary()


def _sqlite_connection(engine: Engine) -> _HeldConnection:
    """The connection this process writes the outbox with on a SQLite database; use it only
    under :func:`write_lock`.

    One connection, kept, for the alert engine and the delivery worker alike: their writes are
    serialised by the write lock anyway, and a kept connection spares each of them a pool
    checkout, and SQLAlchemy's per-statement work, while it holds that lock. Its commits never
    checkpoint the WAL themselves (an fsync of the database, tens of milliseconds on a small
    machine, that would be paid inside ``on_bar`` or with the write lock held): the process's
    checkpointer (:func:`falcon.db.engine.note_commit`) runs a passive one on another connection
    in a background thread, where it holds up no writer. It is given back when the engine is
    disposed or collected.
    """
    with _waiters_lock:
        held = _sqlite_held.get(engine)
        if held is None:
            held = _sqlite_held[engine] = _HeldConnection(engine, autocommit=False)
            weakref.finalize(engine, held.close)
            event.listen(engine, "engine_disposed", lambda e: _close_under_lock(e, held))
    return held


def _close_under_lock(engine: Engine, held: _HeldConnection) -> None:
    with write_lock(engine):
        held.close()


@contextmanager
def _sqlite_transaction(engine: Engine) -> Iterator[Any]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the shared outbox connection, under the write lock."""
    with write_lock(engine):
        held = _sqlite_connection(engine)
        conn = held.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            held.rollback()
            raise
    # The commit was on the driver's connection, which SQLAlchemy's commit event does not see.
    note_commit(engine)


class AlertWriter:
    """Claims rules' cooldowns and queues their alerts, committed, on a connection of its own.

    The alert engine's hot path: :meth:`write` is one transaction, committed before it returns,
    then in-process delivery workers are woken. The connection is taken from the engine's pool
    once and kept (no checkout, no pre-ping per alert). On PostgreSQL it is the writer's own, in
    autocommit, and the claim plus the whole outbox write is one statement: one round trip,
    atomic as any statement is. On SQLite it is ``BEGIN IMMEDIATE``, a few statements,
    ``COMMIT``, under the process's :func:`write_lock`, on the connection every outbox write of
    the process shares (:func:`_sqlite_connection`).

    A connection found broken (the server restarted while it sat idle) is replaced and the
    write tried once more; the cooldown claim keeps a write that did commit before the break
    from being queued twice (a rule with no cooldown could, in that instant, fire twice:
    delivery is at least once anyway). :meth:`close` gives the connection back; so does
    garbage collection of the writer.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._key = _db_key(engine)
        self._sql = _statements(engine)
        self._lock = threading.Lock()
        if self._sql.pg:
            self._held = _HeldConnection(engine, autocommit=True)
            weakref.finalize(self, self._held.close)
        else:
            self._held = _sqlite_connection(engine)

    def write(self, claims: Sequence[Claim], alerts: Sequence[NewAlert],
              arrived: datetime | None = None) -> Written:
        """Claim ``claims``, queue the alerts of the rules claimed, commit; see :class:`Written`.

        Without ``claims`` every alert is queued. With ``arrived``, every alert's latency is the
        time from it to the commit's ``created_at`` (``NewAlert.latency_ms`` otherwise).
        """
        if not alerts:
            return Written([], None, False)
        if not self._sql.pg:
            with _sqlite_transaction(self._engine) as conn:
                written = self._sql.write(conn, claims, alerts, arrived)
        else:
            with self._lock:
                for attempt in (1, 2):
                    try:
                        written = self._sql.write(self._held.get(), claims, alerts, arrived)
                        break
                    except Exception:
                        if not self._held.broken():
                            raise
                        self._held.discard()
                        if attempt == 2:
                            raise
        if written.remote:
            _call_waiters(self._key)
        return written

    def close(self) -> None:
        """Give the connection back to the pool (a later :meth:`write` takes one again)."""
        with write_lock(self._engine), self._lock:
            self._held.close()


class _HeldConnection:
    """One pooled DBAPI connection kept checked out, taken again after :meth:`close`."""

    def __init__(self, engine: Engine, *, autocommit: bool) -> None:
        self._engine = weakref.ref(engine)  # the engine's finalizer may be what closes this
        self._autocommit = autocommit
        self._fairy: Any = None

    def get(self) -> Any:
        if self._fairy is None:
            engine = self._engine()
            if engine is None:  # pragma: no cover - a writer outlived its engine
                raise RuntimeError("the engine of this connection is gone")
            fairy = engine.raw_connection()
            driver: Any = fairy.driver_connection
            if self._autocommit:
                driver.autocommit = True
            self._fairy = fairy
        return self._fairy.driver_connection

    def broken(self) -> bool:
        conn = None if self._fairy is None else self._fairy.driver_connection
        return bool(getattr(conn, "broken", False) or getattr(conn, "closed", False))

    def rollback(self) -> None:
        if self._fairy is not None and not self._autocommit:
            try:
                self._fairy.driver_connection.rollback()
            except Exception:  # the error being raised is the one that matters
                self.discard()

    def discard(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            fairy.invalidate()

    def close(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is None:
            return
        try:
            if self._autocommit:
                fairy.driver_connection.autocommit = False
            fairy.close()
        except Exception:  # closing at exit or after the server went: nothing to keep
            fairy.invalidate()


def queue_alert(
    session: Session,
    *,
    rule_id: int | None,
    channels: Sequence[str],
    message: str,
    ticker: str | None = None,
    latency_ms: float | None = None,
    test: bool = False,
) -> AlertEvent:
    """Insert one alert and its deliveries (see :func:`queue_alerts`); the caller commits."""
    [event_id] = queue_alerts(session, [NewAlert(rule_id, channels, message, ticker,
                                                 latency_ms, test)])
    event = session.get(AlertEvent, event_id)
    if event is None:  # pragma: no cover - just inserted in this transaction
        raise LookupError(f"alert event {event_id} vanished")
    return event


# --- waking delivery workers in this process --------------------------------------------------

_WAKE_KEY = "falcon_alerts_wake"
_waiters: dict[str, list[Callable[[], None]]] = {}
_waiters_lock = threading.Lock()
_listening = False


def _db_key(bind: Engine | Connection) -> str:
    # By URL, not engine object: `falcon up` may reach one database through two engines.
    return bind.engine.url.render_as_string(hide_password=True)


def add_waiter(engine: Engine, callback: Callable[[], None]) -> None:
    """Call ``callback`` after every commit in this process that queued a remote delivery.

    This is how a delivery worker in the same process as the alert engine (``falcon up``, the
    benchmark) hears of a new alert at once, on SQLite too; other processes hear of it through
    PostgreSQL NOTIFY or the SQLite change poll (:class:`~falcon.alerts.delivery.DeliveryWorker`).
    """
    global _listening
    with _waiters_lock:
        if not _listening:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
            _listening = True
        _waiters.setdefault(_db_key(engine), []).append(callback)


def remove_waiter(engine: Engine, callback: Callable[[], None]) -> None:
    """Undo :func:`add_waiter`."""
    with _waiters_lock:
        found = _waiters.get(_db_key(engine), [])
        if callback in found:
            found.remove(callback)


_write_locks: dict[str, threading.Lock] = {}


def write_lock(engine: Engine) -> AbstractContextManager[Any]:
    """Hold around a write transaction of the alert engine or the delivery worker.

    On SQLite, writers in one process queue on this lock instead of on the database's: SQLite's
    busy handler retries after sleeping 1, 2, 5, 10 ... ms, so an alert that meets the worker's
    claim would wait several milliseconds for a lock freed in a fraction of one. Writers in other
    processes still meet the busy handler. PostgreSQL locks rows, not the database: no lock.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    key = _db_key(engine)
    with _waiters_lock:
        lock = _write_locks.get(key)
        if lock is None:
            lock = _write_locks[key] = threading.Lock()
    return lock


def _wake_after_commit(session: Session) -> None:
    session.info[_WAKE_KEY] = session.get_bind()


def _after_commit(session: Session) -> None:
    bind = session.info.pop(_WAKE_KEY, None)
    if bind is not None:
        _call_waiters(bind)


def _call_waiters(bind: Engine | Connection | str) -> None:
    key = bind if isinstance(bind, str) else _db_key(bind)
    with _waiters_lock:
        callbacks = list(_waiters.get(key, ()))
    for callback in callbacks:
        callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_WAKE_KEY, None)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds until ``lease_until``; ``attempt`` counts this try."""

    id: int
    event_id: int
    channel: str
    attempt: int
    rule_id: int | None
    ticker: str | None
    message: str
    created_at: datetime


@dataclass(frozen=True)
class Due:
    """What :func:`due_channels` found: rows due now per channel, and the next time one is due."""

    now: dict[str, int]
    next_at: datetime | None


def due_channels(engine: Engine, channels: Collection[str], *, now: datetime | None = None) -> Due:
    """Count pending deliveries due now per channel, and when the next later one falls due.

    A read (one index range on ``status, next_attempt_at``): the worker asks this before it
    claims, so an idle or woken-for-nothing pass never takes SQLite's write lock, and it knows
    how long it may sleep before a retry or an expired lease needs it.
    """
    now = now or utcnow()
    if not channels:
        return Due({}, None)
    if engine.dialect.name == "postgresql":
        counts_json, later = _pg_worker_run(engine, lambda conn: conn.execute(_PG_DUE, {
            "now": _statements(engine).dt(now), "channels": list(channels)}).fetchone())
        return Due({c: int(n) for c, n in (counts_json or {}).items()},
                   None if later is None else _statements(engine).dt_out(later))
    if engine.dialect.name == "sqlite":
        # Fixed SQL on a pooled driver connection, one call: the worker asks this every pass,
        # in the same interpreter as the alert engine (falcon up), so its Python time counts.
        sql = _statements(engine)
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(_SQLITE_DUE, {"channels": json.dumps(list(channels)), "now": sql.dt(now)})
            row: Any = cur.fetchone()  # the two sub-selects always give one row
            cur.close()
        finally:
            raw.close()
        counts_json, later = row
        return Due({c: int(n) for c, n in json.loads(counts_json or "{}").items()},
                   None if later is None else sql.dt_out(later))
    pending = (AlertDelivery.status == "pending", AlertDelivery.channel.in_(list(channels)))
    with engine.connect() as conn:
        counts = conn.execute(
            select(AlertDelivery.channel, func.count())
            .where(*pending, AlertDelivery.next_attempt_at <= now)
            .group_by(AlertDelivery.channel)
        ).all()
        later = conn.execute(
            select(func.min(AlertDelivery.next_attempt_at))
            .where(*pending, AlertDelivery.next_attempt_at > now)
        ).scalar()
    if later is not None and later.tzinfo is None:  # min() loses the column type on SQLite
        later = later.replace(tzinfo=UTC)
    return Due({c: int(n) for c, n in counts}, later)


def claim_due(
    engine: Engine,
    *,
    channels: Collection[str],
    limit: int,
    lease_s: float,
    now: datetime | None = None,
    event_id: int | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due pending deliveries of ``channels`` (oldest first)."""
    if not channels or limit <= 0:
        return []
    now = now or utcnow()
    if engine.dialect.name == "sqlite":
        return _claim_due_sqlite(engine, channels, limit, lease_s, now, event_id)
    if engine.dialect.name == "postgresql":
        return _claim_due_pg(engine, channels, limit, lease_s, now, event_id)
    due = (
        select(AlertDelivery.id)
        .where(
            AlertDelivery.status == "pending",
            AlertDelivery.next_attempt_at <= now,
            AlertDelivery.channel.in_(list(channels)),
        )
        .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
        .limit(limit)
    )
    if event_id is not None:
        due = due.where(AlertDelivery.event_id == event_id)
    if _is_pg(engine):
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(AlertDelivery)
        .where(AlertDelivery.id.in_(due.scalar_subquery()), AlertDelivery.status == "pending")
        .values(attempts=AlertDelivery.attempts + 1,
                next_attempt_at=now + timedelta(seconds=lease_s))
        .returning(AlertDelivery.id, AlertDelivery.event_id, AlertDelivery.channel,
                   AlertDelivery.attempts)
    )
    with write_lock(engine), engine.begin() as conn:
        rows = conn.execute(stmt).all()
        if not rows:
            return []
        events = {
            e.id: e
            for e in conn.execute(
                select(AlertEvent.id, AlertEvent.rule_id, AlertEvent.ticker, AlertEvent.message,
                       AlertEvent.created_at)
                .where(AlertEvent.id.in_({r.event_id for r in rows}))
            )
        }
    out = []
    for r in sorted(rows, key=lambda r: r.id):
        e = events[r.event_id]
        created = e.created_at
        out.append(Claimed(r.id, r.event_id, r.channel, r.attempts, e.rule_id, e.ticker,
                           e.message, created))
    return out


def _claim_due_sqlite(engine: Engine, channels: Collection[str], limit: int, lease_s: float,
                      now: datetime, event_id: int | None) -> list[Claimed]:
    # claim_due's statements on the shared connection: the write lock is held for as little
    # time as the database needs, not for SQLAlchemy's compilation and result handling.
    sql = _statements(engine)
    params = (sql.dt(now + timedelta(seconds=lease_s)), sql.dt(now),
              json.dumps(list(channels)), event_id, event_id, limit)
    with _sqlite_transaction(engine) as conn:
        rows = conn.execute(_SQLITE_CLAIM_DUE, params).fetchall()
        if not rows:
            return []
        events = {e[0]: e for e in conn.execute(
            "SELECT id, rule_id, ticker, message, created_at FROM alert_events "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({r[1] for r in rows})),))}
    out = []
    for delivery_id, event_id_, channel, attempts in sorted(rows):
        _, rule_id, ticker, message, created = events[event_id_]
        out.append(Claimed(delivery_id, event_id_, channel, attempts, rule_id, ticker, message,
                           sql.dt_out(created)))
    return out


_SQLITE_CLAIM_DUE = """
UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_at = ?
WHERE status = 'pending' AND id IN (
    SELECT id FROM alert_deliveries
    WHERE status = 'pending' AND next_attempt_at <= ?
      AND channel IN (SELECT value FROM json_each(?)) AND (? IS NULL OR event_id = ?)
    ORDER BY next_attempt_at, id LIMIT ?)
RETURNING id, event_id, channel, attempts"""


def _claim_due_pg(engine: Engine, channels: Collection[str], limit: int, lease_s: float,
                  now: datetime, event_id: int | None) -> list[Claimed]:
    # One statement on the worker's kept autocommit connection: lease and read in a round trip.
    sql = _statements(engine)
    rows = _pg_worker_run(engine, lambda conn: conn.execute(_PG_CLAIM_DUE, {
        "now": sql.dt(now), "lease": sql.dt(now + timedelta(seconds=lease_s)),
        "channels": list(channels), "event_id": event_id, "limit": limit}).fetchall())
    return [Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], sql.dt_out(r[7])) for r in rows]


_PG_CLAIM_DUE = """
WITH due AS (
    SELECT id FROM alert_deliveries
    WHERE status = 'pending' AND next_attempt_at <= %(now)s::timestamp
      AND channel = ANY(%(channels)s::text[])
      AND (%(event_id)s::bigint IS NULL OR event_id = %(event_id)s::bigint)
    ORDER BY next_attempt_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE alert_deliveries AS d
    SET attempts = d.attempts + 1, next_attempt_at = %(lease)s::timestamp
    FROM due WHERE d.id = due.id AND d.status = 'pending'
    RETURNING d.id, d.event_id, d.channel, d.attempts
)
SELECT c.id, c.event_id, c.channel, c.attempts, e.rule_id, e.ticker, e.message, e.created_at
FROM claimed AS c JOIN alert_events AS e ON e.id = c.event_id ORDER BY c.id"""
_PG_DUE = """
SELECT (SELECT json_object_agg(channel, n) FROM (
            SELECT channel, count(*) AS n FROM alert_deliveries
            WHERE status = 'pending' AND channel = ANY(%(channels)s::text[])
              AND next_attempt_at <= %(now)s::timestamp
            GROUP BY channel) AS t),
       (SELECT min(next_attempt_at) FROM alert_deliveries
        WHERE status = 'pending' AND channel = ANY(%(channels)s::text[])
          AND next_attempt_at > %(now)s::timestamp)"""

_SQLITE_DUE = """
SELECT (SELECT json_group_object(channel, n) FROM (
            SELECT channel, count(*) AS n FROM alert_deliveries
            WHERE status = 'pending' AND channel IN (SELECT value FROM json_each(:channels))
              AND next_attempt_at <= :now
            GROUP BY channel)),
       (SELECT min(next_attempt_at) FROM alert_deliveries
        WHERE status = 'pending' AND channel IN (SELECT value FROM json_each(:channels))
          AND next_attempt_at > :now)"""

_pg_worker_held: weakref.WeakKeyDictionary[Engine, tuple[_HeldConnection, threading.Lock]] = (
    weakref.WeakKeyDictionary())


def _pg_worker_run(engine: Engine, work: Callable[[Any], Any]) -> Any:
    """``work(conn)`` on the delivery worker's kept autocommit connection (PostgreSQL).

    Each statement is its own transaction. A connection found broken (the server restarted)
    is replaced and ``work`` run once more: a lease taken just before the break expires, and
    a ``sent`` not recorded means a second send, both within at-least-once delivery.
    """
    with _waiters_lock:
        entry = _pg_worker_held.get(engine)
        if entry is None:
            held = _HeldConnection(engine, autocommit=True)
            entry = _pg_worker_held[engine] = (held, threading.Lock())
            weakref.finalize(engine, held.close)
            event.listen(engine, "engine_disposed", lambda _e: held.close())
    held, lock = entry
    with lock:
        for attempt in (1, 2):
            try:
                return work(held.get())
            except Exception:
                if not held.broken() or attempt == 2:
                    raise
                held.discard()
    raise AssertionError("unreachable")  # pragma: no cover


def mark_sent(engine: Engine, claimed: Claimed | Sequence[Claimed]) -> int:
    """Record successful sends in one transaction; how many rows were still pending.

    One write per pass rather than per row: on SQLite every write transaction takes the single
    write lock that the alert engine needs to queue new alerts.
    """
    batch = [claimed] if isinstance(claimed, Claimed) else list(claimed)
    if not batch:
        return 0
    if engine.dialect.name == "sqlite":
        with _sqlite_transaction(engine) as raw:
            cur = raw.execute(
                "UPDATE alert_deliveries SET status = 'sent', delivered_at = ?, last_error = NULL "
                "WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'",
                (_statements(engine).dt(utcnow()), json.dumps([c.id for c in batch])))
            return int(cur.rowcount)
    if engine.dialect.name == "postgresql":
        return int(_pg_worker_run(engine, lambda conn: conn.execute(
            "UPDATE alert_deliveries SET status = 'sent', delivered_at = %s, last_error = NULL "
            "WHERE id = ANY(%s) AND status = 'pending'",
            (_statements(engine).dt(utcnow()), [c.id for c in batch])).rowcount))
    with write_lock(engine), engine.begin() as conn:
        done: Any = conn.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id.in_([c.id for c in batch]), AlertDelivery.status == "pending")
            .values(status="sent", delivered_at=utcnow(), last_error=None)
        )
    return int(done.rowcount)


def mark_failed(
    engine: Engine, claimed: Claimed, error: str, *, retry_at: datetime | None
) -> bool:
    """Record a failed try: pending again at ``retry_at``, or dead when ``retry_at`` is None.

    Only while the row is still this try's (same attempt number): a worker whose lease expired
    must not overwrite the try of the worker that took over.
    """
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values["status"] = "dead"
    else:
        values["next_attempt_at"] = retry_at
    with write_lock(engine), engine.begin() as conn:
        done = conn.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == claimed.id, AlertDelivery.status == "pending",
                   AlertDelivery.attempts == claimed.attempt)
            .values(**values)
        )
    return done.rowcount == 1


def release(engine: Engine, claimed: Sequence[Claimed], *, at: datetime | None = None) -> None:
    """Give claimed rows back untried (breaker opened, shutdown): the try does not count."""
    when = at or utcnow()
    with write_lock(engine), engine.begin() as conn:
        for c in claimed:
            conn.execute(
                update(AlertDelivery)
                .where(AlertDelivery.id == c.id, AlertDelivery.status == "pending",
                       AlertDelivery.attempts == c.attempt)
                .values(attempts=AlertDelivery.attempts - 1, next_attempt_at=when)
            )


def requeue_dead(session: Session, delivery_ids: Collection[int] | None = None) -> int:
    """Put dead deliveries back to pending with a fresh attempt budget; how many."""
    stmt = (
        update(AlertDelivery)
        .where(AlertDelivery.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=utcnow())
    )
    if delivery_ids is not None:
        stmt = stmt.where(AlertDelivery.id.in_(list(delivery_ids)))
    result: Any = session.execute(stmt)
    return int(result.rowcount)
