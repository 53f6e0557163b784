"""Parameter search: a grid, or a random sample of it, ranked by one objective.

::

    grid = {"fast": [5, 10, 15], "slow": [20, 40, 60]}
    found = optimize_spec(settings, document, symbols=["AAPL"], grid=grid, objective="sharpe",
                          constraints=[parse_constraint("fast < slow")], jobs=2)
    found.best.params, found.best.metrics["sharpe"]

Every candidate is a full backtest through :func:`falcon.backtest.service.backtest_frame` on bars
read once (with the warm-up the most demanding candidate needs), so the best candidate's figures
are exactly those of ``falcon backtest run`` with its parameters. Candidates run in a pool of
processes (``jobs``; spawned, not forked: polars' thread pool does not survive a fork), each
given the bars once when it starts.

A candidate the spec rejects (a value outside a parameter's min/max) is reported as an error; one
that breaks a ``--constraint`` (``fast < slow``) is skipped without running. The spec language
has no constraints of its own yet, hence the option.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from multiprocessing import get_context
from typing import Any

import polars as pl

from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import (
    ProgressFn,
    Window,
    backtest_frame,
    jsonable,
    load_bars,
    plan_window,
)
from falcon.config import Settings
from falcon.errors import FalconError, ValidationError
from falcon.strategy import StrategySpec, load_spec

__all__ = [
    "MAX_CANDIDATES",
    "OBJECTIVES",
    "Constraint",
    "Evaluator",
    "Search",
    "Trial",
    "auto_jobs",
    "candidates",
    "check_objective",
    "default_grid",
    "max_warmup",
    "optimize_spec",
    "parse_constraint",
    "parse_grid",
    "rank",
]

#: Objectives and whether higher is better.
OBJECTIVES: dict[str, bool] = {
    "sharpe": True, "sortino": True, "calmar": True, "return_pct": True, "cagr_pct": True,
    "final_equity": True, "profit_factor": True, "expectancy": True, "win_rate_pct": True,
    "avg_trade_pct": True, "max_drawdown_pct": False,
}
MAX_CANDIDATES = 20_000
_AUTO_POOL_MIN = 40  # candidates (at ~20 ms each on a Pi-class core) before a pool pays off
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"-?\d+(?:\.\d+)?"
_CONSTRAINT = re.compile(rf"^\s*({_NAME}|{_NUMBER})\s*(<=|>=|==|!=|<|>)\s*({_NAME}|{_NUMBER})\s*$")


# --- describing the search -------------------------------------------------------------------


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValidationError(f"{what}: {text!r} is not a finite number")
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


def _steps(lo: float, hi: float, step: float, what: str) -> list[float]:
    if step <= 0:
        raise ValidationError(f"{what}: step must be > 0")
    if hi < lo:
        raise ValidationError(f"{what}: {hi:g} is below {lo:g}")
    count = math.floor((hi - lo) / step + 1e-9) + 1
    if count > MAX_CANDIDATES:
        raise ValidationError(f"{what}: {count} values is too many")
    whole = all(isinstance(v, int) for v in (lo, hi, step))
    return [int(lo + i * step) if whole else round(lo + i * step, 10) for i in range(count)]


def parse_grid(items: Iterable[str]) -> dict[str, list[float]]:
    """``["fast=5:20:5", "slow=20,40"]`` -> ``{"fast": [5, 10, 15, 20], "slow": [20, 40]}``.

    ``lo:hi:step`` includes ``hi`` when it falls on a step; ``lo:hi`` steps by 1.
    """
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(_NAME, name) or not spec.strip():
            raise ValidationError(f"--grid {item!r}: expected NAME=LO:HI[:STEP] or NAME=V1,V2")
        what = f"--grid {name}"
        if ":" in spec:
            parts = [_number(p.strip(), what) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValidationError(f"{what}: expected LO:HI or LO:HI:STEP")
            values = _steps(parts[0], parts[1], parts[2] if len(parts) == 3 else 1, what)
        else:
            values = list(dict.fromkeys(_number(p.strip(), what) for p in spec.split(",")))
        if name in grid:
            raise ValidationError(f"{what}: given twice")
        grid[name] = values
    return grid


def default_grid(spec: StrategySpec, exclude: Iterable[str] = ()) -> dict[str, list[float]]:
    """Each parameter's declared ``min..max`` by ``step`` (1 when not declared)."""
    skip = set(exclude)
    grid: dict[str, list[float]] = {}
    for name, p in spec.param_specs.items():
        if name in skip or p.min is None or p.max is None:
            continue
        whole = isinstance(p.default, int) and float(p.min).is_integer() \
            and float(p.max).is_integer()
        step = p.step if p.step is not None else 1
        lo, hi = (int(p.min), int(p.max)) if whole else (p.min, p.max)
        grid[name] = _steps(lo, hi, int(step) if whole and float(step).is_integer() else step,
                            f"params.{name}")
    if not grid:
        raise ValidationError(f"{spec.name} declares no parameter ranges: give --grid")
    return grid


@dataclass(frozen=True)
class Constraint:
    """``left op right`` over parameter names and numbers, e.g. ``fast < slow``."""

    left: str
    op: str
    right: str

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def _value(self, term: str, params: Mapping[str, float]) -> float:
        if re.fullmatch(_NUMBER, term):
            return float(term)
        if term not in params:
            raise ValidationError(f"constraint {self}: unknown parameter {term!r}")
        return float(params[term])

    def holds(self, params: Mapping[str, float]) -> bool:
        """True when ``params`` satisfy the constraint."""
        return _OPS[self.op](self._value(self.left, params), self._value(self.right, params))


def parse_constraint(text: str) -> Constraint:
    """``"fast < slow"`` -> :class:`Constraint` (a comparison, never evaluated as Python)."""
    found = _CONSTRAINT.match(text)
    if found is None:
        raise ValidationError(f"constraint {text!r}: expected NAME OP NAME|NUMBER with OP one of "
                              + " ".join(_OPS))
    return Constraint(found.group(1), found.group(2), found.group(3))


def candidates(
    grid: Mapping[str, Sequence[float]], *, sample: int | None = None, seed: int = 0
) -> list[dict[str, float]]:
    """Every combination of ``grid`` (in order), or ``sample`` distinct ones drawn at random."""
    names = list(grid)
    sizes = [len(grid[n]) for n in names]
    if not names or 0 in sizes:
        raise ValidationError("the parameter grid is empty")
    total = math.prod(sizes)
    if sample is None:
        if total > MAX_CANDIDATES:
            raise ValidationError(f"the grid has {total} combinations (at most {MAX_CANDIDATES}):"
                                  " narrow it or sample it with --random N")
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(grid[n] for n in names))]
    if sample < 1:
        raise ValidationError("--random must be at least 1")
    picks = random.Random(seed).sample(range(total), min(sample, total))  # noqa: S311 - not crypto
    out = []
    for index in picks:  # decode a mixed-radix index: no need to list a huge grid
        combo: dict[str, float] = {}
        for name, size in zip(reversed(names), reversed(sizes), strict=True):
            index, digit = divmod(index, size)
            combo[name] = grid[name][digit]
        out.append({n: combo[n] for n in names})
    return out


# --- running it ------------------------------------------------------------------------------


@dataclass
class Trial:
    """One candidate: its parameters and either its metrics, an error, or why it was skipped."""

    params: dict[str, float]
    metrics: dict[str, Any] | None = None
    error: str | None = None
    skipped: str | None = None

    def score(self, objective: str) -> float | None:
        """The objective's value (None when it has none)."""
        value = (self.metrics or {}).get(objective)
        return float(value) if isinstance(value, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for the stored run and ``--json``)."""
        out: dict[str, Any] = {"params": self.params}
        if self.metrics is not None:
            out["metrics"] = self.metrics
        if self.error is not None:
            out["error"] = self.error
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


def rank(trials: Sequence[Trial], objective: str) -> list[Trial]:
    """Trials that ran, best first; ties keep candidate order; no value ranks last."""
    higher = OBJECTIVES[objective]

    def key(item: tuple[int, Trial]) -> tuple[bool, float, int]:
        value = item[1].score(objective)
        if value is None:
            return (True, 0.0, item[0])
        return (False, -value if higher else value, item[0])

    ran = [(i, t) for i, t in enumerate(trials) if t.metrics is not None]
    return [t for _, t in sorted(ran, key=key)]


_WORKER: dict[str, Any] = {}


def _init_worker(bars: pl.DataFrame, config: BacktestConfig) -> None:
    _WORKER["bars"], _WORKER["config"] = bars, config


def _run_one(task: tuple[StrategySpec, Window]) -> tuple[dict[str, Any] | None, str | None]:
    spec, window = task
    try:
        result, _, _ = backtest_frame(spec, _WORKER["bars"], window, _WORKER["config"])
    except FalconError as exc:
        return None, str(exc)
    return jsonable(dict(result.metrics)), None


class Evaluator:
    """Runs candidates of one document on preloaded bars, in a process pool when ``jobs > 1``.

    Use as a context manager so the pool (and the bars each process holds) lives across several
    searches, as walk-forward needs.
    """

    def __init__(self, document: dict[str, Any], bars: pl.DataFrame, config: BacktestConfig,
                 *, fixed: Mapping[str, float] | None = None, jobs: int = 1) -> None:
        self.document, self.bars, self.config = document, bars, config
        self.fixed = dict(fixed or {})
        self.jobs = max(1, jobs)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def spec(self, params: Mapping[str, float]) -> StrategySpec:
        """The spec with the fixed parameters and ``params`` applied (ValidationError if not)."""
        return load_spec(self.document, {**self.fixed, **params})

    def _pool_for(self, count: int) -> ProcessPoolExecutor | None:
        if self.jobs < 2 or count < 2:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=get_context("spawn"),
                initializer=_init_worker, initargs=(self.bars, self.config))
        return self._pool

    def run(
        self,
        params_list: Sequence[dict[str, float]],
        *,
        start: date | None,
        end: date | None,
        constraints: Sequence[Constraint] = (),
        progress: ProgressFn | None = None,
    ) -> list[Trial]:
        """One :class:`Trial` per candidate, in candidate order."""
        trials = [Trial(params=dict(p)) for p in params_list]
        tasks: list[tuple[int, tuple[StrategySpec, Window]]] = []
        for i, trial in enumerate(trials):
            merged = {**self.fixed, **trial.params}
            broken = [str(c) for c in constraints if not c.holds(merged)]
            if broken:
                trial.skipped = "breaks " + ", ".join(broken)
                continue
            try:
                spec = self.spec(trial.params)
                window = plan_window(spec.timeframe, start, end, spec.warmup_bars)
            except ValidationError as exc:
                trial.error = "; ".join(exc.problems) or str(exc)
                continue
            tasks.append((i, (spec, window)))
        done = 0

        def record(i: int, outcome: tuple[dict[str, Any] | None, str | None]) -> None:
            nonlocal done
            trials[i].metrics, trials[i].error = outcome
            done += 1
            if progress is not None:
                progress(done / max(len(tasks), 1), f"{done}/{len(tasks)} candidates")

        pool = self._pool_for(len(tasks))
        if pool is None:
            _init_worker(self.bars, self.config)
            for i, task in tasks:
                record(i, _run_one(task))
            return trials
        futures: dict[Future[tuple[dict[str, Any] | None, str | None]], int] = {
            pool.submit(_run_one, task): i for i, task in tasks}
        try:
            for future in as_completed(futures):
                record(futures[future], future.result())
        finally:
            for future in futures:
                future.cancel()
        return trials


@dataclass(frozen=True)
class Search:
    """What a parameter search found."""

    objective: str
    grid: dict[str, list[float]]
    fixed: dict[str, float]
    trials: list[Trial]
    ranked: list[Trial] = field(repr=False)
    symbols: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None

    @property
    def best(self) -> Trial | None:
        """The best trial by the objective (None when nothing ran)."""
        return self.ranked[0] if self.ranked else None

    def counts(self) -> dict[str, int]:
        """How many candidates ran, failed and were skipped."""
        return {"candidates": len(self.trials), "ran": len(self.ranked),
                "errors": sum(t.error is not None for t in self.trials),
                "skipped": sum(t.skipped is not None for t in self.trials)}

    def as_dict(self, top: int | None = None) -> dict[str, Any]:
        """JSON-able: objective, best, counts and the ranked trials (``top`` of them)."""
        best = self.best
        failures = [t.as_dict() for t in self.trials if t.metrics is None]
        return jsonable({
            "objective": self.objective, "grid": self.grid, "fixed": self.fixed,
            "best_params": best.params if best else None,
            "best": best.metrics if best else None,
            **self.counts(),
            "results": [t.as_dict() for t in self.ranked[:top]],
            "failures": failures[:50],
        })


def check_objective(objective: str) -> None:
    """ValidationError for an unknown objective."""
    if objective not in OBJECTIVES:
        raise ValidationError(f"unknown objective {objective!r} (one of {', '.join(OBJECTIVES)})")


def auto_jobs(jobs: int | None, count: int) -> int:
    """``jobs`` when given; else every core once there are enough candidates to pay for
    starting the processes (about two seconds each on a small machine), else 1."""
    if jobs is not None:
        return max(1, jobs)
    return (os.cpu_count() or 1) if count >= _AUTO_POOL_MIN else 1


def max_warmup(evaluator: Evaluator, params_list: Sequence[dict[str, float]]) -> int:
    """The longest warm-up any valid candidate needs (the bars to read before the start)."""
    most = 0
    for params in params_list:
        try:
            most = max(most, evaluator.spec(params).warmup_bars)
        except ValidationError:
            continue
    return most


def optimize_spec(
    settings: Settings,
    document: dict[str, Any],
    *,
    symbols: Sequence[str],
    grid: Mapping[str, Sequence[float]],
    start: date | None = None,
    end: date | None = None,
    config: BacktestConfig,
    fixed: Mapping[str, float] | None = None,
    objective: str = "sharpe",
    sample: int | None = None,
    seed: int = 0,
    constraints: Sequence[Constraint] = (),
    jobs: int | None = None,
    progress: ProgressFn | None = None,
) -> Search:
    """Search ``grid`` (or ``sample`` random points of it) for the best ``objective`` of the
    strategy ``document`` on ``symbols`` over ``start..end``."""
    check_objective(objective)
    params_list = candidates(grid, sample=sample, seed=seed)
    workers = auto_jobs(jobs, len(params_list))
    base = load_spec(document, dict(fixed or {}))
    with Evaluator(document, pl.DataFrame(), config, fixed=fixed, jobs=workers) as probe:
        warmup = max_warmup(probe, params_list)
    window = plan_window(base.timeframe, start, end, warmup)
    bars = load_bars(settings, base.timeframe, symbols, window)
    with Evaluator(document, bars, config, fixed=fixed, jobs=workers) as evaluator:
        trials = evaluator.run(params_list, start=start, end=end, constraints=constraints,
                               progress=progress)
    tickers = tuple(sorted({s.strip().upper() for s in symbols}))
    return Search(objective=objective, grid={k: list(v) for k, v in grid.items()},
                  fixed=dict(fixed or {}), trials=trials, ranked=rank(trials, objective),
                  symbols=tickers, start=start, end=end)
