"""Hand the scheduler (or the pool) again any job whose message was lost.

A job waits in PENDING or SCHEDULED for the scheduler's dispatch task. If the process holding its
submit packet dies first (a gateway killed between creating the job and sending the packet, a
control worker killed mid-pipeline: with the Redis transport its unacked message only comes back
after the hour-long visibility timeout), nothing would ever move it. The job store keeps every
such job in ``<ns>:jobs:undispatched`` with the time it started waiting; the tick re-submits those
that have waited ``CORETEX_LOST_SUBMIT_S`` (20 s) with no timer that will move them (a hold or
retry backoff). Dispatch is idempotent, so a packet that was only slow changes nothing.

With a broker other than the Redis holding the job, the same index covers the last gap: a job
moved to DISPATCHED whose dispatcher died before its message was confirmed sent (the dispatcher
takes the job out of the index right after the send). Its attempt is sent again, unchanged; at
worst that is a duplicate delivery of one attempt. (On the same Redis the move pushes the message
itself, so no DISPATCHED job ever waits in the index.)
"""

from __future__ import annotations

import logging

from coretex.errors import NotFoundError
from coretex.model.job import JobState
from coretex.scheduler.dispatcher import resend_execute
from coretex.scheduler.submit import resend_submit
from coretex.services import Services
from coretex.store.timers import RETRY

log = logging.getLogger(__name__)

def resubmit_lost(services: Services, now: float) -> list[str]:
    """Re-submit the jobs that waited too long for the scheduler; return their ids."""
    resubmitted = []
    for job_id in services.jobs.undispatched(now - services.settings.lost_submit_s):
        try:
            record = services.jobs.get(job_id)
        except NotFoundError:  # expired with its retention TTL
            services.jobs.forget_undispatched(job_id)
            continue
        if record.state is JobState.DISPATCHED:  # moved to DISPATCHED, its message never confirmed sent
            log.warning("job %s attempt %s was never confirmed sent to pool %s; sending it again", job_id,
                        record.attempts, record.pool)
            resend_execute(services, record)
            services.jobs.forget_undispatched(job_id)
            resubmitted.append(job_id)
            continue
        if record.state not in (JobState.PENDING, JobState.SCHEDULED):
            services.jobs.forget_undispatched(job_id)
            continue
        due = services.timers.due(RETRY, job_id, record.attempts)
        if due is not None:  # held or backing off: its timer moves it; look again after that
            services.jobs.touch_undispatched(job_id, due)
            continue
        log.warning("job %s waited %.0fs in %s with nothing to move it; submitting it again", job_id,
                    now - record.updated_at, record.state.value)
        resend_submit(services, record)
        services.jobs.touch_undispatched(job_id, now)
        resubmitted.append(job_id)
    return resubmitted
