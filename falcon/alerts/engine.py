"""The alert engine: evaluates rules on every incoming bar and on trading events.

The paper trader owns the bar stream and calls :meth:`AlertEngine.on_bar` (or
:meth:`AlertEngine.on_bars` for a batch) for every bar it reads, and the event hooks
(:meth:`on_fill`, :meth:`on_halt`, :meth:`on_screen`, :meth:`on_stale`, :meth:`on_service_down`)
when those happen. :meth:`AlertEngine.run` drives the engine from any
:class:`~falcon.paper.sources.BarSource` on its own (tests, the benchmark).

Why it is fast: rules are indexed by ticker and kind, so a bar only meets the rules on its own
ticker; price crosses and % moves are a few float comparisons in Python; indicator conditions keep a
rolling numpy window per ticker and advance one streaming evaluator per distinct condition per call
(``falcon.alerts.indicator``). Nothing touches the database unless a rule fires.

Everything a call fires is claimed and queued in one transaction by
:class:`~falcon.alerts.outbox.AlertWriter`, on a connection the engine keeps: the rules'
``last_fired_at`` taken by ``UPDATE ... RETURNING`` guarded by their cooldowns (so two processes
never both fire a rule inside its cooldown), and the :class:`~falcon.db.models.AlertEvent` rows
with ``latency_ms`` (bar arrival to the alert written) and their outbox rows for the claimed
ones. On PostgreSQL that is one statement, one round trip; on SQLite a few statements sent
straight to the driver under the process's write lock. A delivery worker in the same process is
woken right after the commit. :attr:`AlertEngine.timing` tells where the last call's time went
(scan, indicators, queueing).

Bar rules use the bar's time for the cooldown and the market-hours check, so a replay behaves as
the live day did; event rules use the wall clock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from falcon.alerts.indicator import CompiledCondition, Windows, compile_condition, evaluate
from falcon.alerts.outbox import AlertWriter, Claim, NewAlert
from falcon.alerts.rules import cooldown_allows, in_market_hours
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import session_factory
from falcon.db.models import AlertRule, PaperAccount, ScreenPick
from falcon.db.types import utcnow
from falcon.domain.market import Bar

log = logging.getLogger(__name__)

__all__ = ["AlertEngine", "FiredAlert", "Timing"]


@dataclass
class Timing:
    """Where the last :meth:`AlertEngine.on_bars` call spent its time, in milliseconds.

    ``indicator_ms`` (``indicator_queries`` distinct conditions evaluated) is apart from
    ``scan_ms`` (price crosses, % moves, and pushing bars into the indicator windows) so that a
    benchmark can tell the indicator evaluator's cost from the rest; ``queue_ms`` is claiming
    the cooldowns and writing the outbox (the transaction, commit included).
    """

    scan_ms: float = 0.0
    indicator_ms: float = 0.0
    indicator_queries: int = 0
    queue_ms: float = 0.0


@dataclass(frozen=True)
class FiredAlert:
    """An alert the engine queued."""

    event_id: int
    rule_id: int
    ticker: str | None
    message: str
    latency_ms: float


@dataclass
class _Rule:
    id: int
    name: str
    kind: str
    params: dict[str, Any]
    channels: list[str]
    cooldown_s: int
    market_hours_only: bool
    last_fired_at: datetime | None
    cond: CompiledCondition | None = None
    last_value: bool | None = None  # indicator: the condition on the previous bar


@dataclass
class _Candidate:
    rule: _Rule
    ticker: str | None
    message: str
    at: datetime  # the time that counts for the cooldown


@dataclass
class _Ticker:
    """Per-ticker state that survives rule reloads."""

    prev_close: float | None = None
    closes: deque[float] = field(default_factory=lambda: deque(maxlen=1))
    timed: deque[tuple[datetime, float]] = field(default_factory=deque)
    max_minutes: int = 0


@dataclass
class _Index:
    price: dict[str, list[_Rule]] = field(default_factory=dict)
    pct: dict[str, list[_Rule]] = field(default_factory=dict)
    ind: dict[str, list[_Rule]] = field(default_factory=dict)
    events: dict[str, list[_Rule]] = field(default_factory=dict)
    count: int = 0


class AlertEngine:
    """Evaluates alert rules; the one object the trader and the services hold.

    Example::

        alerts = AlertEngine(engine)
        for bar in source.bars():
            trader.on_bar(bar)
            alerts.on_bar(bar, arrived_at=utcnow())
    """

    def __init__(self, engine: Engine, settings: AlertSettings | None = None, *,
                 clock: Callable[[], datetime] = utcnow, auto_reload: bool = True) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self._writer = AlertWriter(engine)
        self.settings = settings or AlertSettings()
        self._clock = clock
        self._auto_reload = auto_reload
        self._tickers: dict[str, _Ticker] = {}
        self._windows = Windows()
        self._index = _Index()
        self._loaded_at = 0.0
        #: The last bar call's time split (see :class:`Timing`).
        self.timing = Timing()
        self.reload_rules()

    # --- rules -------------------------------------------------------------------------------

    @property
    def rule_count(self) -> int:
        """Enabled rules currently indexed."""
        return self._index.count

    def reload_rules(self) -> None:
        """Read the enabled rules again (new, removed, edited ones); bar state is kept."""
        old = {r.id: r for rules in self._all_lists() for r in rules}
        with self._sessions() as s:
            rows = s.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))).all()
        index = _Index()
        for row in rows:
            rule = _Rule(row.id, row.name, row.kind, dict(row.params or {}),
                         list(row.channels or []), row.cooldown_s, row.market_hours_only,
                         row.last_fired_at)
            prior = old.get(row.id)
            if prior is not None and prior.params == rule.params:
                rule.last_value = prior.last_value
                if prior.last_fired_at and (not rule.last_fired_at
                                            or prior.last_fired_at > rule.last_fired_at):
                    rule.last_fired_at = prior.last_fired_at
            try:
                self._add(index, rule)
            except Exception as exc:  # one broken row must not stop every other alert
                log.warning("alert rule %s (%s) skipped: %s", row.id, row.name, exc)
        self._index = index
        self._loaded_at = time.monotonic()

    def _all_lists(self) -> Iterable[list[_Rule]]:
        i = self._index
        for table in (i.price, i.pct, i.ind, i.events):
            yield from table.values()

    def _add(self, index: _Index, rule: _Rule) -> None:
        p = rule.params
        if rule.kind == "price_cross":
            float(p["level"])
            index.price.setdefault(p["ticker"], []).append(rule)
        elif rule.kind == "pct_move":
            state = self._tickers.setdefault(p["ticker"], _Ticker())
            if "bars" in p and int(p["bars"]) + 1 > (state.closes.maxlen or 0):
                state.closes = deque(state.closes, maxlen=int(p["bars"]) + 1)
            if "minutes" in p:
                state.max_minutes = max(state.max_minutes, int(p["minutes"]))
            index.pct.setdefault(p["ticker"], []).append(rule)
        elif rule.kind == "indicator":
            rule.cond = compile_condition(p["condition"])
            self._windows.want(p["ticker"], rule.cond.window)
            index.ind.setdefault(p["ticker"], []).append(rule)
        else:
            index.events.setdefault(rule.kind, []).append(rule)
        index.count += 1

    def _maybe_reload(self) -> None:
        age = time.monotonic() - self._loaded_at
        if self._auto_reload and age >= self.settings.rules_refresh_s:
            self.reload_rules()

    # --- bars --------------------------------------------------------------------------------

    def on_bar(self, bar: Bar, arrived_at: datetime | None = None) -> list[FiredAlert]:
        """Evaluate the rules of ``bar.ticker``; queue what fires. Call for every bar, in order."""
        return self.on_bars([bar], arrived_at)

    def on_bars(self, bars: Sequence[Bar], arrived_at: datetime | None = None) -> list[FiredAlert]:
        """Evaluate a batch (usually one timestamp's bars); one transaction for what fires."""
        arrived = arrived_at or self._clock()
        started = time.perf_counter()
        timing = self.timing = Timing()
        self._maybe_reload()
        index = self._index
        found: list[_Candidate] = []
        pending: dict[str, tuple[CompiledCondition, list[str]]] = {}
        for bar in bars:
            t = bar.ticker
            state = self._tickers.get(t)
            if state is None:
                state = self._tickers[t] = _Ticker()
            prev = state.prev_close
            for rule in index.price.get(t, ()):
                self._price(rule, bar, prev, found)
            self._remember(state, bar)
            for rule in index.pct.get(t, ()):
                self._pct(rule, bar, state, found)
            state.prev_close = bar.close
            if self._windows.tracks(t):
                self._windows.push(bar)
                for rule in index.ind.get(t, ()):
                    cond = rule.cond
                    if cond is not None:
                        pending.setdefault(cond.text, (cond, []))[1].append(t)
        scanned = time.perf_counter()
        timing.scan_ms = (scanned - started) * 1000.0
        if pending:
            self._indicators(pending, bars, index, found)
            timing.indicator_ms = (time.perf_counter() - scanned) * 1000.0
            timing.indicator_queries = len(pending)
        return self._fire(found, arrived) if found else []

    def _remember(self, state: _Ticker, bar: Bar) -> None:
        if state.closes.maxlen and state.closes.maxlen > 1:
            state.closes.append(bar.close)
        if state.max_minutes:
            state.timed.append((bar.ts, bar.close))
            horizon = bar.ts - timedelta(minutes=state.max_minutes)
            # Keep the newest bar at or before the horizon: it is the reference price.
            while len(state.timed) > 1 and state.timed[1][0] <= horizon:
                state.timed.popleft()

    @staticmethod
    def _price(rule: _Rule, bar: Bar, prev: float | None, found: list[_Candidate]) -> None:
        if prev is None:
            return  # a cross needs a bar on the other side first
        level = rule.params["level"]
        if rule.params["direction"] == "above":
            hit = prev <= level < bar.close
        else:
            hit = prev >= level > bar.close
        if hit:
            found.append(_Candidate(rule, bar.ticker, f"{bar.ticker} crossed "
                                    f"{rule.params['direction']} {level:g}: close {bar.close:g} "
                                    f"(was {prev:g})", bar.ts))

    @staticmethod
    def _pct(rule: _Rule, bar: Bar, state: _Ticker, found: list[_Candidate]) -> None:
        p = rule.params
        ref: float | None = None
        if "bars" in p:
            n = p["bars"]
            if len(state.closes) > n:
                ref = state.closes[-n - 1]
            window = f"{n} bars"
        else:
            horizon = bar.ts - timedelta(minutes=p["minutes"])
            if state.timed and state.timed[0][0] <= horizon:
                ref = state.timed[0][1]
            window = f"{p['minutes']} min"
        if ref is None or ref <= 0:
            return
        change = (bar.close / ref - 1.0) * 100.0
        direction = p["direction"]
        if ((direction == "up" and change >= p["pct"])
                or (direction == "down" and change <= -p["pct"])
                or (direction == "any" and abs(change) >= p["pct"])):
            found.append(_Candidate(rule, bar.ticker, f"{bar.ticker} moved {change:+.2f}% in "
                                    f"{window}: {ref:g} -> {bar.close:g}", bar.ts))

    def _indicators(self, pending: dict[str, tuple[CompiledCondition, list[str]]],
                    bars: Sequence[Bar], index: _Index, found: list[_Candidate]) -> None:
        last_bar = {b.ticker: b for b in bars}
        for text, (cond, tickers) in pending.items():
            try:
                values = evaluate(cond, self._windows, list(dict.fromkeys(tickers)))
            except Exception as exc:  # bad data for one condition must not stop the others
                log.warning("alert condition %r failed: %s", text, exc)
                continue
            for ticker, value in values.items():
                for rule in index.ind.get(ticker, ()):
                    if rule.cond is None or rule.cond.text != text:
                        continue
                    before, rule.last_value = rule.last_value, value
                    edge = rule.params.get("mode", "edge") == "edge"
                    if value and (not edge or before is False):
                        bar = last_bar[ticker]
                        found.append(_Candidate(rule, ticker, f"{ticker}: {text} "
                                                f"(close {bar.close:g})", bar.ts))

    # --- events ------------------------------------------------------------------------------

    def on_fill(self, fill: Any) -> list[FiredAlert]:
        """A fill (a :class:`~falcon.db.models.Fill` row or anything with its fields)."""
        now = self._clock()
        self._maybe_reload()
        rules = self._index.events.get("fill", ())
        if not rules:
            return []  # the trader calls this for every fill: no query when no rule listens
        found = []
        account = self._account_names().get(fill.account_id, str(fill.account_id))
        for rule in rules:
            want_acct, want_ticker = rule.params.get("account"), rule.params.get("ticker")
            if want_acct and want_acct not in (account, str(fill.account_id)):
                continue
            if want_ticker and want_ticker != fill.ticker:
                continue
            msg = (f"Filled {fill.side} {fill.qty} {fill.ticker} @ {float(fill.price):.2f} "
                   f"(account {account})")
            found.append(_Candidate(rule, fill.ticker, msg, now))
        return self._fire(found, now) if found else []

    def on_halt(self, account: Any) -> list[FiredAlert]:
        """A risk halt of ``account`` (a :class:`~falcon.db.models.PaperAccount`)."""
        now = self._clock()
        self._maybe_reload()
        found = []
        for rule in self._index.events.get("halt", ()):
            want = rule.params.get("account")
            if want and want not in (account.name, str(account.id)):
                continue
            reason = getattr(account, "halt_reason", None) or "risk limit"
            found.append(_Candidate(rule, None, f"Trading halted on account {account.name}: "
                                    f"{reason}", now))
        return self._fire(found, now) if found else []

    def on_screen(self, run: Any) -> list[FiredAlert]:
        """A finished screen run (a :class:`~falcon.db.models.ScreenRun`); reads its picks."""
        now = self._clock()
        self._maybe_reload()
        rules = [r for r in self._index.events.get("screen_pick", ())
                 if r.params.get("profile") == run.profile]
        if not rules:
            return []
        with self._sessions() as s:
            picks = list(s.scalars(select(ScreenPick.ticker).where(ScreenPick.run_id == run.id)
                                   .order_by(ScreenPick.rank)))
        found = []
        for rule in rules:
            want = rule.params.get("ticker")
            if want and want not in picks:
                continue
            if not picks:
                continue
            shown = want or ", ".join(picks[:10]) + (" ..." if len(picks) > 10 else "")
            found.append(_Candidate(rule, want, f"Screen {run.profile} ({run.as_of}) picked "
                                    f"{shown}", now))
        return self._fire(found, now) if found else []

    def on_stale(self, stale: Any) -> list[FiredAlert]:
        """Data went stale (a :class:`~falcon.paper.sources.StaleData`)."""
        now = self._clock()
        self._maybe_reload()
        found = []
        for rule in self._index.events.get("stale", ()):
            want = rule.params.get("ticker")
            if want and want != stale.ticker:
                continue
            last = stale.last_bar.isoformat() if stale.last_bar else "never"
            found.append(_Candidate(rule, stale.ticker, f"Stale data: {stale.ticker} last bar "
                                    f"{last}", now))
        return self._fire(found, now) if found else []

    def on_service_down(self, name: str, reason: str | None = None) -> list[FiredAlert]:
        """A service stopped or failed its health check."""
        now = self._clock()
        self._maybe_reload()
        found = []
        for rule in self._index.events.get("service_down", ()):
            want = rule.params.get("service")
            if want and want != name:
                continue
            found.append(_Candidate(rule, None, f"Service down: {name}"
                                    + (f" ({reason})" if reason else ""), now))
        return self._fire(found, now) if found else []

    def _account_names(self) -> dict[int, str]:
        with self._sessions() as s:
            return {i: n for i, n in s.execute(select(PaperAccount.id, PaperAccount.name))}

    # --- firing ------------------------------------------------------------------------------

    def _fire(self, found: list[_Candidate], arrived: datetime) -> list[FiredAlert]:
        started = time.perf_counter()
        # Cooldown and market hours in memory first; inside one batch a rule's later candidate
        # counts from its earlier one (a minute of bars can hold several of one ticker).
        ready: list[_Candidate] = []
        first: dict[int, _Candidate] = {}
        last_at: dict[int, datetime] = {}
        for c in found:
            rid = c.rule.id
            if c.rule.market_hours_only and not in_market_hours(c.at):
                continue
            if not cooldown_allows(last_at.get(rid, c.rule.last_fired_at), c.at,
                                   c.rule.cooldown_s):
                continue
            first.setdefault(rid, c)
            last_at[rid] = c.at
            ready.append(c)
        if not ready:
            return []
        # The guard (enabled, fired last no later than its first candidate's cutoff) is what
        # keeps two processes from both firing a rule inside its cooldown.
        claims = [Claim(rid, c.at - timedelta(seconds=c.rule.cooldown_s), last_at[rid])
                  for rid, c in first.items()]
        written = self._writer.write(
            claims, [NewAlert(c.rule.id, c.rule.channels, c.message, c.ticker) for c in ready],
            arrived)
        fired = [FiredAlert(i, c.rule.id, c.ticker, c.message, written.latency_ms or 0.0)
                 for i, c in zip(written.ids, ready, strict=True) if i is not None]
        # Only after the commit: had it failed, the rule must still be free to fire.
        for f in fired:
            first[f.rule_id].rule.last_fired_at = last_at[f.rule_id]
        self.timing.queue_ms = (time.perf_counter() - started) * 1000.0
        return fired

    def close(self) -> None:
        """Give back the connection the engine queues alerts on (taken again when needed)."""
        self._writer.close()

    # --- standalone ----------------------------------------------------------------------------

    def run(self, source: Any, *, batched: bool = False) -> int:
        """Feed every bar of a BarSource (``batches()`` when ``batched``); alerts fired."""
        total = 0
        if batched and hasattr(source, "batches"):
            for batch in source.batches():
                total += len(self.on_bars(batch))
        else:
            for bar in source.bars():
                total += len(self.on_bar(bar))
        return total
