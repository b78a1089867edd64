"""A worker for the backpressure tests' narrow pool."""

from __future__ import annotations

from typing import Any

from coretex.sdk import JobContext, Worker

worker = Worker(pool="narrow")


@worker.handler("job.narrow")
def narrow(job: JobContext) -> Any:
    return job.input
