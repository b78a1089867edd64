"""REQUIRE_APPROVAL end to end: parked jobs, separation of duties, approve, reject, and approvals
bound to the policy snapshot — with a real kernel, control worker and echo worker."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coretex.gateway import create_app
from coretex.gateway.auth import new_api_key, write_key_file
from coretex.model.approval import ApprovalStatus
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.approvals import ApprovalRefusedError, ApprovalStaleError, approve, reject
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.services import Services
from coretex.settings import load_settings
from coretex.testing import ProcessStack, RedisServer, eventually, free_port, wait_for_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICY = """\
version: 1
default_decision: deny
rules:
  - id: allow-platform-jobs
    match: {{topics: ["job.*"]}}
    decision: allow
    reason: platform jobs are allowed by default
  - id: gate-tenant-{tag}
    match: {{topics: ["job.echo"], tenants: ["gated"]}}
    decision: require_approval
    reason: jobs of the gated tenant need a human ({tag})
"""


@dataclasses.dataclass
class Env:
    processes: ProcessStack
    services: Services
    policies: Path
    kernel_addr: str

    def submit(self, actor: str = "alice") -> str:
        meta = JobMeta(tenant_id="gated", actor_id=actor, actor_type="human")
        return submit_job(self.services, SubmitRequest("job.echo", {"ship": "it"}, meta)).job_id

    def state_is(self, job_id: str, state: JobState) -> JobRecord:
        return eventually(lambda: (r := self.services.jobs.get(job_id)).state is state and r,
                          timeout=30, message=f"job {job_id} to be {state.value}")

    def restart_kernel_with(self, tag: str) -> None:
        (self.policies / "gate.yaml").write_text(POLICY.format(tag=tag))
        self.processes.stop("kernel")
        self.processes.start("kernel", "kernel", "--listen", self.kernel_addr)
        wait_for_port("127.0.0.1", int(self.kernel_addr.rsplit(":", 1)[1]), timeout=30)


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("approvals")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "gate.yaml").write_text(POLICY.format(tag="v1"))
    kernel_addr = f"127.0.0.1:{free_port()}"
    variables = {
        "CORETEX_REDIS_URL": redis_server.url,
        "CORETEX_NAMESPACE": "appr" + uuid.uuid4().hex[:8],
        "CORETEX_KERNEL_ADDR": kernel_addr,
        "CORETEX_CONFIG_DIR": str(REPO / "config"),
        "CORETEX_POLICIES_DIR": str(policies),
    }
    processes = ProcessStack(variables, tmp / "logs", cwd=REPO)
    processes.start("kernel", "kernel", "--listen", kernel_addr)
    processes.start("control", "control", "-c", "1")
    processes.start("echo", "worker", "--pool", "echo", "--app", "examples.echo.worker:worker", "-c", "1")
    services = Services(load_settings(processes.env))
    wait_for_port("127.0.0.1", int(kernel_addr.rsplit(":", 1)[1]), timeout=30)
    try:
        yield Env(processes, services, policies, kernel_addr)
    finally:
        processes.stop_all()
        services.close()


def test_parked_job_runs_once_another_human_approves_it(env: Env) -> None:
    job_id = env.submit(actor="alice")
    parked = env.state_is(job_id, JobState.APPROVAL_REQUIRED)
    approval = env.services.approvals.get(job_id)
    assert (parked.decision, parked.rule_id) == ("REQUIRE_HUMAN", "gate-tenant-v1")
    assert approval.status is ApprovalStatus.PENDING and approval.requested_by == "alice"
    assert job_id in [a.job_id for a in env.services.approvals.pending("gated")]

    with pytest.raises(ApprovalRefusedError, match="separation of duties"):
        approve(env.services, job_id, "alice")
    decided = approve(env.services, job_id, "bob", note="looks fine")

    done = env.state_is(job_id, JobState.SUCCEEDED)
    assert decided.status is ApprovalStatus.APPROVED and decided.decided_by == "bob"
    assert env.services.pointers.get_json(done.result_ptr, "gated") == {"ship": "it"}
    states = [e["to"] for e in env.services.jobs.history(job_id) if e["from"] != e["to"]]
    assert states == ["PENDING", "SCHEDULED", "APPROVAL_REQUIRED", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"]
    assert job_id not in [a.job_id for a in env.services.approvals.pending("gated")]


def test_rejected_job_is_denied_and_dead_lettered(env: Env) -> None:
    job_id = env.submit()
    env.state_is(job_id, JobState.APPROVAL_REQUIRED)

    reject(env.services, job_id, "bob", note="not during the freeze")

    record = env.services.jobs.get(job_id)
    assert record.state is JobState.DENIED and record.error_code == "approval_rejected"
    assert "not during the freeze" in record.error_message
    assert env.services.dlq.get(job_id).error_code == "approval_rejected"


def test_approval_over_http_enforces_roles_and_separation_of_duties(env: Env, tmp_path: Path) -> None:
    keys = {"alice": new_api_key(), "bob": new_api_key(), "vera": new_api_key()}
    key_file = tmp_path / "keys.yaml"
    write_key_file(key_file, [
        {"name": "alice", "key": keys["alice"], "tenant": "gated", "role": "operator"},
        {"name": "bob", "key": keys["bob"], "tenant": "gated", "role": "operator"},
        {"name": "vera", "key": keys["vera"], "tenant": "gated", "role": "viewer"},
    ])
    settings = dataclasses.replace(env.services.settings, api_keys_file=key_file)
    client = create_app(settings, Services(settings, env.services.app)).test_client()

    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[name]}"}

    submitted = client.post("/api/v1/jobs", json={"topic": "job.echo", "input": {"x": 1}}, headers=auth("alice"))
    job_id = submitted.get_json()["job_id"]
    env.state_is(job_id, JobState.APPROVAL_REQUIRED)

    assert client.get("/api/v1/approvals", headers=auth("vera")).get_json()[0]["job_id"] == job_id
    assert client.post(f"/api/v1/approvals/{job_id}/approve", json={}, headers=auth("vera")).status_code == 403
    own = client.post(f"/api/v1/approvals/{job_id}/approve", json={}, headers=auth("alice"))
    assert own.status_code == 403 and own.content_type == "application/problem+json"
    approved = client.post(f"/api/v1/approvals/{job_id}/approve", json={"note": "ok"}, headers=auth("bob"))
    assert approved.status_code == 200 and approved.get_json()["status"] == "approved"
    assert client.post(f"/api/v1/approvals/{job_id}/approve", json={}, headers=auth("bob")).status_code == 409
    env.state_is(job_id, JobState.SUCCEEDED)


def test_approval_after_a_policy_change_is_refused_and_the_job_is_evaluated_again(env: Env) -> None:
    job_id = env.submit()
    env.state_is(job_id, JobState.APPROVAL_REQUIRED)
    before = env.services.approvals.get(job_id).policy_snapshot

    env.restart_kernel_with("v2")  # same decision, different policy content => new snapshot
    with pytest.raises(ApprovalStaleError, match="policy changed"):
        approve(env.services, job_id, "bob")

    def parked_again() -> bool:
        approval = env.services.approvals.get(job_id)
        return approval.policy_snapshot != before and approval.status is ApprovalStatus.PENDING
    eventually(parked_again, timeout=30, message="the job to be parked again under the new policy")
    record = env.state_is(job_id, JobState.APPROVAL_REQUIRED)
    assert record.rule_id == "gate-tenant-v2"
    approve(env.services, job_id, "bob")
    env.state_is(job_id, JobState.SUCCEEDED)
