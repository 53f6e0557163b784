"""Starting ``falcon worker run`` as a real subprocess, and waiting on the database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .handlers import ENV

REPO = Path(__file__).resolve().parents[2]


def falcon_argv() -> list[str]:
    """The installed console script next to this Python, else the click group via -c."""
    script = Path(sys.executable).with_name("falcon")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from falcon.cli import main; main()"]


def start_worker(db_url: str, *args: str, log_dir: Path, notify: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``falcon worker run ARGS`` against ``db_url`` (stdout/stderr to files in ``log_dir``)."""
    environ = dict(os.environ)
    environ.update({
        "FALCON_DATABASE_URL": db_url,
        "FALCON_JOB_HANDLERS": ENV,
        "PYTHONPATH": str(REPO),
    })
    environ.pop("NOTIFY_SOCKET", None)
    environ.pop("WATCHDOG_USEC", None)
    if notify:
        environ["NOTIFY_SOCKET"] = notify
    environ.update(env or {})
    name = "-".join(a.strip("-") for a in args[:4]) or "worker"
    out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen([*falcon_argv(), "-v", "worker", "run", *args], env=environ,
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
