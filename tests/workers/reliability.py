"""Handlers that fail, hang or get killed on purpose. Each appends to a file named in its input,
so a test can count attempts across worker processes without sharing memory."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coretex.sdk import HandlerError, JobContext, Worker

worker = Worker(pool="rel")


def _log(job: JobContext, event: str) -> int:
    path = Path(job.input["log"])
    with path.open("a") as f:
        f.write(f"{event} {job.job_id} {os.getpid()}\n")
    return sum(1 for line in path.read_text().splitlines() if line.startswith(event))


@worker.handler("job.flaky")
def flaky(job: JobContext) -> Any:
    """Fails with a transient error until it has been tried ``succeed_on`` times."""
    tries = _log(job, "try")
    if tries < job.input["succeed_on"]:
        raise ConnectionError(f"transient failure on try {tries}")
    return {"tries": tries}


@worker.handler("job.broken")
def broken(job: JobContext) -> Any:
    """A permanent failure: never retried."""
    _log(job, "try")
    raise HandlerError("bad_request", "this job can never succeed")


@worker.handler("job.slow")
@worker.handler("job.hang")  # job.hang gets a 1 s timeout in the tests' config
def slow(job: JobContext) -> Any:
    _log(job, "start")
    time.sleep(job.input["sleep"])
    _log(job, "finish")
    return {"slept": job.input["sleep"]}


@worker.handler("job.patient")
def patient(job: JobContext) -> Any:
    """Waits up to 30 s, checking for a cancel ten times a second."""
    _log(job, "start")
    for _ in range(300):
        if job.cancelled.wait(0.1):
            _log(job, "stopped")
            job.raise_if_cancelled()
    _log(job, "finish")
    return {"waited": True}
