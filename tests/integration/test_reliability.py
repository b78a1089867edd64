"""Retries with backoff, timeouts and lost workers, with real kernel, control worker, beat and two
pack workers: no job is lost, and each result is applied once."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coretex.agent.v1.buspacket_pb2 import BusPacket
from coretex.errors import NotFoundError
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler import dispatcher, submit
from coretex.scheduler.cancel import cancel_job
from coretex.scheduler.dlq_ops import retry_dead_letter
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.services import Services
from coretex.settings import load_settings
from coretex.testing import ProcessStack, RedisServer, eventually, free_port, wait_for_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    processes: ProcessStack
    services: Services
    tmp: Path

    def submit(self, topic: str, tenant: str = "default", actor: str = "", **payload: object) -> tuple[str, Path]:
        log = self.tmp / f"{uuid.uuid4().hex}.log"
        log.touch()
        meta = JobMeta(tenant_id=tenant, actor_id=actor)
        job_id = submit_job(self.services, SubmitRequest(topic, {**payload, "log": str(log)}, meta)).job_id
        return job_id, log

    def ended(self, job_id: str, timeout: float = 45) -> JobRecord:
        return eventually(lambda: (r := self.services.jobs.get(job_id)).terminal and r, timeout=timeout,
                          message=f"job {job_id} to end")


def _config(target: Path) -> Path:
    shutil.copytree(REPO / "config", target)
    pools = yaml.safe_load((target / "pools.yaml").read_text())
    pools["pools"]["rel"] = {"requires": []}
    pools["pools"]["narrow"] = {"requires": [], "max_queue_depth": 1, "max_hold_s": 30}
    pools["pools"]["choked"] = {"requires": [], "max_queue_depth": 1, "max_hold_s": 2}
    pools["pools"]["single"] = {"requires": [], "max_in_flight": 1, "max_hold_s": 60}
    pools["topics"].update({"job.narrow": "narrow", "job.choked": "choked", "job.single": "single"})
    pools["topics"].update({t: "rel" for t in ("job.flaky", "job.broken", "job.slow", "job.hang", "job.patient")})
    (target / "pools.yaml").write_text(yaml.safe_dump(pools))
    timeouts = {
        "default": {"timeout_seconds": 60, "max_retries": 2},
        "topics": {"job.hang": {"timeout_seconds": 1, "max_retries": 1}},
    }
    (target / "timeouts.yaml").write_text(yaml.safe_dump(timeouts))
    return target


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("reliability")
    kernel_addr = f"127.0.0.1:{free_port()}"
    variables = {
        "CORETEX_REDIS_URL": redis_server.url,
        "CORETEX_NAMESPACE": "rel" + uuid.uuid4().hex[:8],
        "CORETEX_KERNEL_ADDR": kernel_addr,
        "CORETEX_CONFIG_DIR": str(_config(tmp / "config")),
        "CORETEX_POLICIES_DIR": str(REPO / "policies"),
        "CORETEX_LEASE_S": "2",
        "CORETEX_LOST_SUBMIT_S": "3",
    }
    processes = ProcessStack(variables, tmp / "logs", cwd=REPO)
    processes.start("kernel", "kernel", "--listen", kernel_addr)
    processes.start("control", "control", "-c", "2")
    processes.start("beat", "beat", "--schedule-file", str(tmp / "beat-schedule"))
    for name in ("w1", "w2"):
        processes.start(name, "worker", "--pool", "rel", "--app", "tests.workers.reliability:worker", "-c", "1")
    services = Services(load_settings(processes.env))
    wait_for_port("127.0.0.1", int(kernel_addr.rsplit(":", 1)[1]), timeout=30)
    try:
        yield Env(processes, services, tmp)
    finally:
        processes.stop_all()
        services.close()


def test_transient_failures_are_retried_with_backoff_until_success(env: Env) -> None:
    job_id, log = env.submit("job.flaky", succeed_on=3)

    record = env.ended(job_id)

    assert record.state is JobState.SUCCEEDED, record
    assert record.attempts == 3 and record.max_retries == 2
    assert env.services.pointers.get_json(record.result_ptr, "default") == {"tries": 3}
    states = [e["to"] for e in env.services.jobs.history(job_id) if e["from"] != e["to"]]
    assert states.count("DISPATCHED") == 3 and states.count("SCHEDULED") == 3  # first schedule + 2 retries
    notes = [e["reason"] for e in env.services.jobs.history(job_id) if e["to"] == "SCHEDULED"][1:]
    assert all("retry in" in note for note in notes)


def test_retries_run_out_into_the_dlq(env: Env) -> None:
    job_id, log = env.submit("job.flaky", succeed_on=99)

    record = env.ended(job_id)

    assert record.state is JobState.FAILED and record.attempts == 3
    entry = env.services.dlq.get(job_id)
    assert entry.error_code == "max_retries_exceeded" and entry.attempts == 3
    assert "transient failure" in entry.error_message
    assert len(log.read_text().splitlines()) == 3


def test_permanent_failure_is_not_retried(env: Env) -> None:
    job_id, log = env.submit("job.broken")

    record = env.ended(job_id)

    assert record.state is JobState.FAILED and record.attempts == 1
    assert env.services.dlq.get(job_id).error_code == "bad_request"
    assert len(log.read_text().splitlines()) == 1


def test_timeout_then_retry_then_dlq(env: Env) -> None:
    job_id, log = env.submit("job.hang", sleep=30)

    record = env.ended(job_id, timeout=60)

    assert record.state is JobState.TIMEOUT and record.attempts == 2
    entry = env.services.dlq.get(job_id)
    assert entry.error_code == "max_retries_exceeded" and entry.last_state == "RUNNING"
    states = [e["to"] for e in env.services.jobs.history(job_id)]
    assert "TIMEOUT" == states[-1] and states.count("RUNNING") == 2
    assert "finish" not in log.read_text()  # the handler was interrupted both times


def test_killed_worker_job_is_retried_elsewhere_and_applied_once(env: Env) -> None:
    job_id, log = env.submit("job.slow", sleep=3)
    running = eventually(lambda: (r := env.services.jobs.get(job_id)).state is JobState.RUNNING and r,
                         timeout=30, message="the slow job to start")
    victim = next(name for name, proc in env.processes.procs.items() if running.worker_id.endswith(f"-{proc.pid}"))
    os.killpg(env.processes.procs[victim].pid, signal.SIGKILL)
    env.processes.procs.pop(victim).wait(timeout=10)

    record = env.ended(job_id, timeout=60)

    assert record.state is JobState.SUCCEEDED, record
    # Redis: the broker keeps the message until its visibility timeout, so the lease reaper retries
    # (attempt 2). RabbitMQ requeues it the moment the connection drops: same attempt, other worker.
    assert record.attempts == (2 if env.services.settings.broker_url.startswith("redis") else 1)
    assert not record.worker_id.endswith(f"-{running.worker_id.rsplit('-', 1)[1]}")
    lines = log.read_text().splitlines()
    assert sum(line.startswith("start") for line in lines) == 2
    assert sum(line.startswith("finish") for line in lines) == 1
    reasons = [e["reason"] for e in env.services.jobs.history(job_id)]
    assert any("worker_lost" in r for r in reasons) == (record.attempts == 2)
    assert [e["to"] for e in env.services.jobs.history(job_id)].count("SUCCEEDED") == 1


def test_cancel_of_a_running_job_stops_its_handler_and_it_is_never_retried(env: Env) -> None:
    job_id, log = env.submit("job.patient")
    eventually(lambda: env.services.jobs.get(job_id).state is JobState.RUNNING, timeout=30,
               message="the patient job to start")

    state = cancel_job(env.services, job_id, "operator-1", "wrong target")

    assert state is JobState.CANCELLED
    assert env.services.jobs.get(job_id).state is JobState.CANCELLED  # at once, not after the worker stops
    eventually(lambda: "stopped" in log.read_text(), timeout=10, message="the handler to see the cancel")
    record = env.services.jobs.get(job_id)
    assert record.state is JobState.CANCELLED and record.attempts == 1
    assert "wrong target" in record.error_message
    assert "finish" not in log.read_text()
    assert cancel_job(env.services, job_id, "operator-2") is JobState.CANCELLED  # idempotent


def test_dead_letter_retry_creates_a_linked_job_and_delete_removes_the_entry(env: Env) -> None:
    job_id, log = env.submit("job.broken")
    env.ended(job_id)
    assert env.services.dlq.get(job_id).error_code == "bad_request"

    receipt = retry_dead_letter(env.services, job_id, "default", "operator-1")
    again = retry_dead_letter_or_none(env, job_id)

    retried = env.ended(receipt.job_id)
    assert retried.meta.labels["retry_of"] == job_id and retried.topic == "job.broken"
    assert again is None  # the entry is gone once retried: a second click does nothing
    assert env.services.pointers.get_json(retried.context_ptr, "default")["log"] == str(log)
    assert env.services.dlq.get(receipt.job_id).error_code == "bad_request"
    assert env.services.dlq.delete(receipt.job_id) is True
    assert env.services.dlq.delete(receipt.job_id) is False
    with pytest.raises(NotFoundError):
        env.services.dlq.get(receipt.job_id)


def retry_dead_letter_or_none(env: Env, job_id: str) -> object:
    try:
        return retry_dead_letter(env.services, job_id, "default", "operator-1")
    except NotFoundError:
        return None


def test_backpressure_holds_jobs_with_a_reason_and_releases_them_when_the_pool_drains(env: Env) -> None:
    first, _ = env.submit("job.narrow")
    eventually(lambda: env.services.jobs.get(first).state is JobState.DISPATCHED, timeout=30,
               message="the first job to fill the narrow pool's queue")
    held, _ = env.submit("job.narrow")
    record = eventually(lambda: (r := env.services.jobs.get(held)).pending_reason and r, timeout=30,
                        message="the second job to be held")
    assert record.state is JobState.SCHEDULED and record.pending_reason.startswith("pool_overloaded")

    env.processes.start("narrow", "worker", "--pool", "narrow", "--app", "tests.workers.narrow:worker", "-c", "1")

    assert env.ended(first).state is JobState.SUCCEEDED
    done = env.ended(held)
    assert done.state is JobState.SUCCEEDED and done.pending_reason == ""
    reasons = [e["reason"] for e in env.services.jobs.history(held)]
    assert any(r.startswith("pool_overloaded") for r in reasons)  # the history keeps why it waited


def test_backpressure_gives_up_after_the_pools_hold_time(env: Env) -> None:
    first, _ = env.submit("job.choked")
    eventually(lambda: env.services.jobs.get(first).state is JobState.DISPATCHED, timeout=30,
               message="the first job to fill the choked pool's queue")
    second, _ = env.submit("job.choked")

    record = env.ended(second, timeout=30)

    assert record.state is JobState.FAILED and record.error_code == "pool_overloaded"
    assert env.services.dlq.get(second).error_code == "pool_overloaded"
    assert env.services.jobs.get(first).state is JobState.DISPATCHED  # nobody consumes this pool


def test_retry_backoff_is_a_visible_pending_reason(env: Env) -> None:
    job_id, _ = env.submit("job.flaky", succeed_on=2)
    waiting = eventually(lambda: (r := env.services.jobs.get(job_id)).pending_reason.startswith("retry_backoff")
                         and r, timeout=30, message="the job to wait for its retry")
    assert waiting.state is JobState.SCHEDULED and waiting.error_code == "handler_error"
    assert env.ended(job_id).state is JobState.SUCCEEDED


def test_tenant_max_concurrent_jobs_holds_the_rest_until_one_ends(env: Env) -> None:
    env.services.config.set("tenant", "small", {"limits": {"max_concurrent_jobs": 1}}, author="t", message="quota 1")
    first, _ = env.submit("job.slow", tenant="small", sleep=2)
    eventually(lambda: env.services.jobs.get(first).state is JobState.RUNNING, timeout=30,
               message="the first job to run")
    second, _ = env.submit("job.slow", tenant="small", sleep=0)
    other, _ = env.submit("job.slow", tenant="default", sleep=0)  # other tenants are not held

    held = eventually(lambda: (r := env.services.jobs.get(second)).pending_reason.startswith("tenant_quota") and r,
                      timeout=30, message="the second job to be held by the quota")
    assert held.state is JobState.SCHEDULED
    assert env.ended(other).state is JobState.SUCCEEDED
    assert env.ended(first).state is JobState.SUCCEEDED
    done = env.ended(second)
    assert done.state is JobState.SUCCEEDED and done.attempts == 1
    first_end = float(env.services.jobs.history(first)[-1]["at"])
    second_dispatch = next(float(e["at"]) for e in env.services.jobs.history(second) if e["to"] == "DISPATCHED")
    assert second_dispatch >= first_end  # never two of the tenant's jobs at once


def _first_dispatch(env: Env, job_id: str) -> float:
    return next(float(e["at"]) for e in env.services.jobs.history(job_id) if e["to"] == "DISPATCHED")


def _end(env: Env, job_id: str) -> float:
    return float(env.services.jobs.history(job_id)[-1]["at"])


def test_per_actor_limit_holds_only_that_actors_extra_jobs(env: Env) -> None:
    env.services.config.set("tenant", "crew", {"limits": {"max_concurrent_jobs_per_actor": 1}}, author="t",
                            message="one job per person")
    alice1, _ = env.submit("job.slow", tenant="crew", actor="alice", sleep=2)
    eventually(lambda: env.services.jobs.get(alice1).state is JobState.RUNNING, timeout=30,
               message="alice's first job to run")
    alice2, _ = env.submit("job.slow", tenant="crew", actor="alice", sleep=0)
    bob, _ = env.submit("job.slow", tenant="crew", actor="bob", sleep=0)

    held = eventually(lambda: (r := env.services.jobs.get(alice2)).pending_reason.startswith("actor_quota") and r,
                      timeout=30, message="alice's second job to be held")
    assert held.state is JobState.SCHEDULED
    assert env.ended(bob).state is JobState.SUCCEEDED  # another actor of the tenant is not held
    assert env.ended(alice1).state is JobState.SUCCEEDED and env.ended(alice2).state is JobState.SUCCEEDED
    assert _first_dispatch(env, alice2) >= _end(env, alice1)


def test_pool_in_flight_limit_holds_then_releases(env: Env) -> None:
    env.processes.start("single", "worker", "--pool", "single", "--app", "tests.workers.single:worker", "-c", "2")
    first, _ = env.submit("job.single", sleep=2)
    eventually(lambda: env.services.jobs.get(first).state in (JobState.DISPATCHED, JobState.RUNNING), timeout=30,
               message="the first job to take the pool's only slot")
    second, _ = env.submit("job.single", sleep=0)

    held = eventually(lambda: (r := env.services.jobs.get(second)).pending_reason.startswith("pool_overloaded")
                      and r, timeout=30, message="the second job to wait for the slot")
    assert held.state is JobState.SCHEDULED
    assert env.ended(first).state is JobState.SUCCEEDED
    assert env.ended(second).state is JobState.SUCCEEDED
    assert _first_dispatch(env, second) >= _end(env, first)
    assert env.services.jobs.active_count("pool:single") == 0  # every finished job left the set


def test_a_jobs_own_max_retries_replaces_its_topics(env: Env) -> None:
    log = env.tmp / f"{uuid.uuid4().hex}.log"
    log.touch()
    request = SubmitRequest("job.flaky", {"succeed_on": 3, "log": str(log)}, JobMeta(), max_retries=0)
    job_id = submit_job(env.services, request).job_id

    record = env.ended(job_id)

    assert record.state is JobState.FAILED and record.attempts == 1 and record.max_retries == 0
    assert env.services.dlq.get(job_id).error_code == "handler_error"  # no retries were allowed


def test_a_job_whose_submitter_died_before_dispatching_it_is_submitted_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = env.tmp / f"{uuid.uuid4().hex}.log"
    log.touch()
    meta = JobMeta(tenant_id="default")
    # Created, but never through the pipeline (as if the submitter died right after creating it).
    created: list[JobRecord] = []

    def die(_services: Services, record: JobRecord, *_rest: object, **_kwargs: object) -> None:
        created.append(record)
        raise _Killed

    monkeypatch.setattr(submit, "dispatch_accepted", die)
    with pytest.raises(_Killed):
        submit_job(env.services, SubmitRequest("job.flaky", {"succeed_on": 1, "log": str(log)}, meta))
    monkeypatch.undo()
    job_id = created[0].job_id
    assert env.services.jobs.get(job_id).state is JobState.SCHEDULED

    record = env.ended(job_id)

    assert record.state is JobState.SUCCEEDED and record.attempts == 1
    assert record.updated_at - record.created_at >= 3  # it waited out CORETEX_LOST_SUBMIT_S first
    assert job_id not in env.services.jobs.undispatched(time.time() + 3600)


def test_a_pipeline_error_in_the_submitter_leaves_the_job_to_the_tick(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = env.tmp / f"{uuid.uuid4().hex}.log"
    log.touch()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in a pipeline stage")

    monkeypatch.setattr(dispatcher, "run_stages", broken)
    receipt = submit_job(env.services, SubmitRequest("job.flaky", {"succeed_on": 1, "log": str(log)},
                                                     JobMeta(tenant_id="default")))
    monkeypatch.undo()
    assert receipt.created and receipt.state is JobState.SCHEDULED  # accepted, not lost, not run

    record = env.ended(receipt.job_id)

    assert record.state is JobState.SUCCEEDED and record.attempts == 1
    assert len(log.read_text().splitlines()) == 1


class _Killed(BaseException):
    """Stands for the dispatcher's process dying: nothing after it runs, not even except-Exception."""


def test_a_job_dispatched_by_a_process_that_died_before_sending_it_still_runs(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = env.tmp / f"{uuid.uuid4().hex}.log"
    log.touch()
    sent: list[str] = []

    def die(_app: object, _task: str, packet: BusPacket, **_options: object) -> None:
        sent.append(packet.job_request.job_id)
        raise _Killed

    monkeypatch.setattr(dispatcher, "send_packet", die)
    # As with a broker other than the Redis holding the job: the message is sent after the move.
    # (On the same Redis the move pushes the message itself, so there is no such window.)
    monkeypatch.setattr(dispatcher, "packet_delivery", lambda *_args, **_kwargs: None)
    with pytest.raises(_Killed):
        submit_job(env.services, SubmitRequest("job.flaky", {"succeed_on": 1, "log": str(log)},
                                               JobMeta(tenant_id="default")))
    monkeypatch.undo()
    job_id = sent[0]
    assert env.services.jobs.get(job_id).state is JobState.DISPATCHED  # and no message anywhere

    ended = env.ended(job_id)

    assert ended.state is JobState.SUCCEEDED and ended.attempts == 1  # the same attempt, sent again
    assert len(log.read_text().splitlines()) == 1
