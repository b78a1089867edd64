"""A job record made directly in the store, for tests of what happens to it next."""

from __future__ import annotations

import time
import uuid

from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.services import Services


def scheduled_job(services: Services, run_id: str = "") -> str:
    """Create a SCHEDULED job of tenant ``t1`` (a step of run ``run_id``, if given); its id."""
    now = time.time()
    record = JobRecord(job_id=str(uuid.uuid4()), topic="job.echo", tenant_id="t1", state=JobState.PENDING,
                       trace_id="tr", context_ptr="", created_at=now, updated_at=now, meta=JobMeta(tenant_id="t1"),
                       run_id=run_id, step_id="s1" if run_id else "")
    job_id, created = services.jobs.create(record, accept_note="accepted")
    assert created
    return job_id
