"""Walk-forward analysis: optimise on a rolling in-sample window, trade the next window with the
parameters it chose, move on.

::

    wf = walkforward_spec(settings, document, symbols=["AAPL", "MSFT"], grid=grid,
                          train=504, test=126, config=config)
    wf.aggregate["sharpe"], wf.efficiency, [f.best_params for f in wf.folds]

Windows are counted in sessions that have bars (the union over the symbols) from ``start`` to
``end``. Fold k trains on ``train`` sessions and tests on the ``test`` sessions right after
them; the next fold starts ``step`` sessions later (``step`` defaults to ``test`` and may not be
smaller: out-of-sample windows never overlap, so each session is traded at most once). With
``anchored`` every training window starts at the first session instead (an expanding window).
Without ``start``, the first training window begins once the longest warm-up is in the data.

Each out-of-sample run is exactly :func:`falcon.backtest.service.backtest_spec` over its test
window with the chosen parameters: its indicators warm up on the bars before the window (which
the in-sample period already saw, so nothing leaks from the future), and it starts flat with the
starting cash. The aggregate chains the out-of-sample equity curves, each scaled to begin where
the previous one ended, and computes the usual metrics over that curve and all the windows'
trades. Walk-forward efficiency is the mean out-of-sample objective over the mean in-sample
objective (``efficiency``) and the same for CAGR (``efficiency_cagr``); 1.0 means the
out-of-sample period did as well as the optimised in-sample one, near 0 or negative that the
optimisation mostly fitted noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from falcon.backtest.metrics import compute_metrics
from falcon.backtest.optimize import (
    Constraint,
    Evaluator,
    auto_jobs,
    candidates,
    check_objective,
    max_warmup,
    rank,
)
from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import (
    Outcome,
    ProgressFn,
    backtest_frame,
    jsonable,
    load_bars,
    plan_window,
)
from falcon.config import Settings
from falcon.errors import ValidationError
from falcon.strategy import load_spec

__all__ = ["Fold", "FoldResult", "WalkForward", "make_folds", "stitch", "walkforward_spec"]


@dataclass(frozen=True)
class Fold:
    """One in-sample/out-of-sample pair of windows (inclusive session dates)."""

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dates."""
        return {"index": self.index, "train_start": self.train_start.isoformat(),
                "train_end": self.train_end.isoformat(), "test_start": self.test_start.isoformat(),
                "test_end": self.test_end.isoformat()}


def make_folds(
    sessions: Sequence[date], *, train: int, test: int, step: int | None = None,
    anchored: bool = False,
) -> list[Fold]:
    """The folds over ``sessions`` (sorted, distinct); only whole test windows are used."""
    step = test if step is None else step
    if train < 1 or test < 1:
        raise ValidationError("--train and --test must be at least 1 session")
    if step < test:
        raise ValidationError(f"--step ({step}) must be at least --test ({test}): out-of-sample "
                              "windows would overlap")
    folds: list[Fold] = []
    i = 0
    while i + train + test <= len(sessions):
        first = 0 if anchored else i
        folds.append(Fold(len(folds), sessions[first], sessions[i + train - 1],
                          sessions[i + train], sessions[i + train + test - 1]))
        i += step
    if not folds:
        raise ValidationError(f"walk-forward needs at least {train + test} sessions "
                              f"(--train {train} + --test {test}); the range has {len(sessions)}")
    return folds


@dataclass
class FoldResult:
    """A fold: the parameters the in-sample search chose and how they did on both sides."""

    fold: Fold
    best_params: dict[str, float] | None
    in_sample: dict[str, Any] | None
    out_of_sample: dict[str, Any] | None
    counts: dict[str, int]
    objective: str
    outcome: Outcome | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def efficiency(self) -> float | None:
        """Out-of-sample objective / in-sample objective (None unless in-sample is > 0)."""
        return _ratio((self.out_of_sample or {}).get(self.objective),
                      (self.in_sample or {}).get(self.objective))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (without the out-of-sample trades and equity)."""
        out: dict[str, Any] = jsonable({
            **self.fold.as_dict(), "best_params": self.best_params,
            "in_sample": self.in_sample, "out_of_sample": self.out_of_sample,
            "efficiency": self.efficiency, **self.counts,
        })
        if self.error:
            out["error"] = self.error
        return out


def _ratio(oos: Any, ins: Any) -> float | None:
    if isinstance(oos, int | float) and isinstance(ins, int | float) and ins > 0:
        return float(oos) / float(ins)
    return None


def _mean(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float)]
    return sum(nums) / len(nums) if nums else None


@dataclass(frozen=True)
class WalkForward:
    """The folds and the aggregate out-of-sample figures."""

    objective: str
    symbols: tuple[str, ...]
    folds: list[FoldResult]
    aggregate: dict[str, Any]
    settings: dict[str, Any]

    def _paired(self, key: str) -> tuple[float | None, float | None]:
        pairs = [(f.in_sample or {}, f.out_of_sample or {}) for f in self.folds
                 if f.in_sample is not None and f.out_of_sample is not None]
        return _mean([o.get(key) for _, o in pairs]), _mean([i.get(key) for i, _ in pairs])

    @property
    def efficiency(self) -> float | None:
        """Mean out-of-sample objective / mean in-sample objective."""
        return _ratio(*self._paired(self.objective))

    @property
    def efficiency_cagr(self) -> float | None:
        """Mean out-of-sample CAGR / mean in-sample CAGR."""
        return _ratio(*self._paired("cagr_pct"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form: settings, every fold, the aggregate and the efficiencies."""
        oos, ins = self._paired(self.objective)
        found: dict[str, Any] = jsonable({
            "objective": self.objective, **self.settings, "symbols": list(self.symbols),
            "folds": [f.as_dict() for f in self.folds], "aggregate": self.aggregate,
            "mean_in_sample": ins, "mean_out_of_sample": oos,
            "efficiency": self.efficiency, "efficiency_cagr": self.efficiency_cagr,
        })
        return found


def stitch(outcomes: Sequence[Outcome], cash: float) -> dict[str, Any]:
    """Metrics of the out-of-sample runs chained into one account (see the module docstring)."""
    if not outcomes:
        return {}
    capital = cash
    curves, trades, exposure, bars = [], [], 0.0, 0
    for outcome in outcomes:
        result = outcome.result
        scale = capital / result.config.cash
        curve = result.equity.select("ts", pl.col("equity") * scale)
        curves.append(curve)
        trades.append(result.trades.select(pl.col("pnl") * scale, "return_pct"))
        capital = float(curve.get_column("equity")[-1])
        exposure += float(result.metrics.get("exposure_pct") or 0.0) * curve.height
        bars += curve.height
    metrics = compute_metrics(equity=pl.concat(curves), trades=pl.concat(trades),
                              starting_cash=cash, exposure_pct=exposure / bars if bars else None)
    metrics["windows"] = len(outcomes)
    found: dict[str, Any] = jsonable(metrics)
    return found


def walkforward_spec(
    settings: Settings,
    document: dict[str, Any],
    *,
    symbols: Sequence[str],
    grid: Mapping[str, Sequence[float]],
    train: int,
    test: int,
    config: BacktestConfig,
    step: int | None = None,
    anchored: bool = False,
    start: date | None = None,
    end: date | None = None,
    fixed: Mapping[str, float] | None = None,
    objective: str = "sharpe",
    sample: int | None = None,
    seed: int = 0,
    constraints: Sequence[Constraint] = (),
    jobs: int | None = None,
    progress: ProgressFn | None = None,
) -> WalkForward:
    """Run a walk-forward analysis of the strategy ``document`` (see the module docstring)."""
    check_objective(objective)
    params_list = candidates(grid, sample=sample, seed=seed)
    base = load_spec(document, dict(fixed or {}))
    with Evaluator(document, pl.DataFrame(), config, fixed=fixed) as probe:
        warmup = max_warmup(probe, params_list)
    bars = load_bars(settings, base.timeframe, symbols,
                     plan_window(base.timeframe, start, end, warmup))
    days = bars.get_column("date")
    if start is not None:
        days = days.filter(days >= start)
    sessions: list[date] = days.unique().sort().to_list()
    if start is None:
        sessions = sessions[warmup:]
    folds = make_folds(sessions, train=train, test=test, step=step, anchored=anchored)
    tickers = tuple(sorted({s.strip().upper() for s in symbols}))
    results: list[FoldResult] = []
    workers = auto_jobs(jobs, len(params_list) * len(folds))
    with Evaluator(document, bars, config, fixed=fixed, jobs=workers) as evaluator:
        for fold in folds:
            def report(fraction: float, note: str, k: int = fold.index) -> None:
                if progress is not None:
                    progress((k + fraction) / len(folds), f"window {k + 1}/{len(folds)}: {note}")

            trials = evaluator.run(params_list, start=fold.train_start, end=fold.train_end,
                                   constraints=constraints, progress=report)
            ranked = rank(trials, objective)
            counts = {"ran": len(ranked), "errors": sum(t.error is not None for t in trials),
                      "skipped": sum(t.skipped is not None for t in trials)}
            if not ranked:
                results.append(FoldResult(fold, None, None, None, counts, objective,
                                          error="no candidate could run in-sample"))
                continue
            best = ranked[0]
            spec = evaluator.spec(best.params)
            window = plan_window(spec.timeframe, fold.test_start, fold.test_end, spec.warmup_bars)
            result, first, last = backtest_frame(spec, bars, window, config)
            outcome = Outcome(spec=spec, symbols=tickers, window=window, first=first, last=last,
                              result=result)
            results.append(FoldResult(fold, dict(best.params), best.metrics, outcome.metrics,
                                      counts, objective, outcome=outcome))
    aggregate = stitch([f.outcome for f in results if f.outcome is not None], config.cash)
    return WalkForward(
        objective=objective, symbols=tickers, folds=results, aggregate=aggregate,
        settings={"train": train, "test": test, "step": step or test, "anchored": anchored,
                  "grid": {k: list(v) for k, v in grid.items()}, "fixed": dict(fixed or {}),
                  "candidates": len(params_list), "start": start or (sessions[0] if sessions
                                                                    else None), "end": end},
    )
