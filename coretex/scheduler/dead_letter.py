"""Dead-lettering a job: the CAP DLQ entry (error_code, error_message, last_state, attempts).

A job that ends with a dead letter gets its DLQ entry *before* its terminal state, so whoever
sees the state also finds the entry; if the state change is then refused (another path ended the
attempt first), the entry is taken back.
"""

from __future__ import annotations

import time
from typing import Any

from coretex.errors import CoretexError
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


def end_with_dead_letter(
    services: Services,
    record: JobRecord,
    target: JobState,
    *,
    dlq_code: str,
    dlq_message: str,
    attempt: int | None = None,
    **changes: Any,
) -> bool:
    """Dead-letter ``record`` (last state: its current one) and move it to terminal ``target``."""
    dead_letter(services, record, record.state, dlq_code, dlq_message)
    changes.setdefault("pending_reason", "")
    try:
        return services.jobs.transition(record.job_id, target, attempt=attempt, **changes)
    except CoretexError:
        services.dlq.delete(record.job_id)
        raise
