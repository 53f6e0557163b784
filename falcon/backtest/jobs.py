"""Backtests, optimisations and walk-forwards as requests: run now (the CLI) or by a worker (jobs
of kind ``backtest``, ``optimize`` and ``walkforward``, registered in
:data:`falcon.jobs.registry.BUILTIN_HANDLERS`).

A request is a JSON payload; the CLI builds the same payload it would queue, so a queued run and
a local one cannot differ. Payload keys::

    strategy: "sma_cross"          # a built-in, or a stored strategy's name
    strategy_id: 3                 # or a stored strategy (the strategies table)
    spec: {...}                    # or a strategy document
    params: {"fast": 5}            # parameter overrides; direction: "long_short" (optional)
    symbols: ["AAPL", "MSFT"]      # default: the strategy's universe tickers
    start: "2016-01-04", end: "2018-12-31"
    cash, commission, commission_per_share, slippage_bps   # default: settings.trading
    # optimize and walkforward:
    grid: {"fast": [5, 10], "slow": "20:60:10"}, random: 50, seed: 0,
    objective: "sharpe", constraints: ["fast < slow"], jobs: 2
    # walkforward: train: 504, test: 126, step: 126, anchored: false

Example::

    with sessions.begin() as s:
        submit(s, "backtest", {"strategy": "sma_cross", "symbols": ["AAPL"]})

A handler builds its settings like every Falcon process (``falcon.toml``, ``FALCON_*``) and
records the job's id on the run it stores: a job delivered twice returns the run it already
wrote instead of writing another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from falcon.backtest.service import ProgressFn, jsonable
from falcon.config import Settings
from falcon.errors import FalconError, NotFound, ValidationError
from falcon.jobs.registry import Progress
from falcon.strategy import StrategySpec

__all__ = [
    "Request",
    "Resolved",
    "execute",
    "resolve_request",
    "run_backtest_job",
    "run_optimize_job",
    "run_walkforward_job",
    "symbols_arg",
]

KINDS = ("backtest", "optimize", "walkforward")
_COSTS = ("cash", "commission", "commission_per_share", "slippage_bps")
_COMMON = {"strategy", "strategy_id", "spec", "params", "direction", "symbols", "start", "end",
           *_COSTS, "strategy_name", "requested_by"}
_SEARCH = {"grid", "random", "seed", "objective", "constraints", "jobs"}
_WALK = {"train", "test", "step", "anchored"}
_ALLOWED = {"backtest": _COMMON, "optimize": _COMMON | _SEARCH,
            "walkforward": _COMMON | _SEARCH | _WALK}


def _date(value: Any, key: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationError(f"{key}: expected a date like 2018-01-31, got {value!r}") from None


def _int(value: Any, key: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{key}: expected a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Request:
    """A validated backtest, optimisation or walk-forward request (see the module docstring)."""

    kind: str
    strategy: str | None = None
    strategy_id: int | None = None
    spec: dict[str, Any] | None = None
    params: dict[str, float] = field(default_factory=dict)
    direction: str | None = None
    symbols: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None
    costs: dict[str, float] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    random: int | None = None
    seed: int = 0
    objective: str = "sharpe"
    constraints: tuple[str, ...] = ()
    jobs: int | None = None
    train: int | None = None
    test: int | None = None
    step: int | None = None
    anchored: bool = False

    @classmethod
    def from_payload(cls, kind: str, payload: dict[str, Any]) -> Request:
        """Validate a job payload (it comes from the database: the web and CLI write it)."""
        if kind not in KINDS:
            raise ValidationError(f"unknown backtest request kind {kind!r}")
        unknown = sorted(set(payload) - _ALLOWED[kind])
        if unknown:
            raise ValidationError(f"{kind} request: unknown keys {', '.join(unknown)}")
        sources = [k for k in ("strategy_id", "spec") if payload.get(k) is not None]
        if not sources and payload.get("strategy") is not None:
            sources = ["strategy"]
        if len(sources) != 1:
            raise ValidationError(f"{kind} request: give one of strategy, strategy_id or spec")
        name, spec = payload.get("strategy"), payload.get("spec")
        if sources == ["strategy"] and not isinstance(name, str):
            raise ValidationError("strategy: expected a name")
        if spec is not None and not isinstance(spec, dict):
            raise ValidationError("spec: expected a strategy document (an object)")
        params = payload.get("params") or {}
        if not isinstance(params, dict):
            raise ValidationError("params: expected an object")
        symbols = payload.get("symbols") or []
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValidationError("symbols: expected a list of tickers")
        grid = payload.get("grid") or {}
        if not isinstance(grid, dict):
            raise ValidationError("grid: expected an object of name -> values or 'lo:hi:step'")
        constraints = payload.get("constraints") or []
        if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
            raise ValidationError("constraints: expected a list of strings like 'fast < slow'")
        costs = {k: v for k in _COSTS if (v := _number(payload.get(k), k)) is not None}
        return cls(
            kind=kind,
            strategy=name if sources == ["strategy"] else None,
            strategy_id=_int(payload.get("strategy_id"), "strategy_id", minimum=1),
            spec=spec, params=params, direction=payload.get("direction"),
            symbols=tuple(s.strip().upper() for s in symbols if s.strip()),
            start=_date(payload.get("start"), "start"), end=_date(payload.get("end"), "end"),
            costs=costs, grid=grid, random=_int(payload.get("random"), "random", minimum=1),
            seed=_int(payload.get("seed"), "seed") or 0,
            objective=str(payload.get("objective") or "sharpe"),
            constraints=tuple(constraints), jobs=_int(payload.get("jobs"), "jobs", minimum=1),
            train=_int(payload.get("train"), "train", minimum=1),
            test=_int(payload.get("test"), "test", minimum=1),
            step=_int(payload.get("step"), "step", minimum=1),
            anchored=bool(payload.get("anchored", False)),
        )

    def payload(self) -> dict[str, Any]:
        """The JSON payload to queue this request as a job (only the keys its kind reads)."""
        raw = asdict(self)
        raw.pop("kind")
        costs = raw.pop("costs")
        out = {k: v for k, v in raw.items() if k in _ALLOWED[self.kind]}
        out.update(costs)
        out["symbols"] = list(self.symbols)
        out["constraints"] = list(self.constraints)
        found: dict[str, Any] = jsonable({k: v for k, v in out.items()
                                          if v not in (None, (), [], {})})
        return found


@dataclass(frozen=True)
class Resolved:
    """The strategy of a request: its spec (params applied), document and stored row's id."""

    spec: StrategySpec
    document: dict[str, Any]
    strategy_id: int | None


def resolve_request(request: Request, sessions: sessionmaker[Session] | None) -> Resolved:
    """The strategy a request names: a built-in, a stored strategy, or a document."""
    from falcon.backtest.service import resolve_spec
    from falcon.strategy import builtin_names

    document, strategy_id = request.spec, request.strategy_id
    if request.strategy is not None and request.strategy in builtin_names():
        spec = resolve_spec(name=request.strategy, params=request.params,
                            direction=request.direction)
        return Resolved(spec, spec.raw, None)
    if document is None:
        from sqlalchemy import select

        from falcon.db.models import Strategy

        if sessions is None:
            raise NotFound(f"no built-in strategy {request.strategy!r} "
                           f"(built-in: {', '.join(builtin_names())})")
        with sessions() as session:
            stmt = (select(Strategy).where(Strategy.id == strategy_id) if strategy_id
                    else select(Strategy).where(Strategy.name == request.strategy))
            row = session.scalar(stmt)
            if row is None:
                what = f"id {strategy_id}" if strategy_id else repr(request.strategy)
                raise NotFound(f"no strategy {what} (built-in: {', '.join(builtin_names())}; "
                               "stored: `falcon research list`)")
            document, strategy_id = dict(row.spec), row.id
    spec = resolve_spec(document=document, params=request.params, direction=request.direction)
    return Resolved(spec, spec.raw, strategy_id)


def _grid(request: Request, spec: StrategySpec) -> dict[str, list[float]]:
    from falcon.backtest.optimize import default_grid, parse_grid

    if not request.grid:
        if request.random is None:
            raise ValidationError("give a parameter grid (--grid NAME=LO:HI:STEP), or --random N "
                                  "to sample the parameters' declared ranges")
        return default_grid(spec, exclude=request.params)
    items = []
    for name, values in request.grid.items():
        text = values if isinstance(values, str) else ",".join(str(v) for v in values)
        items.append(f"{name}={text}")
    grid = parse_grid(items)
    unknown = sorted(set(grid) - set(spec.param_specs))
    if unknown:
        raise ValidationError(f"--grid: unknown parameter(s) {', '.join(unknown)} "
                              f"({spec.name} has: {', '.join(spec.param_specs) or 'none'})")
    return grid


def execute(
    settings: Settings,
    sessions: sessionmaker[Session] | None,
    request: Request,
    *,
    store: bool = True,
    progress: ProgressFn | None = None,
    job_id: int | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run ``request`` now; store it unless ``store`` is False (then ``sessions`` may be None
    for a built-in strategy). Returns the JSON summary (with ``run_id``) and the full result
    (an :class:`~falcon.backtest.service.Outcome`, a :class:`~falcon.backtest.optimize.Search`
    or a :class:`~falcon.backtest.walkforward.WalkForward`)."""
    from falcon.backtest import store as runs
    from falcon.backtest.service import backtest_spec, config_from

    resolved = resolve_request(request, sessions)
    spec = resolved.spec
    config = config_from(settings, **request.costs)
    symbols = request.symbols or spec.universe.tickers or ()
    config_doc = {k: getattr(config, k) for k in _COSTS}
    run_id: int | None = None
    if request.kind == "backtest":
        outcome = backtest_spec(settings, spec, symbols=symbols, start=request.start,
                                end=request.end, config=config, progress=progress)
        if store and sessions is not None:
            with sessions.begin() as session:
                run_id = runs.save_outcome(session, outcome, strategy_id=resolved.strategy_id,
                                           job_id=job_id)
        summary = {"run_id": run_id, **_outcome_summary(outcome)}
        return jsonable(summary), outcome
    from falcon.backtest.optimize import parse_constraint

    grid = _grid(request, spec)
    constraints = [parse_constraint(c) for c in request.constraints]
    search_args: dict[str, Any] = {
        "symbols": symbols, "grid": grid, "start": request.start, "end": request.end,
        "config": config, "fixed": request.params, "objective": request.objective,
        "sample": request.random, "seed": request.seed, "constraints": constraints,
        "jobs": request.jobs, "progress": progress,
    }
    if request.kind == "optimize":
        from falcon.backtest.optimize import optimize_spec

        search = optimize_spec(settings, resolved.document, **search_args)
        if store and sessions is not None:
            with sessions.begin() as session:
                run_id = runs.save_search(session, search, document=resolved.document,
                                          strategy_name=spec.name, config=config_doc,
                                          strategy_id=resolved.strategy_id, job_id=job_id)
        out = {"run_id": run_id, "strategy": spec.name, **search.as_dict(top=20)}
        return jsonable(out), search
    from falcon.backtest.walkforward import walkforward_spec

    if request.train is None or request.test is None:
        raise ValidationError("walk-forward needs --train and --test (in sessions)")
    wf = walkforward_spec(settings, resolved.document, train=request.train, test=request.test,
                          step=request.step, anchored=request.anchored, **search_args)
    if store and sessions is not None:
        with sessions.begin() as session:
            run_id = runs.save_walkforward(session, wf, document=resolved.document,
                                           strategy_name=spec.name, config=config_doc,
                                           strategy_id=resolved.strategy_id, job_id=job_id)
            found = runs.get_run(session, run_id).metrics or {}
            folds = found.get("folds", [])
    else:
        folds = wf.as_dict()["folds"]
    out = {"run_id": run_id, "strategy": spec.name, **wf.as_dict(), "folds": folds}
    return jsonable(out), wf


def _outcome_summary(outcome: Any) -> dict[str, Any]:
    result = outcome.result
    return {
        "strategy": outcome.spec.name, "params": outcome.spec.params,
        "symbols": list(outcome.symbols), "start": outcome.window.start or outcome.first,
        "end": outcome.window.end or outcome.last, "first_bar": outcome.first,
        "last_bar": outcome.last, "warmup_bars": outcome.spec.warmup_bars,
        "warmup_from": outcome.window.warmup_from, "bars": result.equity.height,
        **outcome.metrics,
        "open_trades": result.open_trades.height, "rejections": result.rejections.height,
    }


# --- job handlers ----------------------------------------------------------------------------


def _run_job(kind: str, payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from falcon.backtest import store as runs
    from falcon.config import load_settings
    from falcon.db.engine import engine_for, session_factory

    request = Request.from_payload(kind, payload)
    settings = load_settings()
    engine = engine_for(settings)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as session:
            earlier = runs.find_by_job(session, progress.job_id, kind)
            if earlier is not None and earlier.status == "done":
                return {**runs.run_summary(earlier), "run_id": earlier.id, "repeated": True}
            if earlier is not None:  # a failed attempt's row: this attempt replaces it
                runs.delete_run(session, earlier.id)
        try:
            summary, _ = execute(settings, sessions, request, progress=progress,
                                 job_id=progress.job_id)
        except FalconError as exc:
            _record_failure(sessions, kind, request, payload, progress.job_id, str(exc))
            raise
    finally:
        engine.dispose()
    if kind != "backtest":  # keep the job's result small: the run row has the details
        summary = {k: v for k, v in summary.items() if k not in ("results", "failures")}
    result: dict[str, Any] = jsonable(summary)
    return result


def _record_failure(sessions: sessionmaker[Session], kind: str, request: Request,
                    payload: dict[str, Any], job_id: int, error: str) -> None:
    """A failed run row, so that the dashboard shows what was asked and why it failed."""
    from falcon.backtest import store as runs

    name = str(request.strategy or payload.get("strategy_name") or request.strategy_id or "?")
    with sessions.begin() as session:
        runs.save_run(session, kind=kind, strategy_name=name, spec=request.spec or {},
                      params=request.params, symbols=list(request.symbols), start=request.start,
                      end=request.end, metrics={"request": payload}, status="failed",
                      error=error, job_id=job_id)


def run_backtest_job(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The ``backtest`` job: one backtest, stored; the result is its summary and run id."""
    return _run_job("backtest", payload, progress)


def run_optimize_job(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The ``optimize`` job: a parameter search, stored; the result is the best and run id."""
    return _run_job("optimize", payload, progress)


def run_walkforward_job(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The ``walkforward`` job: a walk-forward analysis, stored with its window runs."""
    return _run_job("walkforward", payload, progress)


def symbols_arg(text: str | None) -> tuple[str, ...]:
    """``"AAPL, msft"`` -> ``("AAPL", "MSFT")`` (for the CLI)."""
    return tuple(s.strip().upper() for s in (text or "").split(",") if s.strip())
