"""Worker runtime SDK: handle CAP jobs on a Coretex pool with decorated functions.

    from coretex.sdk import Worker

    worker = Worker(pool="echo")

    @worker.handler("job.echo")
    def echo(job):
        return job.input

Run it with ``coretex worker --pool echo --app mypack.workers:worker``.

Guarantee: delivery is at-least-once (a job may run twice after a worker dies or the broker
redelivers), so handlers should be idempotent. The control plane applies each job's result once.
"""

from coretex.sdk._context import JobCancelledError, JobContext
from coretex.sdk._worker import HandlerError, Worker

__all__ = ["HandlerError", "JobCancelledError", "JobContext", "Worker"]
