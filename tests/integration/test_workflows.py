"""Workflow runs end to end with real processes: kernel (gRPC), control worker, beat and a pack
worker (Celery subprocesses) on a real redis-server."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from config_support import config_with_pool
from workflow_support import TENANT, WorkflowStack, lines

from coretex.agent.v1 import buspacket_pb2
from coretex.engine.errors import ApprovalRefusedError, RunRefusedError
from coretex.kernel.audit import DecisionAuditLog
from coretex.model.job import JobState
from coretex.model.schema import SchemaViolationError
from coretex.services import Services
from coretex.settings import load_settings
from coretex.store.runs import RunLimitError
from coretex.testing import ProcessStack, RedisServer, eventually, free_port, wait_for_port
from coretex.workflow.run import Run, RunStatus, StepStatus, run_to_dict

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Flow(WorkflowStack):
    def wait(self, run_id: str, timeout: float = 40, status: RunStatus | None = None) -> Run:
        def done() -> Run | None:
            run = self.engine.get(TENANT, run_id)
            if status is not None:
                return run if run.status is status else None
            return run if run.terminal else None

        try:
            return eventually(done, timeout=timeout, interval=0.1, message=f"run {run_id} to end")
        except AssertionError:
            print(self.engine.get(TENANT, run_id))
            for name in self.processes.procs:
                print(f"---- {name} log ----\n{self.processes.log(name)[-4000:]}")
            raise


def _policies(target: Path) -> Path:
    """The base bundle plus one that forbids some workflows, so a run start can be denied."""
    shutil.copytree(REPO / "policies", target)
    (target / "tests.yaml").write_text(yaml.safe_dump({
        "version": 1, "default_decision": "deny",
        "rules": [
            {"id": "deny-forbidden-workflows", "match": {"topics": ["workflow.forbidden-*"]},
             "decision": "deny", "reason": "forbidden workflows never start"},
            {"id": "no-dry-runs-of-guarded", "match": {"topics": ["job.flow.guarded"], "labels": {"dry_run": "true"}},
             "decision": "deny", "reason": "guarded jobs are never simulated"},
            {"id": "cap-retries", "match": {"topics": ["job.flow.capped"]}, "decision": "allow_with_constraints",
             "reason": "capped jobs retry once", "constraints": {"budgets": {"max_retries": 1}}},
        ],
    }))
    return target


def _start_control(processes: ProcessStack, name: str = "control") -> None:
    processes.start(name, "control", "-c", "2")


@pytest.fixture(scope="module")
def flow(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    tmp = tmp_path_factory.mktemp("flow")
    kernel_addr = f"127.0.0.1:{free_port()}"
    env = {
        "CORETEX_REDIS_URL": redis_server.url,
        "CORETEX_NAMESPACE": "wf" + uuid.uuid4().hex[:8],
        "CORETEX_KERNEL_ADDR": kernel_addr,
        "CORETEX_KERNEL_TIMEOUT": "2",
        "CORETEX_CONFIG_DIR": str(config_with_pool(tmp / "config", "flow", "job.flow.*")),
        "CORETEX_POLICIES_DIR": str(_policies(tmp / "policies")),
        "CORETEX_LEASE_S": "6",
        "PYTHONPATH": str(REPO),
    }
    processes = ProcessStack(env, tmp / "logs", cwd=REPO)
    processes.start("kernel", "kernel", "--listen", kernel_addr)
    _start_control(processes)
    processes.start("beat", "beat", "--schedule-file", str(tmp / "beat-schedule"))
    processes.start("flow", "worker", "--pool", "flow", "--app", "tests.workers.flow:worker", "-c", "4")
    services = Services(load_settings(processes.env))
    try:
        wait_for_port("127.0.0.1", int(kernel_addr.rsplit(":", 1)[1]), timeout=30)
        eventually(lambda: services.workers.pool_alive("flow", time.time(), 5.0), timeout=30,
                   message="the flow worker's first heartbeat")
        yield Flow(processes, services, tmp)
    finally:
        processes.stop_all()
        services.close()


def test_diamond_runs_branches_in_parallel_and_joins(flow: Flow) -> None:
    log = flow.log("diamond")
    run_id = flow.start({
        "id": "diamond",
        "output": {"total": "${steps.left.output.v + steps.right.output.v}"},
        "steps": [
            {"id": "top", "type": "worker", "topic": "job.flow.add", "input": {"n": "${input.n}", "log": str(log)}},
            {"id": "left", "type": "worker", "topic": "job.flow.add", "depends_on": ["top"],
             "input": {"n": "${steps.top.output.v}", "sleep": 1.0, "log": str(log)}},
            {"id": "right", "type": "worker", "topic": "job.flow.add", "depends_on": ["top"],
             "input": {"n": "${steps.top.output.v * 10}", "sleep": 1.0, "log": str(log)}},
            {"id": "join", "type": "worker", "topic": "job.flow.echo", "depends_on": ["left", "right"],
             "input": {"sum": "${steps.left.output.v + steps.right.output.v}"}},
        ],
    }, {"n": 1})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED, run
    assert run.steps["join"].output == {"sum": 3 + 21}
    assert run.output == {"total": 24}
    left, right = run.steps["left"], run.steps["right"]
    assert left.started_at < right.finished_at and right.started_at < left.finished_at  # they overlapped
    assert run.steps["join"].started_at >= max(left.finished_at, right.finished_at)
    assert len(lines(log, "run")) == 3
    dispatches = [e for e in flow.timeline(run_id) if e["type"] == "dispatch"]
    assert [d["step"] for d in dispatches][0] == "top" and len(dispatches) == 4
    for entry in dispatches:  # the input pointer each job was created with
        assert flow.services.jobs.get(entry["job_id"]).context_ptr == entry["input_ptr"]
    job = flow.services.jobs.get(run.steps["top"].job_id)
    assert (job.run_id, job.step_id, job.decision, job.trace_id) == (run_id, "top", "ALLOW", run.trace_id)
    assert run_to_dict(flow.engine.replay(TENANT, run_id)) == run_to_dict(run)
    # each step's job was checked by the kernel exactly once, its Check sent ahead of its record
    job_ids = sorted(step.job_id for step in run.steps.values())
    audit = DecisionAuditLog(flow.services.redis, flow.services.settings)
    assert sorted(r.job_id for r in audit.read(2000) if r.job_id in job_ids) == job_ids


def test_approval_step_approved_by_a_quorum_of_others(flow: Flow) -> None:
    run_id = flow.start({"id": "gate", "steps": [
        {"id": "ok", "type": "approval", "approvers": ["operator"], "quorum": 2},
        {"id": "after", "type": "worker", "topic": "job.flow.add", "depends_on": ["ok"], "input": {"n": 1}},
    ]})
    run = flow.wait(run_id, status=RunStatus.WAITING)
    assert run.steps["ok"].status is StepStatus.WAITING

    with pytest.raises(ApprovalRefusedError, match="separation of duties"):
        flow.engine.decide_approval(TENANT, run_id, "ok", approver="alice", roles=["operator"], approve=True)
    with pytest.raises(ApprovalRefusedError, match="roles operator"):
        flow.engine.decide_approval(TENANT, run_id, "ok", approver="vic", roles=["viewer"], approve=True)
    flow.engine.decide_approval(TENANT, run_id, "ok", approver="bob", roles=["operator"], approve=True, reason="lgtm")
    with pytest.raises(ApprovalRefusedError, match="already decided"):
        flow.engine.decide_approval(TENANT, run_id, "ok", approver="bob", roles=["operator"], approve=True)
    assert flow.engine.get(TENANT, run_id).steps["ok"].status is StepStatus.WAITING  # quorum is 2
    flow.engine.decide_approval(TENANT, run_id, "ok", approver="carol", roles=["operator"], approve=True)

    run = flow.wait(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert run.steps["ok"].output == {"approved_by": ["bob", "carol"]}
    approvals = [e for e in flow.timeline(run_id) if e["type"] == "approval"]
    assert [(a["by"], a["reason"]) for a in approvals] == [("bob", "lgtm"), ("carol", "")]


def test_approval_rejected_fails_the_run_and_blocks_dependants(flow: Flow) -> None:
    run_id = flow.start({"id": "gate-no", "steps": [
        {"id": "ok", "type": "approval", "approvers": ["operator"]},
        {"id": "after", "type": "worker", "topic": "job.flow.add", "depends_on": ["ok"], "input": {"n": 1}},
    ]})
    flow.wait(run_id, status=RunStatus.WAITING)

    flow.engine.decide_approval(TENANT, run_id, "ok", approver="bob", roles=["operator"], approve=False,
                                reason="not today")

    run = flow.wait(run_id)
    assert run.status is RunStatus.FAILED
    assert run.steps["ok"].status is StepStatus.FAILED
    assert run.steps["ok"].error_code == "approval_rejected"
    assert "not today" in run.steps["ok"].error_message
    assert run.steps["after"].status is StepStatus.BLOCKED
    assert not run.steps["after"].job_id


def test_delay_step_waits_on_the_tick(flow: Flow) -> None:
    run_id = flow.start({"id": "delay", "steps": [
        {"id": "pause", "type": "delay", "delay_sec": 1.5},
        {"id": "after", "type": "worker", "topic": "job.flow.add", "depends_on": ["pause"], "input": {"n": 1}},
    ]})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    waited = run.steps["pause"].finished_at - run.steps["pause"].started_at
    assert waited >= 1.5
    assert run.steps["after"].started_at >= run.steps["pause"].finished_at


def test_conditions_gate_steps_and_skip_is_a_real_status(flow: Flow) -> None:
    run_id = flow.start({"id": "cond", "steps": [
        {"id": "big", "type": "condition", "expression": "input.n > 10"},
        {"id": "when_big", "type": "worker", "topic": "job.flow.add", "depends_on": ["big"],
         "condition": "steps.big.output", "input": {"n": 1}},
        {"id": "when_small", "type": "worker", "topic": "job.flow.add", "depends_on": ["big"],
         "condition": "${!steps.big.output}", "input": {"n": 2}},
        {"id": "last", "type": "worker", "topic": "job.flow.echo", "depends_on": ["when_big", "when_small"],
         "input": {"big": "${steps.when_big.status}", "small": "${steps.when_small.status}"}},
    ]}, {"n": 3})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.steps["big"].output is False
    assert run.steps["when_big"].status is StepStatus.SKIPPED
    assert run.steps["when_small"].status is StepStatus.SUCCEEDED
    assert run.steps["last"].output == {"big": "skipped", "small": "succeeded"}


def test_notify_step_emits_a_system_alert(flow: Flow) -> None:
    code = f"deploy.done.{uuid.uuid4().hex[:6]}"
    run_id = flow.start({"id": "notify", "steps": [
        {"id": "tell", "type": "notify", "level": "WARNING", "code": code, "message": "deployed ${input.svc}"},
    ]}, {"svc": "api"})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    key = f"{flow.services.settings.namespace}:alerts"
    entries = [fields for _, fields in flow.services.redis.xrange(key) if fields["code"] == code]
    assert len(entries) == 1
    packet = buspacket_pb2.BusPacket.FromString(base64.b64decode(entries[0]["packet"]))
    assert (packet.alert.level, packet.alert.message) == ("WARNING", "deployed api")
    assert packet.trace_id == run.trace_id


def test_step_retries_with_backoff_then_succeeds(flow: Flow) -> None:
    log = flow.log("flaky")
    run_id = flow.start({"id": "retry", "steps": [
        {"id": "shaky", "type": "worker", "topic": "job.flow.flaky", "input": {"succeed_on": 3, "log": str(log)},
         "retry": {"max_attempts": 3, "initial_backoff_sec": 0.5, "multiplier": 2}},
    ]})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED, run
    assert run.steps["shaky"].attempt == 3
    assert run.steps["shaky"].output == {"tries": 3}
    retries = [e for e in flow.timeline(run_id) if e["type"] == "retry_scheduled"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[1]["retry_at"] - retries[1]["at"] == pytest.approx(1.0)  # 0.5 * 2
    dispatches = [e for e in flow.timeline(run_id) if e["type"] == "dispatch"]
    assert dispatches[2]["at"] >= retries[1]["retry_at"]
    assert len({d["job_id"] for d in dispatches}) == 3  # one job per attempt


def test_step_timeout_cancels_the_job(flow: Flow) -> None:
    log = flow.log("timeout")
    run_id = flow.start({"id": "step-timeout", "steps": [
        {"id": "slow", "type": "worker", "topic": "job.flow.wait", "timeout_sec": 1.5,
         "input": {"sleep": 30, "log": str(log)}},
    ]})

    run = flow.wait(run_id)

    assert run.status is RunStatus.FAILED
    assert run.steps["slow"].status is StepStatus.TIMED_OUT
    assert run.steps["slow"].error_code in ("step_timeout", "timeout")
    job_id = next(e["job_id"] for e in flow.timeline(run_id) if e["type"] == "dispatch")
    eventually(lambda: flow.services.jobs.get(job_id).terminal, timeout=10)
    assert flow.services.jobs.get(job_id).state in (JobState.CANCELLED, JobState.TIMEOUT)
    eventually(lambda: lines(log, "stopped") or lines(log, "finish") == [], timeout=10)


def test_run_timeout_ends_the_run_and_stops_its_jobs(flow: Flow) -> None:
    log = flow.log("run-timeout")
    run_id = flow.start({"id": "run-timeout", "timeout_sec": 2, "steps": [
        {"id": "slow", "type": "worker", "topic": "job.flow.wait", "input": {"sleep": 30, "log": str(log)}},
        {"id": "never", "type": "worker", "topic": "job.flow.add", "depends_on": ["slow"], "input": {"n": 1}},
    ]})

    run = flow.wait(run_id)

    assert run.status is RunStatus.TIMED_OUT
    assert run.error_code == "run_timeout"
    assert run.steps["slow"].status is StepStatus.CANCELLED
    assert run.steps["never"].status is StepStatus.CANCELLED
    assert not run.timers
    eventually(lambda: lines(log, "stopped"), timeout=15, message="the running job to see its cancel")


def test_cancel_mid_run_stops_running_jobs(flow: Flow) -> None:
    log = flow.log("cancel")
    run_id = flow.start({"id": "cancel", "steps": [
        {"id": "a", "type": "worker", "topic": "job.flow.wait", "input": {"sleep": 30, "log": str(log), "tag": "a"}},
        {"id": "b", "type": "worker", "topic": "job.flow.wait", "input": {"sleep": 30, "log": str(log), "tag": "b"}},
        {"id": "c", "type": "worker", "topic": "job.flow.add", "depends_on": ["a"], "input": {"n": 1}},
    ]})
    eventually(lambda: len(lines(log, "start")) == 2, timeout=20, message="both jobs to start")

    flow.engine.cancel(TENANT, run_id, by="bob", reason="wrong target")

    run = flow.engine.get(TENANT, run_id)
    assert run.status is RunStatus.CANCELLED
    assert run.error_message == "cancelled by bob: wrong target"
    assert {s: run.steps[s].status for s in "abc"} == {s: StepStatus.CANCELLED for s in "abc"}
    eventually(lambda: len(lines(log, "stopped")) == 2, timeout=15, message="both jobs to stop")
    for step in "ab":
        assert flow.services.jobs.get(run.steps[step].job_id).state is JobState.CANCELLED
    assert [e for e in flow.timeline(run_id) if e["type"] == "run_status"][-1]["error_message"] == \
        "cancelled by bob: wrong target"


def test_rerun_from_a_middle_step_reuses_upstream_outputs(flow: Flow) -> None:
    log = flow.log("rerun")
    document = {"id": "rerun", "steps": [
        {"id": "first", "type": "worker", "topic": "job.flow.add", "input": {"n": 1, "log": str(log), "tag": "1"}},
        {"id": "second", "type": "worker", "topic": "job.flow.add", "depends_on": ["first"],
         "input": {"n": "${steps.first.output.v}", "log": str(log), "tag": "2"}},
        {"id": "third", "type": "worker", "topic": "job.flow.add", "depends_on": ["second"],
         "input": {"n": "${steps.second.output.v}", "log": str(log), "tag": "3"}},
    ]}
    run_id = flow.start(document)
    first = flow.wait(run_id)
    assert first.steps["third"].output == {"v": 4}

    receipt = flow.engine.rerun(TENANT, run_id, started_by="bob", from_step="second")
    again = flow.wait(receipt.run_id)

    assert again.status is RunStatus.SUCCEEDED
    assert (again.rerun_of, again.rerun_from) == (run_id, "second")
    assert again.steps["first"].reused_from == run_id
    assert again.steps["first"].output_ptr == first.steps["first"].output_ptr  # the immutable pointer
    assert again.steps["third"].output == {"v": 4}
    assert again.steps["second"].job_id != first.steps["second"].job_id
    assert [len(lines(log, f"run {tag} ")) for tag in "123"] == [1, 2, 2]

    whole = flow.wait(flow.engine.rerun(TENANT, run_id, started_by="bob").run_id)
    assert whole.status is RunStatus.SUCCEEDED and whole.input == first.input
    assert [len(lines(log, f"run {tag} ")) for tag in "123"] == [2, 3, 3]


def test_dry_run_dispatches_nothing_real(flow: Flow) -> None:
    log = flow.log("dry")
    run_id = flow.start({"id": "dry", "steps": [
        {"id": "plan", "type": "worker", "topic": "job.flow.sim", "input": {"log": str(log)}},
        {"id": "apply", "type": "worker", "topic": "job.flow.add", "depends_on": ["plan"],
         "input": {"n": 1, "log": str(log)}, "output_schema": {"type": "object", "required": ["v"]}},
        {"id": "after", "type": "worker", "topic": "job.flow.echo", "depends_on": ["apply"],
         "input": {"v": "${steps.apply.output.v}"}},
    ]}, dry_run=True)

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED, run
    assert run.dry_run
    assert run.steps["plan"].output == {"simulated": True}  # a worker that declares dry-run support
    would = run.steps["apply"].output
    assert would["dry_run"] is True and would["would_dispatch"]["pool"] == "flow"
    assert would["would_dispatch"]["decision"] == "ALLOW"
    assert lines(log, "dry") and not lines(log, "real") and not lines(log, "run")
    job = flow.services.jobs.get(run.steps["apply"].job_id)
    assert job.dry_run == 1 and job.meta.labels["dry_run"] == "true"
    assert "DISPATCHED" not in [e["to"] for e in flow.services.jobs.history(job.job_id)]


def test_schema_violations_name_the_field(flow: Flow) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    document = {"id": "schemas", "input_schema": schema, "steps": [
        {"id": "add", "type": "worker", "topic": "job.flow.add", "input": {"n": "${input.n}"},
         "input_schema": {"type": "object", "properties": {"n": {"maximum": 100}}}},
        {"id": "check", "type": "worker", "topic": "job.flow.echo", "depends_on": ["add"],
         "input": {"count": "${string(steps.add.output.v)}"},
         "output_schema": {"type": "object", "properties": {"count": {"type": "integer"}}}},
    ]}
    workflow_id = flow.save(document)

    with pytest.raises(SchemaViolationError, match="/n"):
        flow.engine.start(TENANT, workflow_id, {"n": "three"}, started_by="alice")

    too_big = flow.wait(flow.engine.start(TENANT, workflow_id, {"n": 500}, started_by="alice").run_id)
    assert too_big.steps["add"].error_code == "input_schema_violation"
    assert "/n" in too_big.steps["add"].error_message and "100" in too_big.steps["add"].error_message

    bad_output = flow.wait(flow.engine.start(TENANT, workflow_id, {"n": 1}, started_by="alice").run_id)
    assert bad_output.status is RunStatus.FAILED
    assert bad_output.steps["check"].error_code == "output_schema_violation"
    assert "/count" in bad_output.steps["check"].error_message


def test_fan_out_collects_outputs_in_order(flow: Flow) -> None:
    run_id = flow.start({"id": "fan", "steps": [
        {"id": "each", "type": "worker", "topic": "job.flow.add", "for_each": "input.items", "max_parallel": 3,
         "input": {"n": "${item * 10 + index}"}},
    ]}, {"items": [1, 2, 3, 4, 5, 6, 7]})

    run = flow.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.steps["each"].output == [{"v": i * 10 + (i - 1) + 1} for i in range(1, 8)]


def test_run_start_asks_the_kernel_and_dedupes_by_idempotency_key(flow: Flow) -> None:
    workflow_id = flow.save({"id": "idem", "steps": [
        {"id": "a", "type": "worker", "topic": "job.flow.add", "input": {"n": 1}}]})
    first = flow.engine.start(TENANT, workflow_id, {}, started_by="alice", idempotency_key="k1")
    again = flow.engine.start(TENANT, workflow_id, {}, started_by="alice", idempotency_key="k1")
    assert (again.run_id, again.created) == (first.run_id, False)
    other = flow.engine.start(TENANT, workflow_id, {}, started_by="alice", idempotency_key="k2")
    assert other.created and other.run_id != first.run_id

    denied = flow.save({"id": "forbidden", "steps": [
        {"id": "a", "type": "worker", "topic": "job.flow.add", "input": {"n": 1}}]})
    with pytest.raises(RunRefusedError, match="deny-forbidden-workflows"):
        flow.engine.start(TENANT, denied, {}, started_by="alice")
    # nothing was written (other tests' runs come and go, so look for this workflow's runs only)
    assert not [r for r in flow.engine.runs.list(TENANT, limit=10_000) if r.doc["workflow_id"] == denied]


def test_policy_matches_dry_runs_and_budgets_cap_step_retries(flow: Flow) -> None:
    dry = flow.wait(flow.start({"id": "guarded", "steps": [
        {"id": "g", "type": "worker", "topic": "job.flow.guarded", "input": {}}]}, dry_run=True))
    assert dry.status is RunStatus.FAILED
    assert dry.steps["g"].error_code == "safety_denied"
    assert [e.get("rule_id") for e in flow.timeline(dry.run_id) if e["type"] == "job_result"] == \
        ["no-dry-runs-of-guarded"]

    log = flow.log("capped")
    capped = flow.wait(flow.start({"id": "capped", "steps": [
        {"id": "c", "type": "worker", "topic": "job.flow.capped", "input": {"succeed_on": 5, "log": str(log)},
         "retry": {"max_attempts": 5, "initial_backoff_sec": 0.2}}]}))
    assert capped.status is RunStatus.FAILED
    assert capped.steps["c"].attempt == 2  # the policy's max_retries budget of 1, not the step's 5 attempts
    assert len(lines(log, "try")) == 2


def test_concurrent_duplicate_starts_create_one_run(flow: Flow) -> None:
    workflow_id = flow.save({"id": "dupes", "steps": [{"id": "gate", "type": "approval", "approvers": ["ops"]}]})
    with ThreadPoolExecutor(8) as pool:
        receipts = list(pool.map(lambda _: flow.engine.start(TENANT, workflow_id, {}, started_by="alice",
                                                             idempotency_key="same"), range(8)))
    assert len({r.run_id for r in receipts}) == 1
    assert sum(r.created for r in receipts) == 1


def test_a_tenant_limit_on_concurrent_runs_refuses_more(flow: Flow) -> None:
    tenant = "limited-" + uuid.uuid4().hex[:6]
    flow.services.config.set("tenant", tenant, {"limits": {"max_concurrent_runs": 2}}, author="ops",
                             message="two runs at once")
    workflow_id = f"gate-{uuid.uuid4().hex[:6]}"
    flow.engine.save_workflow(tenant, {"id": workflow_id, "steps": [
        {"id": "gate", "type": "approval", "approvers": ["ops"]}]}, saved_by="author")
    eventually(lambda: flow.services.live_config.section("limits", tenant).get("max_concurrent_runs") == 2,
               timeout=10)
    first = flow.engine.start(tenant, workflow_id, {}, started_by="alice")
    flow.engine.start(tenant, workflow_id, {}, started_by="alice")
    with pytest.raises(RunLimitError, match="limit 2"):
        flow.engine.start(tenant, workflow_id, {}, started_by="alice")
    flow.engine.cancel(tenant, first.run_id, by="alice")
    flow.engine.start(tenant, workflow_id, {}, started_by="alice")  # a slot freed up


def test_a_running_run_keeps_the_workflow_version_it_started_with(flow: Flow) -> None:
    workflow_id = flow.save({"id": "versions", "steps": [
        {"id": "gate", "type": "approval", "approvers": ["ops"]},
        {"id": "v1", "type": "notify", "depends_on": ["gate"], "message": "one"}]})
    run_id = flow.engine.start(TENANT, workflow_id, {}, started_by="alice").run_id
    saved = flow.engine.save_workflow(TENANT, {"id": workflow_id, "steps": [
        {"id": "gate", "type": "approval", "approvers": ["ops"]},
        {"id": "v2", "type": "notify", "depends_on": ["gate"], "message": "two"}]}, saved_by="author")
    assert saved.version == 2

    flow.engine.decide_approval(TENANT, run_id, "gate", approver="bob", roles=["ops"], approve=True)

    run = flow.wait(run_id)
    assert run.workflow.version == 1 and set(run.steps) == {"gate", "v1"}
    assert run.steps["v1"].output["message"] == "one"
    newer = flow.engine.start(TENANT, workflow_id, {}, started_by="alice").run_id
    assert set(flow.engine.get(TENANT, newer).steps) == {"gate", "v2"}


def test_killing_the_control_worker_mid_run_loses_nothing(flow: Flow) -> None:
    log = flow.log("fifty")
    steps = [{"id": f"s{i}", "type": "worker", "topic": "job.flow.add",
              "input": {"n": i, "log": str(log), "tag": f"s{i}"}, **({"depends_on": [f"s{i - 1}"]} if i else {})}
             for i in range(50)]
    run_id = flow.start({"id": "fifty", "steps": steps})
    current = "control"
    for kill in range(3):
        wanted = 8 + 12 * kill
        eventually(lambda n=wanted: len(lines(log, "run")) >= n, timeout=90, message="progress before a kill")
        control = flow.processes.procs[current]
        os.killpg(control.pid, signal.SIGKILL)
        control.wait(timeout=10)
        current = f"control-{kill + 1}"  # the killed group's orphans may linger as zombies under its old name
        _start_control(flow.processes, current)

    run = flow.wait(run_id, timeout=120)

    assert run.status is RunStatus.SUCCEEDED, run
    assert all(s.status is StepStatus.SUCCEEDED for s in run.steps.values())
    counts = {f"s{i}": len(lines(log, f"run s{i} ")) for i in range(50)}
    assert counts == {f"s{i}": 1 for i in range(50)}
    assert all(run.steps[f"s{i}"].attempt == 1 for i in range(50))
    # the event log is complete: replaying it through decide() rebuilds exactly the stored run
    assert run_to_dict(flow.engine.replay(TENANT, run_id)) == run_to_dict(run)


def test_rerun_after_a_policy_change_asks_the_kernel_again(flow: Flow) -> None:
    bundle = yaml.safe_dump({"version": 1, "default_decision": "deny", "rules": [
        {"id": "freeze-adds", "match": {"topics": ["job.flow.add"], "labels": {"freeze": "on"}},
         "decision": "deny", "reason": "change freeze"}]})
    flow.services.config.put_policy_bundle("secops/freeze", bundle, "secops", "freeze adds", enabled=True)
    document = {"id": "frozen", "steps": [
        {"id": "add", "type": "worker", "topic": "job.flow.add", "input": {"n": 1},
         "meta": {"labels": {"freeze": "on"}}}]}
    workflow_id = flow.save(document)

    def denied_run() -> Run | None:  # the kernel picks the bundle up within its reload interval
        run = flow.wait(flow.engine.start(TENANT, workflow_id, {}, started_by="alice").run_id)
        return run if run.steps["add"].error_code == "safety_denied" else None

    first = eventually(denied_run, timeout=20, message="the freeze to reach the kernel")
    assert first.status is RunStatus.FAILED

    flow.services.config.set_policy_bundle_enabled("secops/freeze", False, "secops", "freeze over")

    def allowed_rerun() -> Run | None:
        run = flow.wait(flow.engine.rerun(TENANT, first.run_id, started_by="bob").run_id)
        return run if run.status is RunStatus.SUCCEEDED else None

    again = eventually(allowed_rerun, timeout=20, message="a rerun under the new policy to succeed")
    assert again.rerun_of == first.run_id and again.steps["add"].output == {"v": 2}
    assert flow.services.jobs.get(again.steps["add"].job_id).decision == "ALLOW"


def test_news_a_killed_listener_took_is_claimed_by_the_tick(flow: Flow) -> None:
    """A control worker took a step's job news and was killed before handling it: the tick claims
    the entry from the dead reader and the run goes on, each step executed once."""
    log = flow.log("claimed")
    name, control = next((name, proc) for name, proc in reversed(flow.processes.procs.items())
                         if name.startswith("control") and proc.poll() is None)
    steps = [{"id": "s0", "type": "worker", "topic": "job.flow.add", "input": {"n": 0, "log": str(log), "tag": "s0"}},
             {"id": "s1", "type": "worker", "topic": "job.flow.add", "input": {"n": 1, "log": str(log), "tag": "s1"},
              "depends_on": ["s0"]}]
    news = flow.services.job_news

    def pending() -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], flow.services.redis.xpending_range(news.key, "engine", min="-", max="+",
                                                                             count=100))

    os.killpg(control.pid, signal.SIGSTOP)  # frozen: its listeners may still be handed news, not handle it
    try:
        flow.engine.inline_dispatch = True  # (this process dispatches s0 while the control worker is frozen)
        run_id = flow.start({"id": "claimed", "steps": steps})
        first_job = flow.engine.get(TENANT, run_id).steps["s0"].job_id
        eventually(lambda: flow.services.jobs.get(first_job).state is JobState.SUCCEEDED, timeout=30,
                   message="s0's job to succeed")
        if not pending():  # no frozen listener was blocked on the stream: a reader that dies takes it
            news.read("dead-reader", block_ms=2000)
        assert len(pending()) == 1
    finally:
        flow.engine.inline_dispatch = False
        os.killpg(control.pid, signal.SIGKILL)
        control.wait(timeout=10)
        _start_control(flow.processes, f"{name}-news")

    eventually(lambda: not pending(), timeout=30, message="the tick to claim the dead reader's news")
    run = flow.wait(run_id)
    assert run.status is RunStatus.SUCCEEDED, run
    assert run.steps["s1"].output == {"v": 2}
    assert [len(lines(log, f"run {tag} ")) for tag in ("s0", "s1")] == [1, 1]


def test_job_news_is_read_by_the_control_workers_pool_processes_only(flow: Flow) -> None:
    controls = {proc.pid for name, proc in flow.processes.procs.items()
                if name.startswith("control") and proc.poll() is None}

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def live_readers() -> list[int]:
        names = [reader["name"] for reader in flow.services.redis.xinfo_consumers(flow.services.job_news.key, "engine")]
        pids = [int(parts[1]) for parts in (name.rsplit(".", 2) for name in names)
                if len(parts) == 3 and parts[1].isdigit()]
        return [pid for pid in pids if Path(f"/proc/{pid}").exists()]

    readers = eventually(lambda: live_readers() or None, timeout=10, message="a listener to read job news")
    assert {parent(pid) for pid in readers} <= controls  # never the flow pack worker's processes
