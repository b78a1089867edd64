"""Handlers for the workflow tests. Each appends a line to the file named in its input (when
given), so a test can count executions across worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coretex.sdk import JobContext, Worker

worker = Worker(pool="flow")


def _log(job: JobContext, event: str) -> int:
    if "log" not in job.input:
        return 0
    path = Path(job.input["log"])
    with path.open("a") as f:
        f.write(f"{event} {job.input.get('tag', '')} {job.job_id} {os.getpid()}\n")
    return sum(1 for line in path.read_text().splitlines() if line.startswith(f"{event} {job.input.get('tag', '')} "))


@worker.handler("job.flow.add")
def add(job: JobContext) -> Any:
    """{"n": int} -> {"v": n + 1}, after an optional sleep."""
    _log(job, "run")
    time.sleep(job.input.get("sleep", 0))
    return {"v": job.input["n"] + 1}


@worker.handler("job.flow.capped")  # the tests' policy gives this topic a max_retries budget of 1
@worker.handler("job.flow.flaky")
def flaky(job: JobContext) -> Any:
    """Fails with a transient error until it has been tried ``succeed_on`` times."""
    tries = _log(job, "try")
    if tries < job.input["succeed_on"]:
        raise ConnectionError(f"transient failure on try {tries}")
    return {"tries": tries}


@worker.handler("job.flow.wait")
def wait(job: JobContext) -> Any:
    """Waits ``sleep`` seconds, checking for a cancel ten times a second."""
    _log(job, "start")
    deadline = time.monotonic() + job.input["sleep"]
    while time.monotonic() < deadline:
        if job.cancelled.wait(0.1):
            _log(job, "stopped")
            job.raise_if_cancelled()
    _log(job, "finish")
    return {"waited": job.input["sleep"]}


@worker.handler("job.flow.echo")
def echo(job: JobContext) -> Any:
    _log(job, "run")
    return job.input


@worker.handler("job.flow.sim", dry_run=True)
def simulate(job: JobContext) -> Any:
    """Declares dry-run support: in a dry run it only says what it would do."""
    _log(job, "dry" if job.dry_run else "real")
    return {"simulated": job.dry_run}
