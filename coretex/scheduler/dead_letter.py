"""Dead-lettering a job: the CAP DLQ entry (error_code, error_message, last_state, attempts)."""

from __future__ import annotations

import time

from coretex.model.dlq import DLQEntry
from coretex.model.job import JobRecord, JobState
from coretex.services import Services


def dead_letter(services: Services, record: JobRecord, last_state: JobState, code: str, message: str) -> None:
    services.dlq.add(
        DLQEntry(
            job_id=record.job_id,
            topic=record.topic,
            tenant_id=record.tenant_id,
            error_code=code,
            error_message=message,
            last_state=last_state.value,
            attempts=record.attempts,
            created_at=time.time(),
        )
    )
