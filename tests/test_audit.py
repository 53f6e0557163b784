"""The hash-chained audit log: appends verify, and every kind of tampering is named."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit
from falcon.cli import main
from falcon.db.engine import transaction
from falcon.db.models import AuditEntry
from falcon.db.types import utcnow
from falcon.errors import ValidationError
from tests.conftest import new_pg_database
from tests.jobs.dbreuse import reusable_db_url
from tests.pgserver import PostgresServer


@pytest.fixture(scope="module")
def module_pg_url(pg_server: PostgresServer) -> str:
    return new_pg_database(pg_server)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return reusable_db_url(request, tmp_path)


def _fill(sessions: sessionmaker[Session], n: int) -> list[AuditEntry]:
    with transaction(sessions) as s:
        return [audit.append(s, "trader", "order.submitted", f"T{i}", {"qty": i, "px": i / 3})
                for i in range(n)]


def _verify(sessions: sessionmaker[Session]) -> audit.VerifyResult:
    with sessions() as s:
        return audit.verify(s)


def _raw(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_appends_chain_from_genesis_and_verify(sessions: sessionmaker[Session]) -> None:
    assert _verify(sessions).message == "ok, 0 entries"
    entries = _fill(sessions, 3)
    assert entries[0].prev_hash == audit.GENESIS_HASH
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    result = _verify(sessions)
    assert (result.ok, result.message) == (True, "ok, 3 entries")
    assert (result.head_id, result.head_hash) == (entries[-1].id, entries[-1].hash)
    with sessions() as s:
        assert audit.head(s) == (entries[-1].id, entries[-1].hash)


def test_an_edited_row_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 5)
    _raw(engine, "UPDATE audit_log SET actor = 'mallory' WHERE id = :id", id=entries[2].id)
    result = _verify(sessions)
    assert (result.ok, result.bad_id, result.problem) == (False, entries[2].id, "edited")
    assert result.message.startswith(f"audit log broken at id {entries[2].id}: edited")


def test_an_edited_detail_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 3)
    _raw(engine, "UPDATE audit_log SET detail = :d WHERE id = :id",
         d=json.dumps({"qty": 1000, "px": 1 / 3}), id=entries[1].id)
    result = _verify(sessions)
    assert (result.bad_id, result.problem) == (entries[1].id, "edited")


def test_an_edit_with_a_recomputed_hash_is_still_caught(engine: Engine,
                                                        sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 4)
    victim = entries[1]
    forged = audit.compute_hash(victim.prev_hash, victim.ts, "mallory", victim.action,
                                victim.subject, victim.detail)
    _raw(engine, "UPDATE audit_log SET actor = 'mallory', hash = :h WHERE id = :id",
         h=forged, id=victim.id)
    result = _verify(sessions)
    assert (result.bad_id, result.problem) == (victim.id, "edited")


def test_a_deleted_middle_row_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 5)
    _raw(engine, "DELETE FROM audit_log WHERE id = :id", id=entries[2].id)
    result = _verify(sessions)
    assert (result.ok, result.bad_id, result.problem) == (False, entries[3].id, "deleted")
    assert f"between {entries[1].id} and {entries[3].id}" in (result.reason or "")


def test_a_deleted_first_row_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 3)
    _raw(engine, "DELETE FROM audit_log WHERE id = :id", id=entries[0].id)
    result = _verify(sessions)
    assert (result.bad_id, result.problem) == (entries[1].id, "deleted")


def _insert(engine: Engine, row_id: int, prev_hash: str, hash_: str | None = None) -> None:
    """A forged row; with no ``hash_`` its hash is computed right, as a careful forger would."""
    ts = utcnow()
    hash_ = hash_ or audit.compute_hash(prev_hash, ts, "mallory", "order.filled", "AAPL", {})
    _raw(engine, "INSERT INTO audit_log (id, ts, actor, action, subject, detail, prev_hash, hash) "
                 "VALUES (:id, :ts, 'mallory', 'order.filled', 'AAPL', '{}', :prev, :hash)",
         id=row_id, ts=ts.replace(tzinfo=None), prev=prev_hash, hash=hash_)


@pytest.mark.parametrize("careful", [True, False], ids=["careful", "careless"])
def test_a_forged_row_inserted_in_the_middle_is_named(
    engine: Engine, sessions: sessionmaker[Session], careful: bool
) -> None:
    entries = _fill(sessions, 4)
    # Make room after entry 2 (shifting ids in two steps avoids unique-key clashes), then insert
    # a row linked to entry 2; a careful forger also gets its own hash right, so that only the
    # next entry's link betrays it.
    _raw(engine, "UPDATE audit_log SET id = id + 1000 WHERE id > :id", id=entries[1].id)
    _raw(engine, "UPDATE audit_log SET id = id - 999 WHERE id > 1000")
    forged_id = entries[1].id + 1
    _insert(engine, forged_id, entries[1].hash, None if careful else "e" * 64)
    result = _verify(sessions)
    assert (result.ok, result.bad_id, result.problem) == (False, forged_id, "inserted")
    with sessions() as s:
        assert s.get(AuditEntry, forged_id).actor == "mallory"  # type: ignore[union-attr]


def test_a_forged_row_appended_at_the_end_is_named(engine: Engine,
                                                   sessions: sessionmaker[Session]) -> None:
    entries = _fill(sessions, 3)
    _insert(engine, entries[-1].id + 1, "f" * 64, "e" * 64)
    result = _verify(sessions)
    assert (result.bad_id, result.problem) == (entries[-1].id + 1, "inserted")


def test_concurrent_appenders_keep_one_chain(engine: Engine,
                                            sessions: sessionmaker[Session]) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        start.wait()
        try:
            for i in range(15):
                with transaction(sessions) as s:
                    audit.append(s, name, "tick", None, {"i": i})
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _verify(sessions).message == "ok, 60 entries"


def test_a_rolled_back_append_leaves_the_chain_intact(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 2)
    with pytest.raises(RuntimeError), transaction(sessions) as s:
        audit.append(s, "trader", "order.submitted", "X", {})
        raise RuntimeError("the order failed, so its audit entry goes too")
    _fill(sessions, 1)  # on PostgreSQL this leaves a gap in the ids, which is not tampering
    assert _verify(sessions).message == "ok, 3 entries"


def test_append_validates(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        with pytest.raises(ValidationError, match="actor and an action"):
            audit.append(s, "", "x")
        with pytest.raises(ValidationError, match="longer than 64"):
            audit.append(s, "a" * 65, "x")
        with pytest.raises(ValidationError, match="JSON"):
            audit.append(s, "a", "x", None, {"n": float("nan")})
        with pytest.raises(ValidationError, match="NUL"):
            audit.append(s, "a", "x", None, {"k": "a\x00b"})


# Any Unicode text but NUL (PostgreSQL cannot store it); utf-8 rules out lone surrogates.
_text = st.characters(codec="utf-8", blacklist_characters="\x00")
_keys = st.text(_text, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(_text, max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
names = st.text(_text, min_size=1, max_size=64)
appends = st.lists(
    st.tuples(names, names, st.none() | names, st.dictionaries(_keys, json_values, max_size=5)),
    min_size=1, max_size=6,
)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(appends, min_size=1, max_size=3))
def test_any_sequence_of_appends_verifies(engine: Engine, sessions: sessionmaker[Session],
                                          batches: list[list[tuple[Any, ...]]]) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    for batch in batches:  # each batch one transaction, as a caller would
        with transaction(sessions) as s:
            for actor, action, subject, detail in batch:
                audit.append(s, actor, action, subject, detail)
    result = _verify(sessions)
    assert result.ok, result.message
    assert result.entries == sum(len(b) for b in batches)


def test_cli_verify_and_list(engine: Engine, sessions: sessionmaker[Session], db_url: str,
                             runner: CliRunner) -> None:
    entries = _fill(sessions, 3)
    args = ["--database-url", db_url, "audit"]
    result = runner.invoke(main, [*args, "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok, 3 entries, head ")
    result = runner.invoke(main, [*args, "list", "--json"])
    assert [e["id"] for e in json.loads(result.output)] == [e.id for e in reversed(entries)]
    result = runner.invoke(main, [*args, "list"])
    assert result.exit_code == 0 and "order.submitted" in result.output

    _raw(engine, "UPDATE audit_log SET subject = 'MSFT' WHERE id = :id", id=entries[1].id)
    result = runner.invoke(main, [*args, "verify"])
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"audit log broken at id {entries[1].id}: edited")
    result = runner.invoke(main, [*args, "verify", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["bad_id"] == entries[1].id


def test_append_many_chains_like_sequential_appends(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch gives the very hashes one-by-one appends give for the same entries and times."""
    when = utcnow()
    monkeypatch.setattr(audit, "utcnow", lambda: when)
    inputs: list[tuple[str, str, str | None, dict[str, Any] | None]] = [
        ("trader", "order.submitted", f"T{i}", {"qty": i, "px": i / 3, "tags": ("a", i)})
        for i in range(5)
    ]
    inputs.append(("cli", "paper.halted", None, None))
    with transaction(sessions) as s:
        one_by_one = [audit.append(s, *entry) for entry in inputs]
        batched = audit.append_many(s, inputs)
        assert audit.append_many(s, []) == []
    assert batched[0].prev_hash == one_by_one[-1].hash
    assert [e.prev_hash for e in batched[1:]] == [e.hash for e in batched[:-1]]
    # The same chain computed from genesis in one batch equals the sequential one.
    expected = []
    prev = audit.GENESIS_HASH
    for e in batched:
        prev = audit.compute_hash(prev, when, e.actor, e.action, e.subject, e.detail)
        expected.append(prev)
    assert expected == [e.hash for e in one_by_one]
    assert [e.detail for e in batched] == [e.detail for e in one_by_one]
    result = _verify(sessions)
    assert (result.ok, result.entries) == (True, 12)
    assert result.head_hash == batched[-1].hash


def test_append_many_validates_every_entry_before_writing(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValidationError), transaction(sessions) as s:
        audit.append_many(s, [("trader", "ok", None, {}), ("", "missing actor", None, {})])
    assert _verify(sessions).message == "ok, 0 entries"


def test_append_rows_stores_and_hashes_like_append_many(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch path (detail serialised once, bound as JSON text) hashes and stores exactly what
    :func:`audit.append_many` does, awkward details included: keys that sort differently once
    they are strings, tuples, non-ASCII text and a literal backslash-u0000 (not a NUL)."""
    when = utcnow()
    monkeypatch.setattr(audit, "utcnow", lambda: when)
    int_keys: Any = {10: "ten", 9: 1 / 3}  # not str keys: what callers may pass all the same
    inputs: list[tuple[str, str, str | None, dict[str, Any] | None]] = [
        ("trader", "order.filled", "T1", int_keys),
        ("trader", "order.submitted", "T2", {"legs": ("a", 2, None), "name": "Zürich €"}),
        ("trader", "risk.rejected", None, {"note": "\\u0000 is not a NUL"}),
        ("cli", "paper.halted", None, None),
    ]
    with transaction(sessions) as s:
        assert audit.append_rows(s, inputs) == 4
        assert audit.append_rows(s, []) == 0
    with sessions() as s:
        stored = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    prev = audit.GENESIS_HASH
    for entry in stored:
        assert entry.prev_hash == prev
        prev = audit.compute_hash(prev, when, entry.actor, entry.action, entry.subject,
                                  entry.detail)
        assert entry.hash == prev
    assert [e.detail for e in stored] == [
        {"10": "ten", "9": 1 / 3},
        {"legs": ["a", 2, None], "name": "Zürich €"},
        {"note": "\\u0000 is not a NUL"},
        {},
    ]
    with transaction(sessions) as s:  # the same entries through the ORM path chain on
        many = audit.append_many(s, inputs)
    assert [e.detail for e in many] == [e.detail for e in stored]
    assert _verify(sessions).ok


def test_append_rows_refuses_a_nul_before_writing(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValidationError, match="NUL"), transaction(sessions) as s:
        audit.append_rows(s, [("trader", "ok", None, {}),
                              ("trader", "bad", None, {"deep": ["x\x00y"]})])
    assert _verify(sessions).message == "ok, 0 entries"
