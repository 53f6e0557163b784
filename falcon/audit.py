"""The audit log: an append-only, hash-chained record of orders, fills, risk decisions and config.

Each entry's ``hash`` is ``sha256(prev_hash + canonical JSON of [ts, actor, action, subject,
detail])``, and its ``prev_hash`` is the previous entry's hash (:data:`GENESIS_HASH` for the first),
so changing, inserting or deleting a row anywhere breaks the chain at that point and
:func:`verify` names it. What a chain without a secret cannot show: the newest entries being cut
off, or the whole tail being rewritten by someone who recomputes every hash after it. Keep the
head (:func:`head`, printed by ``falcon audit verify``) somewhere else to catch those.

:func:`append` works inside the caller's transaction, so an order and its audit entry commit or
roll back together. Concurrent writers are serialised: on PostgreSQL by a transaction-scoped
advisory lock, on SQLite by taking the database's write lock before reading the chain's head.

Example::

    with transaction(sessions) as s:
        append(s, actor="trader", action="order.submitted", subject="AAPL", detail={"qty": 10})
    result = verify(session)
    print(result.message)   # "ok, 1 entries"
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.orm import Session

from falcon.db import bulk
from falcon.db.models import AuditEntry
from falcon.db.types import utcnow
from falcon.errors import ValidationError

__all__ = [
    "GENESIS_HASH",
    "VerifyResult",
    "append",
    "append_many",
    "append_rows",
    "compute_hash",
    "head",
    "verify",
]

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key for audit appends: ASCII "FALCAUDT", fixed so every process agrees.
_PG_LOCK_KEY = 0x46414C4341554454
_LIMITS = {"actor": 64, "action": 64, "subject": 200}

Problem = Literal["edited", "inserted", "deleted"]


# One encoder for every call: json.dumps with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


def _canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def compute_hash(prev_hash: str, ts: datetime, actor: str, action: str, subject: str | None,
                 detail: dict[str, Any]) -> str:
    """The hash an entry with these fields must carry."""
    return _hash_body(prev_hash, ts, actor, action, subject, _canonical(detail))


def _hash_body(prev_hash: str, ts: datetime, actor: str, action: str, subject: str | None,
               body: str) -> str:
    """:func:`compute_hash` given the detail's canonical JSON ``body`` (serialised once).

    The canonical JSON of ``[ts, actor, action, subject, detail]`` is that of the first four
    with the detail's text spliced in before the closing bracket: the separators are fixed.
    """
    head = _canonical([ts.isoformat(), actor, action, subject])
    text_ = prev_hash + head[:-1] + "," + body + "]"
    return hashlib.sha256(text_.encode("utf-8")).hexdigest()


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if "\x00" in value:
        raise ValidationError(f"audit {name} must not contain NUL characters")
    if len(value) > _LIMITS[name]:
        raise ValidationError(f"audit {name} is longer than {_LIMITS[name]} characters")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> bool:
    """True when a JSON round trip gives ``value`` back unchanged: dicts with string keys,
    lists, and scalars only (no tuples, no other key types)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in _SCALARS


def _lock_chain(session: Session) -> None:
    """Serialise appenders until the caller's transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    else:
        # A write that changes nothing still takes SQLite's write lock (and opens the
        # transaction), so the head we read next cannot change before we insert after it.
        session.execute(
            update(AuditEntry).where(text("0 = 1")).values(actor=AuditEntry.actor),
            execution_options={"synchronize_session": False},
        )


def _clean(
    actor: str, action: str, subject: str | None, detail: dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """Validate one entry's fields; ``detail`` as JSON would give it back, and its canonical JSON.

    The detail is serialised twice (the round trip turns tuples into lists and keys into
    strings, which may reorder them) and the second text is what the hash is computed over.
    """
    if not actor or not action:
        raise ValidationError("audit entries need an actor and an action")
    for name, value in (("actor", actor), ("action", action), ("subject", subject)):
        _check_text(name, value)
    try:
        if isinstance(detail, dict) and _plain(detail):
            # What JSON gives back already (the trader's details): serialised once, not thrice.
            clean, body = detail, _canonical(detail)
        else:
            clean = json.loads(_canonical(detail or {}))
            body = ""
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"audit detail is not valid JSON: {exc}") from None
    if not isinstance(clean, dict):
        raise ValidationError("audit detail must be a JSON object")
    body = body or _canonical(clean)
    # JSON escapes NUL as \u0000: only a text holding that escape needs the walk through values.
    if "\\u0000" in body and _has_nul(clean):
        raise ValidationError("audit detail must not contain NUL characters")
    try:
        (actor + action + (subject or "") + body).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("audit entries must be valid Unicode text") from None
    return clean, body


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an entry to the chain in the caller's transaction; the new (flushed) row.

    ``detail`` must be a JSON object; it is stored as JSON would give it back (tuples become
    lists, keys strings) so that the hash verifies after a round trip through the database.
    """
    return append_many(session, [(actor, action, subject, detail)])[0]


def append_many(
    session: Session,
    entries: Sequence[tuple[str, str, str | None, dict[str, Any] | None]],
) -> list[AuditEntry]:
    """Add ``(actor, action, subject, detail)`` entries, in order, in the caller's transaction.

    One lock and one read of the chain's head for all of them; the hashes are chained in memory
    and the rows inserted with one flush. Every entry is validated (as by :func:`append`) before
    anything is written. Returns the new (flushed) rows.
    """
    cleaned = [(actor, action, subject, *_clean(actor, action, subject, detail))
               for actor, action, subject, detail in entries]
    if not cleaned:
        return []
    _lock_chain(session)
    last = session.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar()
    prev_hash = last or GENESIS_HASH
    rows: list[AuditEntry] = []
    for actor, action, subject, clean, body in cleaned:
        ts = utcnow()
        digest = _hash_body(prev_hash, ts, actor, action, subject, body)
        rows.append(AuditEntry(ts=ts, actor=actor, action=action, subject=subject, detail=clean,
                               prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    session.add_all(rows)
    session.flush()
    return rows


def append_rows(
    session: Session,
    entries: Sequence[tuple[str, str, str | None, dict[str, Any] | None]],
) -> int:
    """:func:`append_many` without building ORM objects: one INSERT for all rows; how many.

    For hot paths that do not need the rows back (the paper trader writes its batch's entries
    this way): the same validation, lock, chaining and hashes.
    """
    cleaned = [(actor, action, subject, *_clean(actor, action, subject, detail))
               for actor, action, subject, detail in entries]
    if not cleaned:
        return 0
    _lock_chain(session)
    session.flush()  # entries added through the ORM earlier in this transaction come first
    last = session.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar()
    prev_hash = last or GENESIS_HASH
    rows: list[dict[str, Any]] = []
    for actor, action, subject, _detail, body in cleaned:
        ts = utcnow()
        digest = _hash_body(prev_hash, ts, actor, action, subject, body)
        rows.append({"ts": ts, "actor": actor, "action": action, "subject": subject,
                     "detail_json": body, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    for row in rows:
        row["detail"] = row.pop("detail_json")
    # One executemany (SQLite) or COPY (PostgreSQL); the detail is stored as the hashed text.
    bulk.insert_rows(session, cast(Table, AuditEntry.__table__), rows, raw=("detail",))
    return len(rows)


def head(session: Session) -> tuple[int, str] | None:
    """The newest entry's id and hash (None for an empty log)."""
    row = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return None if row is None else (row.id, row.hash)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`: ok, or the first bad row and what is wrong with it."""

    ok: bool
    entries: int
    bad_id: int | None = None
    problem: Problem | None = None
    reason: str | None = None
    head_id: int | None = None
    head_hash: str | None = None

    @property
    def message(self) -> str:
        """One line for people: ``ok, N entries`` or what is wrong where."""
        if self.ok:
            return f"ok, {self.entries} entries"
        return f"audit log broken at id {self.bad_id}: {self.problem} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"ok": self.ok, "entries": self.entries, "bad_id": self.bad_id,
                "problem": self.problem, "reason": self.reason, "message": self.message,
                "head_id": self.head_id, "head_hash": self.head_hash}


@dataclass(frozen=True)
class _Row:
    id: int
    prev_hash: str
    hash: str
    content_ok: bool


def _rows(session: Session) -> Iterator[_Row]:
    stmt = select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)
    for entry in session.scalars(stmt):
        expected = compute_hash(entry.prev_hash, entry.ts, entry.actor, entry.action,
                                entry.subject, entry.detail)
        yield _Row(entry.id, entry.prev_hash, entry.hash, expected == entry.hash)
        session.expunge(entry)  # keep memory flat on long logs


def _judge(before: list[_Row], row: _Row, after: _Row | None) -> tuple[int, Problem, str] | None:
    """What is wrong at ``row`` given the verified rows ``before`` it and the one ``after``.

    Detection is exact (a row verifies or it does not); naming the kind of tampering is a best
    reading of the evidence around the break.
    """
    prev = before[-1] if before else None
    expected_prev = prev.hash if prev else GENESIS_HASH
    linked = row.prev_hash == expected_prev
    chained_on = after is not None and after.prev_hash == row.hash
    if not row.content_ok:
        if after is not None and after.prev_hash == expected_prev:
            return row.id, "inserted", "the next entry links past it to the one before"
        if linked or chained_on:
            return row.id, "edited", "stored hash does not match the entry's contents"
        return row.id, "inserted", "neither its link nor its hash fits the chain"
    if linked:
        return None
    if prev is not None:
        before_prev = before[-2].hash if len(before) > 1 else GENESIS_HASH
        if row.prev_hash == before_prev:
            return prev.id, "inserted", f"entry {row.id} links past it to the one before"
        if row.id == prev.id + 1:
            return prev.id, "edited", (f"its hash was recomputed after a change; entry {row.id} "
                                       "still links to the original")
        return row.id, "deleted", f"entries between {prev.id} and {row.id} are missing"
    return row.id, "deleted", "entries before it are missing (its link is not the genesis hash)"


def verify(session: Session) -> VerifyResult:
    """Walk the whole chain in id order and report the first problem (or ok)."""
    before: list[_Row] = []  # only the last two are kept
    pending: _Row | None = None
    count = 0
    for row in _rows(session):
        count += 1
        if pending is not None:
            found = _judge(before, pending, row)
            if found is not None:
                return VerifyResult(False, count, *found)
            before = [*before[-1:], pending]
        pending = row
    if pending is not None:
        found = _judge(before, pending, None)
        if found is not None:
            return VerifyResult(False, count, *found)
    return VerifyResult(True, count, head_id=pending.id if pending else None,
                        head_hash=pending.hash if pending else None)
