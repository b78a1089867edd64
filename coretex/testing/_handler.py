"""Run a pack's handler the way a worker would, against a real Redis, without Celery workers.

    run = run_handler(worker, "job.my.topic", {"x": 1}, settings=settings)
    assert run.record.state is JobState.SUCCEEDED and run.output == {...}

The job is submitted, dispatched as attempt 1, executed by ``worker`` in this process and its
result applied exactly as the control plane would; messages the run sends to the broker stay
there (nobody consumes them), so use a settings namespace of the test's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coretex.agent.v1 import job_pb2
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.packets import ATTEMPT_ENV, job_request_packet
from coretex.scheduler.results import apply_result
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.sdk import Worker
from coretex.services import Services
from coretex.settings import Settings


@dataclass(frozen=True)
class HandlerRun:
    result: job_pb2.JobResult
    record: JobRecord
    output: Any
    """The handler's output read back from its result pointer (None unless SUCCEEDED)."""


def run_handler(
    worker: Worker, topic: str, payload: Any, *, settings: Settings, meta: JobMeta | None = None,
    env: dict[str, str] | None = None,
) -> HandlerRun:
    """Submit ``payload`` on ``topic``, run it on ``worker`` and apply its result; ``env`` adds
    JobRequest.env entries (policy constraints the dispatcher would pass, for example)."""
    services = Services(settings)
    try:
        meta = meta or JobMeta()
        job_id = submit_job(services, SubmitRequest(topic, payload, meta)).job_id
        services.jobs.transition(job_id, JobState.SCHEDULED, note="coretex.testing.run_handler")
        services.jobs.transition(job_id, JobState.DISPATCHED, note="coretex.testing.run_handler", attempts=1)
        packet = job_request_packet(services.jobs.get(job_id), sender_id="coretex-testing")
        packet.job_request.env[ATTEMPT_ENV] = "1"
        packet.job_request.env.update(env or {})
        result = worker.execute(services, packet)
        retryable = result.error_code not in ("no_handler",)
        apply_result(services, result, attempt=1, retryable=retryable)
        record = services.jobs.get(job_id)
        output = services.pointers.get_json(record.result_ptr, record.tenant_id) if record.result_ptr else None
        return HandlerRun(result, record, output)
    finally:
        services.app.close()
        services.close()
