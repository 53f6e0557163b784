"""Walk-forward windows, and out-of-sample figures equal to direct runs on each window."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import pytest

from falcon.backtest.optimize import candidates
from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import backtest_spec
from falcon.backtest.walkforward import make_folds, walkforward_spec
from falcon.calendar import trading_days
from falcon.config import Settings, load_settings
from falcon.errors import ValidationError
from falcon.strategy import builtin_document, builtin_spec

from .sample_home import sample_home

CONFIG = BacktestConfig(cash=10_000, commission=0.001)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_home(tmp_path_factory)


@pytest.fixture
def market(home: Path) -> Settings:
    return load_settings({"home": str(home)})


def _days(n: int) -> list[date]:
    return [date(2020, 1, 1) + timedelta(days=i) for i in range(n)]


@pytest.mark.parametrize(("train", "test", "step", "anchored"),
                         [(10, 5, None, False), (10, 5, 7, False), (3, 4, 4, True),
                          (20, 1, 1, False)])
def test_folds_tile_without_overlap(train: int, test: int, step: int | None,
                                    anchored: bool) -> None:
    days = _days(60)
    folds = make_folds(days, train=train, test=test, step=step, anchored=anchored)
    index = {d: i for i, d in enumerate(days)}
    for k, fold in enumerate(folds):
        lo, hi = index[fold.test_start], index[fold.test_end]
        assert hi - lo + 1 == test
        assert index[fold.train_end] == lo - 1  # in-sample ends right before out-of-sample
        assert index[fold.train_start] == (0 if anchored else lo - train)
        assert lo == train + k * (step or test)
        if k:
            assert folds[k - 1].test_end < fold.test_start  # out-of-sample never overlaps
    # As many whole test windows as fit, and the next would not.
    assert index[folds[-1].test_end] + (step or test) + test > len(days) - 1 or (
        index[folds[-1].test_end] + (step or test) >= len(days))
    with pytest.raises(ValidationError, match="overlap"):
        make_folds(days, train=10, test=5, step=4)
    with pytest.raises(ValidationError, match="at least 75 sessions"):
        make_folds(days, train=50, test=25)


def test_out_of_sample_equals_direct_runs(market: Settings) -> None:
    doc = builtin_document("sma_cross")
    grid: dict[str, list[float]] = {"fast": [5, 10], "slow": [20, 40]}
    symbols = ["AAPL", "MSFT"]
    wf = walkforward_spec(market, doc, symbols=symbols, grid=grid, start=date(2014, 1, 2),
                          end=date(2017, 12, 29), train=252, test=126, config=CONFIG,
                          objective="sharpe", jobs=1)
    assert len(wf.folds) == 5
    for result in wf.folds:
        fold = result.fold
        assert result.best_params is not None and result.out_of_sample is not None
        chosen = builtin_spec("sma_cross", result.best_params)
        oos = backtest_spec(market, chosen, symbols=symbols, start=fold.test_start,
                            end=fold.test_end, config=CONFIG)
        assert oos.metrics == result.out_of_sample
        assert oos.first == fold.test_start and oos.last == fold.test_end
        # The choice is the in-sample argmax over direct runs of every candidate.
        in_sample = {tuple(p.values()): backtest_spec(
            market, builtin_spec("sma_cross", p), symbols=symbols, start=fold.train_start,
            end=fold.train_end, config=CONFIG).metrics for p in candidates(grid)}
        best = max(in_sample, key=lambda k: in_sample[k]["sharpe"] or -math.inf)
        assert tuple(result.best_params.values()) == best
        assert result.in_sample == in_sample[best]
    # The aggregate chains the windows: its return compounds theirs.
    chained = math.prod(1 + f.out_of_sample["return_pct"] / 100  # type: ignore[index]
                        for f in wf.folds) - 1
    assert wf.aggregate["return_pct"] == pytest.approx(chained * 100)
    assert wf.aggregate["trades"] == sum(f.out_of_sample["trades"]  # type: ignore[index]
                                         for f in wf.folds)
    summary = wf.as_dict()
    ins = [f.in_sample["sharpe"] for f in wf.folds]  # type: ignore[index]
    oos_s = [f.out_of_sample["sharpe"] for f in wf.folds]  # type: ignore[index]
    if sum(ins) > 0:
        assert summary["efficiency"] == pytest.approx(sum(oos_s) / sum(ins))
    assert len(summary["folds"]) == 5 and summary["folds"][0]["test_start"] == (
        wf.folds[0].fold.test_start.isoformat())


def test_without_start_the_first_window_waits_for_the_warmup(market: Settings) -> None:
    doc = builtin_document("sma_cross")
    wf = walkforward_spec(market, doc, symbols=["MSFT"], grid={"slow": [30, 60]},
                          end=date(2014, 12, 31), train=200, test=100, config=CONFIG, jobs=1)
    sessions = trading_days(date(2013, 1, 2), date(2014, 12, 31))  # the sample has no gaps
    assert wf.folds[0].fold.train_start == sessions[60]  # the longest warm-up: slow=60
    assert len(wf.folds) == (len(sessions) - 60 - 200) // 100
