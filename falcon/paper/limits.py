"""Risk limits of a paper account, and the sizing of one entry under them.

The limits are one frozen value (:class:`RiskLimits`). Where they come from, later wins: the
defaults below < the account's last ``paper.limits`` entry in the audit log (written by
``falcon paper limits set``: a config change is an audit event, and the newest one is the
account's configuration) < flags given to ``falcon trader run`` / ``falcon paper replay``.

:func:`cap_entry` is pure: it takes what the trader knows (equity, exposures by sector and by
strategy, positions open) and returns how many shares an entry may buy, or the limit that refuses
it. Every limit is a separate, named check so that a log line (and a test) can point at it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falcon.errors import ValidationError

__all__ = ["EntryCheck", "RiskLimits", "RiskView", "cap_entry"]


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Account-level limits the paper trader enforces on every new entry.

    Fractions are of current equity (cash plus positions marked at their last close).

    * ``max_open_positions``: positions held plus entries in flight;
    * ``max_position_pct``: notional of one new position;
    * ``max_sector_pct``: notional of all positions in one sector (``Ticker.sector``; tickers
      without a sector count as sector "unknown");
    * ``max_strategy_pct``: notional of all positions opened by one strategy;
    * ``daily_loss_pct``: once equity is this far below the session's opening equity, no new
      entries until the next session (exits still run);
    * ``max_drawdown_pct``: once equity is this far below its peak the account is halted;
    * ``pick_risk_pct``: sizing of screener picks: equity lost if the pick's stop is hit.
    """

    max_open_positions: int = 10
    max_position_pct: float = 0.20
    max_sector_pct: float = 0.40
    max_strategy_pct: float = 0.50
    daily_loss_pct: float = 0.03
    max_drawdown_pct: float = 0.20
    pick_risk_pct: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.max_open_positions, bool) or self.max_open_positions < 1:
            raise ValidationError("max_open_positions must be >= 1")
        for name in (
            "max_position_pct",
            "max_sector_pct",
            "max_strategy_pct",
            "daily_loss_pct",
            "max_drawdown_pct",
            "pick_risk_pct",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1):
                raise ValidationError(f"{name} must be a fraction in (0, 1], got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The limits as a plain JSON-able mapping."""
        return dataclasses.asdict(self)

    def merged(self, overrides: Mapping[str, Any] | None) -> RiskLimits:
        """These limits with ``overrides`` (None values ignored); unknown keys are an error."""
        if not overrides:
            return self
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValidationError(f"unknown risk limit {unknown[0]!r} (have: {sorted(names)})")
        values = {k: v for k, v in overrides.items() if v is not None}
        if "max_open_positions" in values:
            values["max_open_positions"] = int(values["max_open_positions"])
        for key in values:
            if key != "max_open_positions":
                values[key] = float(values[key])
        return dataclasses.replace(self, **values)


@dataclass(frozen=True, kw_only=True)
class RiskView:
    """What the limits are checked against, as of the bar before the entry's fill."""

    equity: float
    open_positions: int  # positions held plus entries already submitted in this batch
    sector_exposure: float  # |notional| already in the entry's sector
    strategy_exposure: float  # |notional| already opened by the entry's strategy


@dataclass(frozen=True)
class EntryCheck:
    """The outcome of :func:`cap_entry`: shares allowed, and the limit that bit (if any)."""

    qty: int
    limit: str | None = None  # which limit cut or refused the entry
    detail: str = ""

    @property
    def refused(self) -> bool:
        """True when not even one share is allowed."""
        return self.qty < 1


def cap_entry(qty: int, price: float, view: RiskView, limits: RiskLimits) -> EntryCheck:
    """Cut ``qty`` shares at ``price`` to what the limits allow (0 = refused).

    The open-positions limit refuses outright; the notional limits cut the size down, and refuse
    when not one share fits.
    """
    if view.open_positions >= limits.max_open_positions:
        return EntryCheck(
            0,
            "max_open_positions",
            f"{view.open_positions} open, limit {limits.max_open_positions}",
        )
    equity = max(view.equity, 0.0)
    caps = (
        ("max_position_pct", equity * limits.max_position_pct),
        ("max_sector_pct", equity * limits.max_sector_pct - view.sector_exposure),
        ("max_strategy_pct", equity * limits.max_strategy_pct - view.strategy_exposure),
    )
    allowed, limit, detail = qty, None, ""
    for name, room in caps:
        fits = int(max(room, 0.0) // price) if price > 0 else 0
        if fits < allowed:
            allowed, limit = fits, name
            detail = f"room {max(room, 0.0):.2f} of equity {equity:.2f}"
    return EntryCheck(max(allowed, 0), limit, detail)
