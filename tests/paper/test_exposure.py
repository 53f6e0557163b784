"""The risk view kept per ticker (decisions.Exposure) decides exactly as a walk over every
position would, under random markets with tight sector and strategy caps."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import Fill, Order, Ticker
from falcon.paper.decisions import Entries
from falcon.paper.limits import RiskView

from .helpers import LOOSE, bar, days, make_account, slot, trader

TICKERS = [f"T{i}" for i in range(12)]
SECTORS = ["Tech", "Energy", "Health"]


def _walk(self: Entries, ticker: str, strategy: str | None, equity: float,
          marks: dict[str, float]) -> RiskView:
    """The risk view by a walk over every position (what Exposure replaced)."""
    t = self.t
    state = t.state
    sector = t.sectors.get(ticker) or "unknown"
    sector_x = strategy_x = 0.0
    own = state.ledger.marks
    positions = state.ledger.positions
    for tk, pos in positions.items():
        # Entered at this open: valued at its fill price, as the sizing's equity values it.
        price = (pos.avg_cost if state.entry_ts.get(tk) == t._now
                 else marks.get(tk, own.get(tk, pos.avg_cost)))
        value = abs(pos.qty) * price
        if (t.sectors.get(tk) or "unknown") == sector:
            sector_x += value
        if strategy is not None and state.strategy_of.get(tk) == strategy:
            strategy_x += value
    entries = sum(1 for o in state.book.open_orders if not o.is_exit_leg
                  and (state.meta.get(o.id) or {}).get("purpose") == "entry")
    return RiskView(equity=equity, open_positions=len(positions) + entries,
                    sector_exposure=sector_x, strategy_exposure=strategy_x)


def _run(sessions: sessionmaker[Session], seed: int) -> list[tuple[object, ...]]:
    make_account(sessions, cash=100_000.0)
    with transaction(sessions) as s:
        s.add_all([Ticker(ticker=t, sector=SECTORS[i % 3]) for i, t in enumerate(TICKERS)])
    limits = LOOSE.merged({"max_position_pct": 0.2, "max_sector_pct": 0.3,
                           "max_strategy_pct": 0.45, "max_open_positions": 9})
    slots = [slot("even", TICKERS[::2], entry="close > open", exit_="close < open * 0.99",
                  sizing={"kind": "fraction", "value": 0.12}),
             slot("odd", TICKERS[1::2], entry="close > open", exit_="close < open * 0.99",
                  sizing={"kind": "fraction", "value": 0.12})]
    t = trader(sessions, slots, limits=limits)
    rng = np.random.default_rng(seed)
    price = rng.uniform(20, 200, len(TICKERS))
    for ts in days(date(2024, 1, 2), 30):
        moves = np.exp(rng.normal(0, 0.03, len(TICKERS)))
        batch = []
        for i, tk in enumerate(TICKERS):
            o = float(price[i])
            c = float(price[i] * moves[i])
            batch.append(bar(tk, ts, o, max(o, c) * 1.005, min(o, c) * 0.995, c))
            price[i] = c
        t.process(batch)
    with sessions() as s:
        fills = s.execute(select(Fill.ticker, Fill.side, Fill.qty, Fill.price, Fill.ts)
                          .order_by(Fill.id)).tuples().all()
        refused = s.execute(select(Order.ticker, Order.reject_reason, Order.reason)
                            .where(Order.status == "rejected").order_by(Order.id)).tuples().all()
    return [*fills, *refused]


def _fresh(path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return session_factory(engine)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exposure_decides_as_the_walk(tmp_path: Path, seed: int,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _run(_fresh(tmp_path / "kept.db"), seed)
    monkeypatch.setattr(Entries, "_view", _walk)
    walked = _run(_fresh(tmp_path / "walked.db"), seed)
    assert kept == walked
    assert any(r[1] == "risk_limit" for r in kept if len(r) == 3)  # the caps did bite
