"""Handlers for the workflow failure-path tests (tests/integration/test_workflow_chaos.py).

Each appends ``<event> <tag> <job_id> <pid>`` to the file named in its input, so a test can
count executions across worker processes (and across worker restarts) without shared memory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coretex.sdk import JobContext, Worker

worker = Worker(pool="chaos")


def _log(job: JobContext, event: str) -> int:
    """Append one line; return how many lines of this event and tag the file holds now."""
    if "log" not in job.input:
        return 1
    path = Path(job.input["log"])
    prefix = f"{event} {job.input.get('tag', '')} "
    with path.open("a") as f:
        f.write(f"{prefix}{job.job_id} {os.getpid()}\n")
        f.flush()
    return sum(1 for line in path.read_text().splitlines() if line.startswith(prefix))


def _sleep(job: JobContext, seconds: float) -> None:
    """Sleep, but stop early (raising) when the job is cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.cancelled.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            _log(job, "stopped")
            job.raise_if_cancelled()


@worker.handler("job.chaos.step")
def step(job: JobContext) -> Any:
    """{"n": int, "sleep": s, "first_sleep": s} -> {"v": n + 1}.

    The first execution of a tag sleeps ``first_sleep`` (long enough to be killed in), later ones
    ``sleep``; "start" is logged before and "finish" after.
    """
    runs = _log(job, "start")
    _sleep(job, job.input.get("first_sleep", 0) if runs == 1 and "first_sleep" in job.input
           else job.input.get("sleep", 0))
    _log(job, "finish")
    return {"v": job.input.get("n", 0) + 1}


@worker.handler("job.chaos.item")
def item(job: JobContext) -> Any:
    """One fan-out item: {"index": i, "value": x, "sleep": s} -> {"index": i, "double": 2x}."""
    _log(job, "item")
    _sleep(job, job.input.get("sleep", 0))
    return {"index": job.input["index"], "double": job.input["value"] * 2}


@worker.handler("job.chaos.fail")
def fail(job: JobContext) -> Any:
    """Always fails with a transient (retryable) error."""
    tries = _log(job, "try")
    raise ConnectionError(f"transient failure on try {tries}")
