"""Quiet retries: an entry refused again and again for the same cause is written down once.

A strategy's entry signal is often a level (RSI below 30) that holds bar after bar. While it
holds, the trader decides the entry on every bar and retries it at the next open, as the
backtester does; when it is refused for the same reason each time (no cash left, a risk limit),
writing every retry (a pending row, its rejection, audit entries, an ``events`` row, log lines)
only floods the ledger and the dashboard with copies of one refusal.

A *streak* is keyed by (strategy, ticker, side). It starts when such an entry is refused: that
refusal is recorded as always. While the streak is open, a new decision of the key is *quiet*:
held in memory only (:func:`falcon.paper.persist.hold_pending`), with the same deterministic
client order id. At the next open a quiet entry is judged exactly like any other; refused for
the streak's cause, nothing is written and the streak counts it; refused for another cause, or
accepted, its row is written then as the pending row would have evolved (no ``order.decided``).

A streak ends when its entry is accepted, when a refusal has another cause (a new streak starts),
or after a batch in which the ticker had a bar but no entry of the key was released (the signal
went away). The trader writes one ``order.refused_repeatedly`` audit entry for an ended streak
that had repeats (:meth:`Streak.detail`).

The same store keeps *entries if flat*: a strategy's entry signal on a bar where its own
position is still held (and no exit signal). The backtester enters at the next open when the
position is exited at that very open (a stop or target the open gaps through, ``max_bars``):
exits at the open come before entries. The trader cannot know on the signal bar whether that
will happen, so it holds such an entry in memory; at the next open, after what fills at the
open, it is dropped without a trace if the position is still there, or judged as any entry.

:class:`Streaks` is pure state: the trader writes what it returns. Its state (open streaks with
their quiet entry) is stored with each batch in ``paper_accounts.quiet_state``
(:meth:`Streaks.dump` / :meth:`Streaks.load`), so that a restarted trader holds the same quiet
entries and counts as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Key", "Streak", "Streaks", "streak_key"]

Key = tuple[str, str, str]  # strategy, ticker, side
_VERSION = 1


def streak_key(meta: dict[str, Any], ticker: str, side: str) -> Key | None:
    """The streak key of a pending entry, or None when it never goes quiet.

    Only a strategy's own entries repeat bar after bar: manual orders, screener picks (one
    decision per pick) and flattening orders are always written in full.
    """
    if meta.get("purpose") != "entry" or meta.get("source") == "manual" or "pick" in meta:
        return None
    strategy = meta.get("strategy")
    return (strategy, ticker, side) if isinstance(strategy, str) else None


@dataclass(slots=True)
class Streak:
    """Refusals of one key for one cause, the first of them recorded."""

    key: Key
    cause: str  # a short stable name: the reject reason, with the limit for a risk limit
    first_id: str  # client order id of the recorded refusal
    first_ts: datetime  # bar of the recorded refusal
    last_ts: datetime  # bar of the latest refusal
    count: int = 1  # refusals so far, the recorded one included
    quiet_id: str | None = None  # the quiet entry waiting for the next open, if any
    quiet_meta: dict[str, Any] | None = None  # its ``orders.reason`` document

    def detail(self, account: str) -> dict[str, Any]:
        """The ``order.refused_repeatedly`` audit detail (and log fields) of this streak."""
        strategy, ticker, side = self.key
        return {"account": account, "strategy": strategy, "ticker": ticker, "side": side,
                "cause": self.cause, "first_client_order_id": self.first_id,
                "count": self.count, "first_ts": self.first_ts.isoformat(),
                "last_ts": self.last_ts.isoformat()}

    def _dump(self) -> list[Any]:
        return [*self.key, self.cause, self.first_id, self.first_ts.isoformat(),
                self.last_ts.isoformat(), self.count, self.quiet_id, self.quiet_meta]

    @classmethod
    def _load(cls, item: list[Any]) -> Streak:
        strategy, ticker, side, cause, first_id, first_ts, last_ts, count, quiet, meta = item
        return cls(key=(strategy, ticker, side), cause=cause, first_id=first_id,
                   first_ts=datetime.fromisoformat(first_ts),
                   last_ts=datetime.fromisoformat(last_ts), count=int(count), quiet_id=quiet,
                   quiet_meta=meta)


class Streaks:
    """The open streaks of one account, and whether they changed since the last store."""

    def __init__(self, *, enabled: bool = True) -> None:
        # False: nothing goes quiet and every refusal is written; entries held quietly before
        # (stored by a trader that had them on) are written when they resolve.
        self.enabled = enabled
        self.open: dict[Key, Streak] = {}
        # entries if flat: client order id -> (ticker, side, orders.reason document)
        self.if_flat: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.dirty = False  # changed since loaded or last stored: store with the batch

    def __len__(self) -> int:
        return len(self.open)

    def quiet(self, key: Key | None) -> bool:
        """True when a new decision of ``key`` should be held quietly (its streak is open)."""
        return self.enabled and key is not None and key in self.open

    def hold(self, key: Key, client_id: str, meta: dict[str, Any]) -> None:
        """Remember the quiet entry ``client_id`` of ``key``'s open streak (stored with it)."""
        streak = self.open[key]
        streak.quiet_id, streak.quiet_meta = client_id, meta
        self.dirty = True

    def hold_if_flat(self, client_id: str, ticker: str, side: str, meta: dict[str, Any]
                     ) -> None:
        """Remember the entry ``client_id``, for the next open if the position is gone then."""
        self.if_flat[client_id] = (ticker, side, meta)
        self.dirty = True

    def drop_if_flat(self, client_id: str) -> None:
        """The entry ``client_id`` was judged at its open (dropped or taken as an entry)."""
        if self.if_flat.pop(client_id, None) is not None:
            self.dirty = True

    def held(self) -> list[Streak]:
        """The streaks holding a quiet entry (to put back into the pending entries on load)."""
        return [s for s in self.open.values() if s.quiet_id is not None]

    def refused(self, key: Key, client_id: str, cause: str, ts: datetime
                ) -> tuple[bool, Streak | None]:
        """An entry of ``key`` was refused for ``cause`` at bar ``ts``.

        Returns (record it, the streak this ended if it had repeats). The streak's quiet entry
        refused for the streak's cause is only counted; any other refusal is recorded and
        (re)starts the streak.
        """
        current = self.open.get(key)
        if current is not None and current.quiet_id == client_id:  # the streak's quiet entry
            current.quiet_id = current.quiet_meta = None
            self.dirty = True
            if self.enabled and current.cause == cause:
                current.count += 1
                current.last_ts = ts
                return False, None
        if self.enabled:
            self.open[key] = Streak(key=key, cause=cause, first_id=client_id, first_ts=ts,
                                    last_ts=ts)
            self.dirty = True
        elif self.open.pop(key, None) is not None:
            self.dirty = True
        return True, _repeated(current)

    def end(self, key: Key) -> Streak | None:
        """``key``'s entry was accepted (or dropped): its streak ends; returned if it repeated."""
        current = self.open.pop(key, None)
        if current is None:
            return None
        self.dirty = True
        return _repeated(current)

    def sweep(self, tickers: Container[str], released: Container[Key]) -> list[Streak]:
        """End the streaks whose ticker had a bar in this batch but released no entry of the
        key (the signal went away); the ended ones that had repeats."""
        gone = [k for k, s in self.open.items()
                if k[1] in tickers and k not in released and s.quiet_id is None]
        ended: list[Streak] = []
        for key in gone:
            streak = self.end(key)
            if streak is not None:
                ended.append(streak)
        return ended

    def dump(self) -> dict[str, Any] | None:
        """The JSON document stored in ``paper_accounts.quiet_state`` (None: nothing open)."""
        if not self.open and not self.if_flat:
            return None
        doc: dict[str, Any] = {"v": _VERSION, "streaks": [s._dump() for s in self.open.values()]}
        if self.if_flat:
            doc["if_flat"] = [[cid, *item] for cid, item in self.if_flat.items()]
        return doc

    @classmethod
    def load(cls, doc: dict[str, Any] | None, *, enabled: bool = True) -> Streaks:
        """The streaks stored by :meth:`dump` (an unknown version is dropped: nothing quiet)."""
        out = cls(enabled=enabled)
        if not doc or doc.get("v") != _VERSION:
            return out
        for item in doc.get("streaks", ()):
            streak = Streak._load(item)
            out.open[streak.key] = streak
        for cid, ticker, side, meta in doc.get("if_flat", ()):
            out.if_flat[cid] = (ticker, side, meta)
        return out


def _repeated(streak: Streak | None) -> Streak | None:
    return streak if streak is not None and streak.count > 1 else None
