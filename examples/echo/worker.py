"""The echo worker: its result is its input. Run with

    coretex worker --pool echo --app examples.echo.worker:worker
"""

from __future__ import annotations

from typing import Any

from coretex.sdk import HandlerError, JobContext, Worker

worker = Worker(pool="echo")


@worker.handler("job.echo")
def echo(job: JobContext) -> Any:
    if isinstance(job.input, dict) and "fail" in job.input:
        raise HandlerError("echo_failure", str(job.input["fail"]))
    return job.input
