"""The SDK's job runtime, driven in-process against a real redis-server (no broker consumer)."""

from __future__ import annotations

import json

import pytest

from coretex.agent.v1 import job_pb2
from coretex.model.job import JobMeta, JobState
from coretex.scheduler.packets import job_request_packet
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.sdk import JobContext, Worker
from coretex.services import Services
from coretex.settings import Settings
from coretex.testing import run_handler

pytestmark = pytest.mark.integration

TOKEN = "ghp_" + "Ab3" * 12


def _dispatched(services: Services, topic: str, payload: object) -> job_pb2.JobRequest:
    # No kernel here: the test plays the scheduler, so the job is only handed to a control queue.
    job_id = submit_job(services, SubmitRequest(topic, payload, JobMeta(tenant_id="acme")), inline=False).job_id
    services.jobs.transition(job_id, JobState.SCHEDULED)
    services.jobs.transition(job_id, JobState.DISPATCHED)
    return job_request_packet(services.jobs.get(job_id), sender_id="test")


def test_handler_artifacts_are_redacted_stored_for_the_tenant_and_reported(services: Services) -> None:
    worker = Worker(pool="evidence")

    @worker.handler("job.evidence.collect")
    def collect(job: JobContext) -> dict[str, str]:
        log_ptr = job.put_artifact(f"deploy log\nAuthorization: Bearer {TOKEN}\ndone\n", retention="short")
        blob_ptr = job.put_artifact(b"\x00\x01binary", content_type="application/octet-stream")
        return {"log": log_ptr, "blob": blob_ptr}

    packet = _dispatched(services, "job.evidence.collect", {})
    result = worker.execute(services, packet)

    assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
    assert len(result.artifact_ptrs) == 2
    log_ptr, blob_ptr = result.artifact_ptrs
    stored = services.artifacts.get_artifact(log_ptr, "acme").decode()
    assert TOKEN not in stored and "[REDACTED:" in stored and "deploy log" in stored
    assert services.artifacts.get_artifact(blob_ptr, "acme") == b"\x00\x01binary"  # binary untouched
    info = services.artifacts.head_artifact(log_ptr, "acme")
    assert info.retention == "short" and info.labels["job_id"] == packet.job_request.job_id
    assert services.jobs.get(packet.job_request.job_id).state is JobState.RUNNING  # result applied by control


def test_unknown_topic_on_a_pool_fails_with_no_handler(services: Services) -> None:
    worker = Worker(pool="evidence")
    packet = _dispatched(services, "job.evidence.other", {})

    result = worker.execute(services, packet)

    assert result.status == job_pb2.JOB_STATUS_FAILED
    assert result.error_code == "no_handler"


def test_a_job_that_already_ended_is_not_run_again(services: Services) -> None:
    calls: list[str] = []
    worker = Worker(pool="evidence")
    worker.handler("job.evidence.once")(lambda job: calls.append(job.job_id))
    packet = _dispatched(services, "job.evidence.once", {})
    services.jobs.transition(packet.job_request.job_id, JobState.CANCELLED)

    worker.execute(services, packet)

    assert calls == []


def test_a_topic_cannot_get_two_handlers() -> None:
    worker = Worker(pool="evidence")
    worker.handler("job.x")(lambda job: None)
    with pytest.raises(ValueError, match="already has a handler"):
        worker.handler("job.x")(lambda job: None)


def test_policy_constraints_cap_artifacts_and_raise_the_redaction_level(services: Services) -> None:
    worker = Worker(pool="evidence")
    seen: dict[str, object] = {}

    @worker.handler("job.evidence.big")
    def big(job: JobContext) -> None:
        seen["level"] = job.redaction_level
        job.put_artifact(b"x" * 2048, content_type="application/octet-stream")

    packet = _dispatched(services, "job.evidence.big", {})
    packet.job_request.env["coretex.attempt"] = "0"  # what the dispatcher stamps (0: no dispatch counted here)
    packet.job_request.env["coretex.max_artifact_bytes"] = "1024"
    packet.job_request.env["coretex.redaction_level"] = "strict"

    result = worker.execute(services, packet)
    _, _, retry_class = _last_result_task_id(services).rpartition(":")

    assert retry_class == "fatal"  # the same content will be too large next time: no retry
    assert seen["level"] == "strict"
    assert result.status == job_pb2.JOB_STATUS_FAILED
    assert result.error_code == "artifact_too_large" and "1024" in result.error_message


def _last_result_task_id(services: Services) -> str:
    """The id of the newest result message on the control queue (kombu's JSON envelope in Redis)."""
    raw = services.redis.lindex(f"{services.settings.namespace}:celery:{services.settings.control_queue}", 0)
    assert raw is not None
    return str(json.loads(raw)["headers"]["id"])


def test_pack_authors_run_a_handler_end_to_end_with_the_testing_harness(settings: Settings) -> None:
    worker = Worker(pool="pack")

    @worker.handler("job.pack.sum")
    def add(job: JobContext) -> dict[str, int]:
        job.progress(50, "adding")
        job.heartbeat()
        return {"sum": sum(job.input["numbers"])}

    run = run_handler(worker, "job.pack.sum", {"numbers": [1, 2, 3]}, settings=settings,
                      meta=JobMeta(tenant_id="acme"))

    assert run.record.state is JobState.SUCCEEDED and run.output == {"sum": 6}
    assert (run.record.progress_pct, run.record.progress_message) == (50, "adding")
    assert run.record.attempts == 1 and run.record.tenant_id == "acme"


def test_progress_must_be_a_percentage(settings: Settings) -> None:
    worker = Worker(pool="pack")
    worker.handler("job.pack.bad")(lambda job: job.progress(140))

    run = run_handler(worker, "job.pack.bad", {}, settings=settings)

    assert run.record.state is JobState.FAILED and "percent must be 0..100" in run.record.error_message


def test_a_worker_looser_than_the_policys_sandbox_refuses_the_job(settings: Settings) -> None:
    ran: list[str] = []
    demanded = {"SANDBOX": '{"isolated":true,"network":"none","allowlist":[],"fs":null}'}
    open_worker = Worker(pool="pack")  # no profile: no isolation, any network
    open_worker.handler("job.pack.run")(lambda job: ran.append(job.job_id))
    sandboxed = Worker(pool="pack", profile={"isolated": True, "network": "none", "fs": "ro"})
    sandboxed.handler("job.pack.run")(lambda job: ran.append(job.job_id) or {"ok": True})
    env = {"coretex.sandbox": demanded["SANDBOX"]}

    refused = run_handler(open_worker, "job.pack.run", {}, settings=settings, env=env)
    accepted = run_handler(sandboxed, "job.pack.run", {}, settings=settings, env=env)

    assert refused.record.state is JobState.FAILED and refused.record.error_code == "profile_too_permissive"
    assert accepted.record.state is JobState.SUCCEEDED
    assert ran == [accepted.record.job_id]  # the refused job never reached its handler
