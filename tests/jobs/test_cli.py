"""``falcon jobs`` and ``falcon worker run`` through the click runner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from falcon.cli import main


def test_submit_run_once_list_show(db_url: str, runner: CliRunner) -> None:
    base = ["--database-url", db_url]
    result = runner.invoke(main, [*base, "jobs", "submit", "sleep", "--payload",
                                  '{"seconds": 0, "tag": "smoke"}', "--json"])
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.output)["id"]
    result = runner.invoke(main, [*base, "jobs", "submit", "noop", "--priority", "1"])
    assert result.output.strip() == f"job {job_id + 1} queued (noop)"

    result = runner.invoke(main, [*base, "-q", "worker", "run", "--once", "--id", "cli",
                                  "--poll", "0.05"])
    assert result.exit_code == 0, result.output

    listing = json.loads(runner.invoke(main, [*base, "jobs", "list", "--json"]).output)
    assert listing["counts"]["done"] == 2
    assert [j["id"] for j in listing["jobs"]] == [job_id + 1, job_id]
    shown = json.loads(runner.invoke(main, [*base, "jobs", "show", str(job_id), "--json"]).output)
    assert shown["result"] == {"worker": "cli", "job": job_id, "attempt": 1, "tag": "smoke"}
    text = runner.invoke(main, [*base, "jobs", "show", str(job_id)]).output
    assert "status         done" in text
    table = runner.invoke(main, [*base, "jobs", "list", "--status", "done"])
    assert table.exit_code == 0 and "sleep" in table.output


def test_cancel_and_errors(db_url: str, runner: CliRunner) -> None:
    base = ["--database-url", db_url, "jobs"]
    runner.invoke(main, [*base, "submit", "noop"])
    result = runner.invoke(main, [*base, "cancel", "1"])
    assert (result.exit_code, result.output.strip()) == (0, "job 1 cancelled")
    result = runner.invoke(main, [*base, "cancel", "1"])
    assert "already finished" in result.output

    result = runner.invoke(main, [*base, "submit", "nonsense"])
    assert result.exit_code == 66
    assert "unknown job kind 'nonsense' (known: " in result.output
    result = runner.invoke(main, [*base, "submit", "noop", "--payload", "{oops"])
    assert result.exit_code == 65 and "--payload is not valid JSON" in result.output
    result = runner.invoke(main, [*base, "show", "99"])
    assert result.exit_code == 66 and "job 99 does not exist" in result.output
