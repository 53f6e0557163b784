"""The vectorised path (one ticker, no intrabar levels) equals the event loop, bit for bit."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from falcon.backtest import engine
from falcon.backtest.results import BacktestConfig
from falcon.domain.rules import Direction, RiskRules, Sizing, SizingKind

from .frames import bars, sma_cross
from .test_book_replay import random_frame

CONFIGS = [
    BacktestConfig(),
    BacktestConfig(cash=2_500, commission=0.002, commission_per_share=0.01, slippage_bps=7),
]
RULES = [
    RiskRules(),
    RiskRules(direction=Direction.LONG_SHORT),
    RiskRules(max_bars=5, sizing=Sizing(kind=SizingKind.FRACTION, value=0.3)),
    RiskRules(
        direction=Direction.LONG_SHORT, max_bars=3, sizing=Sizing(kind=SizingKind.SHARES, value=40)
    ),
]


def same(frame: pl.DataFrame, risk: RiskRules, config: BacktestConfig) -> None:
    fast = engine._run(frame, risk, config, vectorised=True)
    loop = engine._run(frame, risk, config, vectorised=False)
    for name in ("trades", "open_trades", "equity", "rejections"):
        assert_frame_equal(getattr(fast, name), getattr(loop, name), check_exact=True)
    assert dict(fast.metrics) == dict(loop.metrics)


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("risk", RULES)
@pytest.mark.parametrize("config", CONFIGS)
def test_vectorised_path_equals_event_loop(
    seed: int, risk: RiskRules, config: BacktestConfig
) -> None:
    frame = sma_cross(
        random_frame(seed, n=600).drop(["entry_long", "exit_long", "entry_short", "exit_short"]),
        5,
        12,
    )
    same(frame, risk, config)


def test_rejections_agree_when_cash_runs_out() -> None:
    pricey = [(100.0, 100.0, 100.0, 100.0)] * 2 + [(20_000.0, 20_000.0, 20_000.0, 20_000.0)] * 3
    frame = bars(pricey + [(100.0, 100.0, 100.0, 100.0)] * 2, entry_long=[2, 4], exit_long=[3])
    same(frame, RiskRules(), BacktestConfig())
