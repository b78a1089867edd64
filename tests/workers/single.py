"""A worker for the in-flight limit test's single pool."""

from __future__ import annotations

import time
from typing import Any

from coretex.sdk import JobContext, Worker

worker = Worker(pool="single")


@worker.handler("job.single")
def single(job: JobContext) -> Any:
    time.sleep(job.input["sleep"])
    return {"slept": job.input["sleep"]}
