"""Backtests, optimisations and walk-forwards as jobs: a real worker process, the handlers,
the payloads the web and ``--queue`` write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.backtest import store
from falcon.backtest.jobs import (
    Request,
    run_backtest_job,
    run_optimize_job,
    run_walkforward_job,
)
from falcon.backtest.results import BacktestConfig
from falcon.backtest.service import backtest_spec
from falcon.cli import main
from falcon.config import load_settings
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade, Job, Strategy
from falcon.errors import NotFound, ValidationError
from falcon.jobs.queue import submit
from falcon.strategy import builtin_document, builtin_spec

from .sample_home import sample_home

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_home(tmp_path_factory)


@pytest.fixture
def job_env(home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What a worker on this machine would have: the sample's home and the test database."""
    monkeypatch.setenv("FALCON_HOME", str(home))
    monkeypatch.setenv("FALCON_DATABASE_URL", db_url)
    return dict(os.environ)


@dataclass
class FakeProgress:
    """The worker's progress callback, recording what a handler reports."""

    job_id: int
    worker_id: str = "test"
    attempt: int = 1
    reports: list[tuple[float | None, str | None]] = field(default_factory=list)

    def __call__(self, fraction: float | None = None, note: str | None = None) -> None:
        self.reports.append((fraction, note))

    @property
    def stopping(self) -> bool:
        return False


def _falcon() -> list[str]:
    script = Path(sys.executable).with_name("falcon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "falcon.cli"]


def test_backtest_job_through_a_real_worker(job_env: dict[str, str], home: Path,
                                            sessions: sessionmaker[Session]) -> None:
    payload = {"strategy": "sma_cross", "params": {"fast": 5}, "symbols": ["AAPL", "MSFT"],
               "start": "2016-01-04", "end": "2017-06-30", "cash": 10_000}
    with sessions.begin() as s:
        job_id = submit(s, "backtest", payload)
    done = subprocess.run([*_falcon(), "-q", "worker", "run", "--once", "--poll", "0.05",
                           "--id", "bt-test"], env=job_env, cwd=REPO, capture_output=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode()
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "done", job and job.error
        assert job.progress == 1.0 and job.result is not None
        run = store.get_run(s, job.result["run_id"])
        assert run.metrics is not None and run.metrics["job_id"] == job_id
        trades = s.scalar(select(func.count()).select_from(BacktestTrade).where(
            BacktestTrade.run_id == run.id, BacktestTrade.exit_ts.is_not(None)))
        points = s.scalar(select(func.count()).select_from(BacktestEquity)
                          .where(BacktestEquity.run_id == run.id))
    direct = backtest_spec(load_settings({"home": str(home)}), builtin_spec("sma_cross",
                                                                            {"fast": 5}),
                           symbols=["AAPL", "MSFT"], start=date(2016, 1, 4),
                           end=date(2017, 6, 30), config=BacktestConfig(cash=10_000))
    for key, value in direct.metrics.items():
        assert run.metrics[key] == value == job.result[key], key
    assert trades == direct.result.trades.height and points == direct.result.equity.height
    assert (run.start, run.end, run.params) == (date(2016, 1, 4), date(2017, 6, 30),
                                                {"fast": 5, "slow": 20})


def test_web_payload_by_strategy_id_runs_once(job_env: dict[str, str],
                                              sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        row = Strategy(name="my_sma", source="user", spec=builtin_document("sma_cross"),
                       status="backtested")
        s.add(row)
        s.flush()
        strategy_id = row.id
    # What falcon.web.actions.enqueue_backtest queues.
    payload = {"strategy_id": strategy_id, "strategy_name": "my_sma", "symbols": ["NVDA"],
               "start": "2016-01-04", "end": "2016-12-30", "params": {"slow": 30},
               "requested_by": "alice"}
    progress = FakeProgress(job_id=7)
    first = run_backtest_job(payload, progress)
    again = run_backtest_job(payload, FakeProgress(job_id=7))
    assert again["repeated"] is True and again["run_id"] == first["run_id"]
    assert progress.reports[-1][0] == 1.0
    with sessions() as s:
        runs = list(s.scalars(select(BacktestRun)))
        assert len(runs) == 1 and runs[0].strategy_id == strategy_id
        assert runs[0].params == {"fast": 10, "slow": 30}


def test_optimize_walkforward_and_failed_jobs(job_env: dict[str, str],
                                              sessions: sessionmaker[Session]) -> None:
    base = {"strategy": "sma_cross", "symbols": ["AAPL"], "grid": {"fast": [5, 10],
                                                                   "slow": "20:30:10"},
            "jobs": 1}
    progress = FakeProgress(job_id=11)
    opt = run_optimize_job({**base, "start": "2016-01-04", "end": "2016-12-30",
                            "objective": "calmar"}, progress)
    fractions = [f for f, _ in progress.reports if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "results" not in opt and opt["ran"] == 4 and opt["objective"] == "calmar"
    wf = run_walkforward_job({**base, "start": "2015-01-02", "end": "2016-12-30",
                              "train": 250, "test": 100}, FakeProgress(job_id=12))
    assert len(wf["folds"]) == 2 and wf["aggregate"]["windows"] == 2
    bad = {"strategy": "sma_cross", "symbols": ["ZZZZ"]}
    for _ in range(2):  # a retried job replaces its failed row
        with pytest.raises(NotFound):
            run_backtest_job(bad, FakeProgress(job_id=13))
    with sessions() as s:
        kinds = sorted(store.run_kind(r) for r in store.list_runs(s))
        assert kinds == ["backtest", "optimize", "walkforward", "walkforward_oos",
                         "walkforward_oos"]
        failed = store.find_by_job(s, 13, "backtest")
        assert failed is not None and failed.status == "failed"
        assert "ZZZZ" in (failed.error or "")
        assert store.get_run(s, opt["run_id"]).params == opt["best_params"]


def test_cli_queue_submits_the_same_request(home: Path, db_url: str, runner: CliRunner,
                                            tmp_path: Path,
                                            sessions: sessionmaker[Session]) -> None:
    base = ["--home", str(home), "--database-url", db_url, "backtest"]
    result = runner.invoke(main, [*base, "run", "-s", "sma_cross", "--param", "fast=5",
                                  "--symbols", "aapl,MSFT", "--start", "2016-01-04",
                                  "--commission", "0.001", "--queue", "--json"])
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.output)["job_id"]
    spec_file = tmp_path / "s.json"
    spec_file.write_text(json.dumps(builtin_document("sma_cross")))
    result = runner.invoke(main, [*base, "walkforward", str(spec_file), "--symbols", "AAPL",
                                  "--grid", "fast=5:10:5", "--train", "100", "--test", "50",
                                  "--queue"])
    assert result.exit_code == 0 and "queued (walkforward)" in result.output
    result = runner.invoke(main, [*base, "optimize", "-s", "nope", "--symbols", "AAPL",
                                  "--grid", "fast=5", "--queue"])
    assert result.exit_code == 66
    with sessions() as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
    assert len(jobs) == 2
    request = Request.from_payload("backtest", jobs[job_id].payload)
    assert (request.strategy, request.params, request.symbols, request.start) == (
        "sma_cross", {"fast": 5}, ("AAPL", "MSFT"), date(2016, 1, 4))
    assert request.costs == {"commission": 0.001}
    walk = next(j for j in jobs.values() if j.kind == "walkforward")
    assert walk.payload["spec"]["name"] == "sma_cross" and walk.payload["train"] == 100


@pytest.mark.parametrize(("payload", "message"), [
    ({"symbols": ["AAPL"]}, "give one of strategy"),
    ({"strategy": "sma_cross", "spec": {}, "strategy_id": 1}, "give one of strategy"),
    ({"strategy": "sma_cross", "oops": 1}, "unknown keys oops"),
    ({"strategy": "sma_cross", "start": "2016-13-01"}, "start: expected a date"),
    ({"strategy": "sma_cross", "symbols": "AAPL"}, "symbols: expected a list"),
    ({"strategy": "sma_cross", "cash": "lots"}, "cash: expected a number"),
])
def test_bad_payloads(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Request.from_payload("backtest", payload)
