"""One governed job end to end, with real processes: kernel (gRPC), control worker and echo
worker (Celery subprocesses) on a real redis-server."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from config_support import config_with_pool

from coretex.agent.v1 import buspacket_pb2
from coretex.bus import EXECUTE_TASK, SERIALIZER
from coretex.kernel.audit import DecisionAuditLog
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.services import Services
from coretex.settings import load_settings
from coretex.testing import ProcessStack, RedisServer, eventually, free_port, wait_for_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    processes: ProcessStack
    services: Services

    def submit(self, topic: str, payload: object = None, **meta: str) -> str:
        receipt = submit_job(self.services, SubmitRequest(topic, payload or {}, JobMeta(**meta)))
        return receipt.job_id

    def wait_terminal(self, job_id: str, timeout: float = 30) -> JobRecord:
        def ended() -> JobRecord | None:
            record = self.services.jobs.get(job_id)
            return record if record.terminal else None

        try:
            return eventually(ended, timeout=timeout, message=f"job {job_id} to end")
        except AssertionError:
            for name in self.processes.procs:
                print(f"---- {name} log ----\n{self.processes.log(name)[-3000:]}")
            raise


def _env(redis_server: RedisServer, namespace: str, kernel_addr: str, config_dir: Path) -> dict[str, str]:
    return {
        "CORETEX_REDIS_URL": redis_server.url,
        "CORETEX_NAMESPACE": namespace,
        "CORETEX_KERNEL_ADDR": kernel_addr,
        "CORETEX_KERNEL_TIMEOUT": "1",
        "CORETEX_CONFIG_DIR": str(config_dir),
        "CORETEX_POLICIES_DIR": str(REPO / "policies"),
    }


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    kernel_addr = f"127.0.0.1:{free_port()}"
    config_dir = config_with_pool(tmp / "config", "idle", "job.idle")  # a pool nobody consumes: messages stay queued
    env = _env(redis_server, "e2e" + uuid.uuid4().hex[:8], kernel_addr, config_dir)
    processes = ProcessStack(env, tmp / "logs", cwd=REPO)
    processes.start("kernel", "kernel", "--listen", kernel_addr)
    processes.start("control", "control", "-c", "1")
    processes.start("echo", "worker", "--pool", "echo", "--app", "examples.echo.worker:worker", "-c", "1")
    services = Services(load_settings(processes.env))
    try:
        wait_for_port("127.0.0.1", int(kernel_addr.rsplit(":", 1)[1]), timeout=30)
        yield Stack(processes, services)
    finally:
        processes.stop_all()
        services.close()


def test_echo_job_succeeds_with_its_input_as_result(stack: Stack) -> None:
    payload = {"message": "hello", "n": [1, 2, 3], "nested": {"ok": True}}
    job_id = stack.submit("job.echo", payload, tenant_id="acme")

    record = stack.wait_terminal(job_id)

    assert record.state is JobState.SUCCEEDED, record
    assert (record.decision, record.rule_id) == ("ALLOW", "allow-platform-jobs")
    assert record.pool == "echo"
    assert record.result_ptr == f"redis://res:{job_id}"
    assert stack.services.pointers.get_json(record.result_ptr, "acme") == payload
    moves = [e["to"] for e in stack.services.jobs.history(job_id) if e["from"] != e["to"]]  # not pending notes
    assert moves == ["PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"]


def test_unmapped_topic_fails_fast_to_the_dlq(stack: Stack) -> None:
    job_id = stack.submit("job.nowhere", {"x": 1})

    record = stack.wait_terminal(job_id)

    assert record.state is JobState.FAILED
    assert record.error_code == "no_pool_mapping"
    assert "job.nowhere" in record.error_message
    entry = stack.services.dlq.get(job_id)
    assert (entry.error_code, entry.last_state, entry.attempts) == ("no_pool_mapping", "SCHEDULED", 0)
    assert "job.nowhere" in entry.error_message


def test_policy_deny_names_the_rule_and_never_runs(stack: Stack) -> None:
    job_id = stack.submit("job.danger.rm", {"path": "/"})

    record = stack.wait_terminal(job_id)

    assert record.state is JobState.DENIED
    assert record.rule_id == "deny-destructive"
    assert "destructive" in record.reason
    assert "RUNNING" not in [event["to"] for event in stack.services.jobs.history(job_id)]
    assert stack.services.dlq.get(job_id).error_code == "safety_denied"


def test_handler_error_fails_the_job_with_its_code(stack: Stack) -> None:
    job_id = stack.submit("job.echo", {"fail": "on purpose"})

    record = stack.wait_terminal(job_id)

    assert record.state is JobState.FAILED
    assert record.error_code == "echo_failure"
    assert "on purpose" in record.error_message
    assert stack.services.dlq.get(job_id).last_state == "RUNNING"


def test_dispatched_message_body_is_a_bare_cap_buspacket(stack: Stack) -> None:
    job_id = stack.submit("job.idle", {"k": "v"}, tenant_id="acme")
    eventually(lambda: stack.services.jobs.get(job_id).state is JobState.DISPATCHED,
               message="job to be dispatched")

    content_type, body = _raw_message(stack, stack.services.settings.pool_queue("idle"))

    assert content_type == "application/x-cap+protobuf"
    packet = buspacket_pb2.BusPacket.FromString(body)  # protobuf alone, no Coretex helper
    assert packet.WhichOneof("payload") == "job_request"
    assert packet.protocol_version == 1
    assert packet.job_request.job_id == job_id
    assert packet.job_request.topic == "job.idle"
    assert packet.job_request.meta.tenant_id == "acme"
    assert packet.job_request.context_ptr == f"redis://ctx:{job_id}"
    assert packet.trace_id == stack.services.jobs.get(job_id).trace_id


def _raw_message(stack: Stack, queue: str) -> tuple[str, bytes]:
    """The message as the broker holds it: kombu's JSON envelope in the Redis list, or AMQP's own."""
    settings = stack.services.settings
    if settings.broker_url.startswith("redis"):
        raw = stack.services.redis.lindex(f"{settings.namespace}:celery:{queue}", 0)
        assert raw is not None, f"no message on {queue}"
        envelope = json.loads(raw)
        return envelope["content-type"], base64.b64decode(envelope["body"])
    with stack.services.app.connection_for_read() as connection:
        channel = connection.default_channel
        message = channel.basic_get(queue, no_ack=False)  # py-amqp's own message: the bytes as sent
        assert message is not None, f"no message on {queue}"
        channel.basic_reject(message.delivery_tag, requeue=True)
        return str(message.properties["content_type"]), bytes(message.body)


def test_concurrent_duplicate_submits_create_one_job(stack: Stack) -> None:
    key = "idem-" + uuid.uuid4().hex
    request = SubmitRequest("job.echo", {"once": True}, JobMeta(tenant_id="acme"), idempotency_key=key)
    with ThreadPoolExecutor(max_workers=10) as pool:
        receipts = list(pool.map(lambda _: submit_job(stack.services, request), range(20)))

    assert len({r.job_id for r in receipts}) == 1
    assert sum(r.created for r in receipts) == 1
    other_tenant = submit_job(stack.services, SubmitRequest("job.echo", {}, JobMeta(tenant_id="other"),
                                                            idempotency_key=key))
    assert other_tenant.job_id != receipts[0].job_id
    assert stack.wait_terminal(receipts[0].job_id).state is JobState.SUCCEEDED


def test_kernel_unreachable_holds_the_job_then_denies_it_never_runs_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    dead_kernel = f"127.0.0.1:{free_port()}"  # nothing listens here
    env = _env(redis_server, "nokernel" + uuid.uuid4().hex[:8], dead_kernel, REPO / "config")
    env["CORETEX_KERNEL_WAIT_S"] = "8"
    processes = ProcessStack(env, tmp_path / "logs", cwd=REPO)
    processes.start("control", "control", "-c", "1")
    processes.start("beat", "beat", "--schedule-file", str(tmp_path / "beat-schedule"))
    processes.start("echo", "worker", "--pool", "echo", "--app", "examples.echo.worker:worker", "-c", "1")
    services = Services(load_settings(processes.env))
    stack = Stack(processes, services)
    try:
        job_id = stack.submit("job.echo", {"x": 1})
        waiting = eventually(lambda: (r := services.jobs.get(job_id)).pending_reason and r, timeout=30,
                             message="the job to wait for the kernel")
        record = stack.wait_terminal(job_id, timeout=60)
        states = [event["to"] for event in services.jobs.history(job_id)]
    finally:
        processes.stop_all()
        services.close()

    assert waiting.state is JobState.SCHEDULED and waiting.pending_reason.startswith("kernel_unavailable")
    assert record.state is JobState.DENIED
    assert record.error_code == "KERNEL_UNAVAILABLE"
    assert "RUNNING" not in states and "DISPATCHED" not in states


def test_a_job_waiting_for_the_kernel_runs_once_the_kernel_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    kernel_addr = f"127.0.0.1:{free_port()}"
    env = _env(redis_server, "latekernel" + uuid.uuid4().hex[:8], kernel_addr, REPO / "config")
    env["CORETEX_KERNEL_WAIT_S"] = "60"
    processes = ProcessStack(env, tmp_path / "logs", cwd=REPO)
    processes.start("control", "control", "-c", "1")
    processes.start("beat", "beat", "--schedule-file", str(tmp_path / "beat-schedule"))
    processes.start("echo", "worker", "--pool", "echo", "--app", "examples.echo.worker:worker", "-c", "1")
    services = Services(load_settings(processes.env))
    stack = Stack(processes, services)
    try:
        job_id = stack.submit("job.echo", {"late": True})
        eventually(lambda: services.jobs.get(job_id).pending_reason.startswith("kernel_unavailable"), timeout=30,
                   message="the job to wait for the kernel")
        processes.start("kernel", "kernel", "--listen", kernel_addr)
        record = stack.wait_terminal(job_id, timeout=60)
    finally:
        processes.stop_all()
        services.close()

    assert record.state is JobState.SUCCEEDED and record.decision == "ALLOW"


def test_running_scheduler_routes_by_a_new_pack_overlay_within_two_seconds(stack: Stack) -> None:
    before = stack.wait_terminal(stack.submit("job.overlay.demo"))
    assert before.error_code == "no_pool_mapping"

    snapshot = stack.services.config.set(
        "pack", "overlay-demo", {"pools": {"topics": {"job.overlay.demo": "idle"}}},
        author="test", message="map job.overlay.demo to the idle pool",
    )

    # The submitter runs the pipeline itself: its routing table follows the config within 2 s ...
    eventually(lambda: stack.services.router.version >= snapshot.version, timeout=2.0,
               message="the submitting process to switch to the new config")
    job_id = stack.submit("job.overlay.demo")
    assert stack.services.jobs.get(job_id).state is JobState.DISPATCHED
    assert stack.services.jobs.get(job_id).pool == "idle"
    # ... and so does a control worker's, for the jobs handed to it (retries, fan-outs, resubmits).
    queued = submit_job(stack.services, SubmitRequest("job.overlay.demo", {}, JobMeta()), inline=False).job_id
    record = eventually(lambda: (r := stack.services.jobs.get(queued)).state is JobState.DISPATCHED and r,
                        message="the control worker to dispatch by the new routing")
    assert record.pool == "idle"


def test_job_carrying_a_secret_reference_is_tagged_for_policy(stack: Stack) -> None:
    job_id = stack.submit("job.echo", {"db": "secret://vault/prod/db#password", "n": 1}, tenant_id="acme")

    record = stack.wait_terminal(job_id)

    assert "secrets" in record.meta.risk_tags
    assert record.meta.labels.get("secrets_present") == "true"
    # the reference itself travels untouched (it is not a secret, only a pointer to one)
    assert stack.services.pointers.get_json(record.result_ptr, "acme")["db"] == "secret://vault/prod/db#password"


def test_secrets_in_a_failing_handler_never_reach_logs_record_or_dlq(stack: Stack) -> None:
    token = "ghp_" + "Z9" * 18  # a GitHub token shape
    job_id = stack.submit("job.echo", {"fail": f"could not push with {token}"})

    record = stack.wait_terminal(job_id)

    assert record.state is JobState.FAILED
    assert token not in record.error_message
    assert "[REDACTED:" in record.error_message
    assert token not in stack.services.dlq.get(job_id).error_message
    eventually(lambda: job_id in stack.processes.log("echo"), message="the failure to be logged")
    assert token not in stack.processes.log("echo")
    assert token not in stack.processes.log("control")


def test_every_check_lands_in_the_hash_chained_decision_audit(stack: Stack) -> None:
    allowed = stack.submit("job.echo", {"x": 1}, tenant_id="acme")
    denied = stack.submit("job.danger.rm", tenant_id="acme")
    stack.wait_terminal(allowed), stack.wait_terminal(denied)
    audit = DecisionAuditLog(stack.services.redis, stack.services.settings)

    records = {r.job_id: r for r in audit.read(500) if r.job_id in (allowed, denied)}

    assert (records[allowed].decision, records[allowed].rule_id) == ("allow", "allow-platform-jobs")
    assert (records[denied].decision, records[denied].rule_id) == ("deny", "deny-destructive")
    assert records[denied].tenant == "acme"
    assert audit.verify().ok


def test_the_check_sent_ahead_of_the_record_is_the_jobs_only_one_and_sees_its_secrets(stack: Stack) -> None:
    plain = stack.submit("job.echo", {"x": 1}, tenant_id="acme")
    secret = stack.submit("job.echo", {"db": "secret://vault/prod/db#password"}, tenant_id="acme")
    stack.wait_terminal(plain), stack.wait_terminal(secret)
    audit = DecisionAuditLog(stack.services.redis, stack.services.settings)

    asked = [r.request_message() for r in audit.read(500) if r.job_id in (plain, secret)]

    assert sorted(request.job_id for request in asked) == sorted([plain, secret])  # one audited Check per job
    risk_tags = {request.job_id: set(request.meta.risk_tags) for request in asked}
    assert "secrets" in risk_tags[secret] and "secrets" not in risk_tags[plain]


def test_a_malformed_packet_is_quarantined_and_the_worker_keeps_serving(stack: Stack) -> None:
    settings = stack.services.settings
    stack.services.app.send_task(EXECUTE_TASK, args=(b"\xff\x00 not a bus packet",), serializer=SERIALIZER,
                                 queue=settings.pool_queue("echo"))

    entry = eventually(lambda: stack.services.dlq.malformed(), timeout=30, message="the packet to be quarantined")[0]

    assert entry["queue"] == EXECUTE_TASK and entry["size"] == str(len(b"\xff\x00 not a bus packet"))
    assert base64.b64decode(entry["body_b64"]) == b"\xff\x00 not a bus packet"
    assert entry["reason"]
    assert stack.wait_terminal(stack.submit("job.echo", {"after": "garbage"})).state is JobState.SUCCEEDED


def test_a_job_for_a_pool_nobody_consumes_says_so(stack: Stack) -> None:
    job_id = stack.submit("job.idle", {})

    record = eventually(lambda: (r := stack.services.jobs.get(job_id)).pending_reason and r, timeout=30,
                        message="the dispatched job to explain why it does not run")

    assert record.state is JobState.DISPATCHED
    assert record.pending_reason.startswith("no_live_worker: no worker of pool idle")
