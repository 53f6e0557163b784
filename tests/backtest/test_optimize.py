"""The parameter search: grids, constraints, sampling, and the best found by running each
candidate directly."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from falcon.backtest.optimize import (
    candidates,
    default_grid,
    optimize_spec,
    parse_constraint,
    parse_grid,
    rank,
)
from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import backtest_spec
from falcon.config import Settings, load_settings
from falcon.errors import ValidationError
from falcon.strategy import builtin_document, builtin_spec

from .sample_home import sample_home

CONFIG = BacktestConfig(cash=10_000, commission=0.0005)
START, END = date(2016, 1, 4), date(2017, 12, 29)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_home(tmp_path_factory)


@pytest.fixture
def market(home: Path) -> Settings:
    return load_settings({"home": str(home)})


def test_parse_grid_and_constraints() -> None:
    assert parse_grid(["fast=5:20:5", "slow=20,40", "k=0.5:1.5:0.5", "n=3:5"]) == {
        "fast": [5, 10, 15, 20], "slow": [20, 40], "k": [0.5, 1.0, 1.5], "n": [3, 4, 5]}
    assert parse_grid(["fast=5:19:5"]) == {"fast": [5, 10, 15]}
    for bad in ("fast", "fast=", "fast=a:b", "fast=5:1", "fast=1:5:0", "1x=1"):
        with pytest.raises(ValidationError):
            parse_grid([bad])
    with pytest.raises(ValidationError, match="given twice"):
        parse_grid(["a=1", "a=2"])
    c = parse_constraint("fast<slow")
    assert c.holds({"fast": 5, "slow": 20}) and not c.holds({"fast": 20, "slow": 20})
    assert parse_constraint(" k >= 1.5 ").holds({"k": 2})
    for bad in ("fast < ", "__import__('os')", "fast < slow; 1", "a ** b"):
        with pytest.raises(ValidationError):
            parse_constraint(bad)
    with pytest.raises(ValidationError, match="unknown parameter"):
        parse_constraint("fast < other").holds({"fast": 1})


def test_candidates_and_sampling() -> None:
    grid: dict[str, list[float]] = {"a": [1, 2, 3], "b": [10, 20]}
    every = candidates(grid)
    assert every == [{"a": a, "b": b} for a in (1, 2, 3) for b in (10, 20)]
    sample = candidates(grid, sample=4, seed=7)
    assert len(sample) == 4 and all(s in every for s in sample)
    assert len({tuple(s.values()) for s in sample}) == 4
    assert sample == candidates(grid, sample=4, seed=7)
    assert sorted(map(str, candidates(grid, sample=99))) == sorted(map(str, every))
    huge = {f"p{i}": list(range(100)) for i in range(4)}
    with pytest.raises(ValidationError, match="--random"):
        candidates(huge)
    assert len(candidates(huge, sample=5)) == 5
    declared = default_grid(builtin_spec("sma_cross"), exclude=["slow"])
    assert declared == {"fast": list(range(2, 101))}


def test_finds_the_best_of_a_grid_by_running_each_candidate(market: Settings) -> None:
    doc = builtin_document("sma_cross")
    grid: dict[str, list[float]] = {"fast": [3, 5, 10], "slow": [10, 20, 40]}
    symbols = ["AAPL", "MSFT"]
    search = optimize_spec(market, doc, symbols=symbols, grid=grid, start=START, end=END,
                           config=CONFIG, objective="sharpe",
                           constraints=[parse_constraint("fast < slow")], jobs=1)
    assert search.counts() == {"candidates": 9, "ran": 8, "errors": 0, "skipped": 1}
    direct = {}
    for params in candidates(grid):
        if params["fast"] >= params["slow"]:
            continue
        outcome = backtest_spec(market, builtin_spec("sma_cross", params), symbols=symbols,
                                start=START, end=END, config=CONFIG)
        direct[(params["fast"], params["slow"])] = outcome.metrics
    best = max(direct, key=lambda k: direct[k]["sharpe"])
    assert search.best is not None
    assert (search.best.params["fast"], search.best.params["slow"]) == best
    for trial in search.ranked:
        assert trial.metrics == direct[(trial.params["fast"], trial.params["slow"])]
    # Minimising drawdown ranks the same trials the other way round.
    by_dd = rank(search.trials, "max_drawdown_pct")
    assert by_dd[0].metrics == min(direct.values(), key=lambda m: m["max_drawdown_pct"])


def test_process_pool_agrees_and_invalid_values_are_errors(market: Settings) -> None:
    doc = builtin_document("sma_cross")
    grid: dict[str, list[float]] = {"fast": [1, 4, 8], "slow": [15, 25]}  # fast=1 < its min 2
    kwargs = {"symbols": ["NVDA"], "grid": grid, "start": START, "end": END, "config": CONFIG,
              "objective": "return_pct"}
    serial = optimize_spec(market, doc, jobs=1, **kwargs)  # type: ignore[arg-type]
    pooled = optimize_spec(market, doc, jobs=2, **kwargs)  # type: ignore[arg-type]
    assert [t.as_dict() for t in serial.trials] == [t.as_dict() for t in pooled.trials]
    assert serial.counts() == {"candidates": 6, "ran": 4, "errors": 2, "skipped": 0}
    errors = [t for t in serial.trials if t.error]
    assert all("below its minimum" in (t.error or "") for t in errors)
    assert serial.as_dict()["best_params"] == serial.ranked[0].params
    with pytest.raises(ValidationError, match="unknown objective"):
        optimize_spec(market, doc, jobs=1, **{**kwargs, "objective": "luck"})  # type: ignore[arg-type]
