"""Results of other CAP producers (no attempt in their message id) are applied to the current attempt."""

from __future__ import annotations

import time

import pytest
from job_support import scheduled_job

from coretex.agent.v1 import job_pb2
from coretex.model.job import JobState
from coretex.scheduler.results import apply_result
from coretex.services import Services
from coretex.store.timers import DEADLINE, Timer

pytestmark = pytest.mark.integration


def _running(services: Services) -> str:
    now = time.time()
    job_id = scheduled_job(services)
    services.jobs.transition(job_id, JobState.DISPATCHED, attempts=1)
    services.timers.schedule(Timer(DEADLINE, job_id, 1, now + 60))
    services.jobs.transition(job_id, JobState.RUNNING, attempt=1)
    services.leases.hold(job_id, 1, now + 30)
    return job_id


def test_a_success_without_an_attempt_ends_the_current_one_and_its_timer_and_lease(services: Services) -> None:
    job_id = _running(services)
    result = job_pb2.JobResult(job_id=job_id, worker_id="other-cap-worker", status=job_pb2.JOB_STATUS_SUCCEEDED)

    assert apply_result(services, result) is True

    record = services.jobs.get(job_id)
    assert (record.state, record.worker_id) == (JobState.SUCCEEDED, "other-cap-worker")
    assert services.timers.due(DEADLINE, job_id, 1) is None
    assert not services.leases.held(job_id, 1)
    assert apply_result(services, result) is False  # applied once


def test_a_success_for_an_unknown_job_changes_nothing(services: Services) -> None:
    result = job_pb2.JobResult(job_id="no-such-job", status=job_pb2.JOB_STATUS_SUCCEEDED)
    assert apply_result(services, result) is False
