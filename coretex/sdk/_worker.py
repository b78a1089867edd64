"""The :class:`Worker` object pack authors declare, and how one job runs on it."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from coretex.agent.v1 import buspacket_pb2, job_pb2
from coretex.bus import RESULT_TASK, result_task_id, send_packet
from coretex.errors import CoretexError, IllegalTransitionError, NotFoundError, PointerError
from coretex.model.job import JobState
from coretex.protocol.envelope import encode_packet, new_packet
from coretex.scheduler.packets import (
    ATTEMPT_ENV,
    DRY_RUN_ENV,
    MAX_ARTIFACT_BYTES_ENV,
    REDACTION_LEVEL_ENV,
    SANDBOX_ENV,
    TIMEOUT_ENV,
    meta_from_message,
)
from coretex.scheduler.results import record_success
from coretex.scheduler.routing import profile_sandbox, sandbox_profile
from coretex.sdk._context import ArtifactWriter, JobContext
from coretex.sdk._leases import KEEPER
from coretex.secrets import redact_text
from coretex.services import Services
from coretex.store._redis import Pipeline, redis_errors
from coretex.store.artifacts import ArtifactMetadata

log = logging.getLogger(__name__)

Handler = Callable[[JobContext], Any]


class HandlerError(CoretexError):
    """Raise from a handler to fail the job with a machine-readable ``error_code``.

    Permanent by default (a business error will not go away by retrying); pass ``retryable=True``
    for a transient one. Any other exception a handler raises counts as transient.
    """

    def __init__(self, error_code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = error_code
        self.retryable = retryable


@dataclass
class _Outcome:
    result: job_pb2.JobResult
    retryable: bool = True


class Worker:
    def __init__(
        self,
        pool: str,
        *,
        capabilities: Iterable[str] = (),
        profile: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.capabilities = tuple(capabilities)
        """What this worker's hosts provide (git, docker, gpu ...), advertised in its heartbeats."""
        self.profile = profile_sandbox(profile or {})
        """The sandbox this worker really enforces (``isolated``, ``network``, ``allowlist``, ``fs``);
        a job whose policy demands a stricter one is refused, never run."""
        self.worker_id = worker_id or f"{pool}@{socket.gethostname()}-{os.getpid()}"
        self.handlers: dict[str, Handler] = {}
        self.dry_run_topics: set[str] = set()

    def handler(self, topic: str, *, dry_run: bool = False) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``topic``.

        ``dry_run=True`` declares that the handler honours ``job.dry_run`` (simulates, with no
        external side effects); only then does a dry run's job of ``topic`` reach it.
        """

        def register(func: Handler) -> Handler:
            if topic in self.handlers:
                raise ValueError(f"topic {topic!r} already has a handler on pool {self.pool!r}")
            self.handlers[topic] = func
            if dry_run:
                self.dry_run_topics.add(topic)
            return func

        return register

    def execute(self, services: Services, packet: buspacket_pb2.BusPacket) -> job_pb2.JobResult:
        """Run one dispatched attempt of a job and see its JobResult applied.

        While the handler runs, the process's lease keeper renews the attempt's lease every third
        of ``CORETEX_LEASE_S``; if this process dies the lease expires and the job is retried. A
        success is recorded here; the JobResult goes to the control plane only when the job failed
        (the retry decision is the scheduler's).
        """
        request = packet.job_request
        attempt = _attempt_of(request)
        started = time.monotonic()
        read_input = self._start(services, request, attempt)
        if read_input is None:
            return job_pb2.JobResult(job_id=request.job_id, worker_id=self.worker_id)
        cancelled = threading.Event()
        # What the attempt leaves behind (its result pointer, the active-job count) is queued here
        # and sent in one round trip, together with the success when there is one.
        finish = services.redis.pipeline(transaction=False)
        try:
            if attempt is not None:  # the lease the tick watches: renewed until the handler returns
                KEEPER.keep(services, request.job_id, attempt, cancelled)
            renew = _renewer(services, request.job_id, attempt)
            outcome = self._run(services, request, packet.trace_id, cancelled, renew, finish, read_input)
        except BaseException:
            services.workers.job_finished(self.worker_id)
            raise
        finally:
            if attempt is not None:
                KEEPER.drop(request.job_id, attempt)
        services.workers.job_finished(self.worker_id, client=finish)
        result = outcome.result
        result.execution_ms = int((time.monotonic() - started) * 1000)
        succeeded = result.status == job_pb2.JOB_STATUS_SUCCEEDED
        if succeeded and attempt is not None:
            # Write-through, attempt-guarded and so exactly once: the job shows SUCCEEDED without a
            # trip through the control queue, and a workflow run waiting on it hears of it from the
            # job news the same move writes. Should Redis fail here, the task fails and the lease
            # expires: the attempt is retried (at-least-once), never half-recorded.
            record_success(services, result, attempt, along=finish)
            return result
        with redis_errors(f"finish job {request.job_id}"):
            finish.execute()  # the result pointer exists before the JobResult naming it is sent
        reply = new_packet(sender_id=self.worker_id, trace_id=packet.trace_id, job_result=result)
        kind = "ok" if result.status == job_pb2.JOB_STATUS_SUCCEEDED else "retry" if outcome.retryable else "fatal"
        task_id = result_task_id(request.job_id, attempt, kind) if attempt is not None else None
        send_packet(services.app, RESULT_TASK, reply, queue=services.settings.control_queue, task_id=task_id)
        return result

    def _start(self, services: Services, request: job_pb2.JobRequest,
               attempt: int | None) -> Callable[[str], Any] | None:
        """Move the attempt to RUNNING, take its lease, count it on this worker and read its input,
        in one round trip; the input's reader (given the tenant), or None (nothing taken) when the
        job is gone or past this attempt."""
        taken = services.redis.pipeline(transaction=False)
        if attempt is not None:
            services.leases.hold(request.job_id, attempt, time.time() + services.settings.lease_s, client=taken)
        services.workers.job_started(self.worker_id, client=taken)
        input_of = _queue_input(services, request.context_ptr, taken)
        moved = services.jobs.transition_queued(taken, request.job_id, JobState.RUNNING, attempt=attempt,
                                                pending_reason="", worker_id=self.worker_id,
                                                note=f"attempt {attempt} picked up by {self.worker_id}")
        with redis_errors(f"start job {request.job_id}"):
            replies = taken.execute()
        try:
            moved(replies[-1])
        except (IllegalTransitionError, NotFoundError) as exc:
            log.warning("job %s not run: %s", request.job_id, exc)
            give_back = services.redis.pipeline(transaction=False)
            if attempt is not None:
                services.leases.release(request.job_id, attempt, client=give_back)
            services.workers.job_finished(self.worker_id, client=give_back)
            with redis_errors(f"give back job {request.job_id}"):
                give_back.execute()
            return None
        return lambda tenant: input_of(replies[-2], tenant)

    def _run(
        self,
        services: Services,
        request: job_pb2.JobRequest,
        trace_id: str,
        cancelled: threading.Event,
        renew_lease: Callable[[], None],
        finish: Pipeline,
        read_input: Callable[[str], Any],
    ) -> _Outcome:
        result = job_pb2.JobResult(job_id=request.job_id, worker_id=self.worker_id)
        handler = self.handlers.get(request.topic)
        if handler is None:
            result.status = job_pb2.JOB_STATUS_FAILED
            result.error_code = "no_handler"
            result.error_message = f"pool {self.pool!r} has no handler for topic {request.topic!r}"
            return _Outcome(result, retryable=False)
        demanded = request.env.get(SANDBOX_ENV)
        if demanded and not self.profile.at_least_as_strict_as(profile_sandbox(json.loads(demanded))):
            result.status = job_pb2.JOB_STATUS_FAILED
            result.error_code = "profile_too_permissive"
            result.error_message = (f"worker {self.worker_id} runs {sandbox_profile(self.profile)}; "
                                    f"the policy demands {demanded}")
            return _Outcome(result, retryable=False)
        dry_run = request.env.get(DRY_RUN_ENV) == "1"
        if dry_run and request.topic not in self.dry_run_topics:
            result.status = job_pb2.JOB_STATUS_FAILED
            result.error_code = "dry_run_unsupported"
            result.error_message = f"the handler of {request.topic!r} does not declare dry-run support; not called"
            return _Outcome(result, retryable=False)
        tenant = request.tenant_id or request.meta.tenant_id
        try:
            job = JobContext(
                job_id=request.job_id,
                topic=request.topic,
                trace_id=trace_id,
                input=read_input(tenant),
                meta=meta_from_message(request.meta),
                redaction_level=request.env.get(REDACTION_LEVEL_ENV) or "standard",
                write_artifact=_artifact_writer(
                    services, tenant, request.job_id, _int_env(request, MAX_ARTIFACT_BYTES_ENV)
                ),
                cancelled=cancelled,
                report_progress=_progress_reporter(services, request.job_id, trace_id, self.worker_id),
                renew_lease=renew_lease,
                dry_run=dry_run,
            )
            output = handler(job)
            pointer = services.pointers.put_result(request.job_id, tenant, output, client=finish)
        except SoftTimeLimitExceeded:
            result.status = job_pb2.JOB_STATUS_TIMEOUT
            result.error_code = "timeout"
            result.error_message = f"the handler ran past the attempt's {request.env.get(TIMEOUT_ENV, '?')}s limit"
            return _Outcome(result, retryable=True)
        except Exception as exc:  # a handler's failure is the job's failure, never the worker's
            log.exception("job %s failed in handler", request.job_id)
            result.status = job_pb2.JOB_STATUS_FAILED
            result.error_code = getattr(exc, "code", "") or "handler_error"
            # Handlers echo their inputs in errors; the record, DLQ and timeline keep only the redacted text.
            result.error_message = redact_text(f"{exc.__class__.__name__}: {exc}")
            return _Outcome(result, retryable=getattr(exc, "retryable", True))
        result.status = job_pb2.JOB_STATUS_SUCCEEDED
        result.result_ptr = pointer.uri
        result.artifact_ptrs.extend(job.artifact_ptrs)
        return _Outcome(result)


def _artifact_writer(services: Services, tenant: str, job_id: str, max_bytes: int | None) -> ArtifactWriter:
    """Store artifacts for the job's tenant, capped by the policy's ``max_artifact_bytes``."""

    def write(content: bytes, content_type: str, retention: str, labels: Mapping[str, str]) -> str:
        metadata = ArtifactMetadata(tenant=tenant, retention=retention, content_type=content_type,
                                    labels={**labels, "job_id": job_id})
        return services.artifacts.put_artifact(content, metadata, max_bytes=max_bytes).uri

    return write


def _progress_reporter(services: Services, job_id: str, trace_id: str, worker_id: str) -> Callable[[int, str], None]:
    """Store the latest progress on the job and publish a CAP JobProgress on ``<ns>:progress``."""

    def report(percent: int, message: str) -> None:
        services.jobs.note_progress(job_id, percent, message)
        packet = new_packet(sender_id=worker_id, trace_id=trace_id,
                            job_progress=job_pb2.JobProgress(job_id=job_id, percent=percent, message=message,
                                                             status=job_pb2.JOB_STATUS_RUNNING))
        with redis_errors(f"publish progress of job {job_id}"):
            services.redis.publish(f"{services.settings.namespace}:progress",
                                   base64.b64encode(encode_packet(packet)).decode())

    return report


def _int_env(request: job_pb2.JobRequest, key: str) -> int | None:
    raw = request.env.get(key, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def _attempt_of(request: job_pb2.JobRequest) -> int | None:
    raw = request.env.get(ATTEMPT_ENV, "")
    return int(raw) if raw.isdigit() else None


def _renewer(services: Services, job_id: str, attempt: int | None) -> Callable[[], None]:
    """``job.heartbeat()``: renew the attempt's lease now (a long step between automatic renewals)."""

    def renew() -> None:
        if attempt is not None:
            services.leases.hold(job_id, attempt, time.time() + services.settings.lease_s)

    return renew


def _queue_input(services: Services, context_ptr: str, client: Pipeline) -> Callable[[Any, str], Any]:
    """Queue the read of the job's input on ``client``; a pointer that does not even parse is left
    for the reader to refuse, inside the handler's error handling like any unreadable input."""
    try:
        return services.pointers.get_json_queued(context_ptr, client)
    except PointerError:
        client.echo("")  # keeps the replies where the reader of the move expects them
        return lambda _reply, tenant: services.pointers.get_json(context_ptr, tenant)

