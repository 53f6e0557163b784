"""Job handlers for tests, importable by worker subprocesses through $FALCON_JOB_HANDLERS."""

from __future__ import annotations

import time
from typing import Any

from falcon.errors import FalconError
from falcon.jobs.registry import Progress

#: What worker subprocesses get in $FALCON_JOB_HANDLERS.
ENV = ("record=tests.jobs.handlers:record,stall=tests.jobs.handlers:stall_first_attempt,"
       "boom=tests.jobs.handlers:boom")


def record(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Sleep a little, then append "<job id> <worker>" to ``payload["path"]``."""
    time.sleep(float(payload.get("seconds", 0.0)))
    # One short O_APPEND write per job: lines from several processes never interleave.
    with open(payload["path"], "a") as fh:
        fh.write(f"{progress.job_id} {progress.worker_id}\n")
    return {"worker": progress.worker_id}


def stall_first_attempt(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Hang (reporting progress) on the first attempt; succeed at once on later ones."""
    if progress.attempt == 1:
        deadline = time.monotonic() + float(payload.get("seconds", 60.0))
        while time.monotonic() < deadline:
            progress(0.5, "stalling")
            time.sleep(0.05)
    return {"worker": progress.worker_id, "attempt": progress.attempt}


class Boom(FalconError):
    """The test failure."""


def boom(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Always fail."""
    raise Boom(payload.get("message", "boom"))
