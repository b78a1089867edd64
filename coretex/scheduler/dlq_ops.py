"""Operator actions on dead letters: retry as a new job linked to the old one, or delete."""

from __future__ import annotations

from dataclasses import replace

from coretex.errors import NotFoundError
from coretex.scheduler.submit import SubmitReceipt, SubmitRequest, submit_job
from coretex.services import Services

RETRY_OF_LABEL = "retry_of"


def retry_dead_letter(services: Services, job_id: str, tenant_id: str, requested_by: str) -> SubmitReceipt:
    """Submit the dead job again: same topic, input and metadata, a new id, labelled ``retry_of``.

    The new job passes the whole pipeline (policy included) like any other; the DLQ entry is
    removed once the new job exists, so a retry is never lost and never doubled by a second click
    (the old job id is the idempotency key of its retry).
    """
    entry = services.dlq.get(job_id)
    if entry.tenant_id != tenant_id:
        raise NotFoundError(f"no DLQ entry for job {job_id}")
    old = services.jobs.get(job_id)
    payload = services.pointers.get_json(old.context_ptr, tenant_id)
    meta = replace(old.meta, idempotency_key="", actor_id=requested_by or old.meta.actor_id,
                   labels={**old.meta.labels, RETRY_OF_LABEL: job_id})
    receipt = submit_job(services, SubmitRequest(old.topic, payload, meta, idempotency_key=f"dlq-retry:{job_id}"))
    services.dlq.delete(job_id)
    return receipt
