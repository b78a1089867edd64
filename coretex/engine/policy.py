"""Every run start asks the safety kernel first, like every job: topic ``workflow.<id>``."""

from __future__ import annotations

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.engine.errors import RunRefusedError
from coretex.scheduler.packets import DRY_RUN_LABEL
from coretex.services import Services
from coretex.workflow.definition import Workflow

RUN_START_LABEL = "coretex.kind"
"""Label of a run-start check (``run_start``), so policy can tell it from a job."""
_ALLOWED = (safety_pb2.DECISION_TYPE_ALLOW, safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS)


def run_start_request(tenant: str, workflow: Workflow, started_by: str, actor_type: str,
                      dry_run: bool) -> safety_pb2.PolicyCheckRequest:
    request = safety_pb2.PolicyCheckRequest(
        job_id=f"run-start:{workflow.id}", topic=f"workflow.{workflow.id}", tenant=tenant, principal_id=started_by,
    )
    labels = {**workflow.labels, RUN_START_LABEL: "run_start"}
    if dry_run:
        labels[DRY_RUN_LABEL] = "true"
    request.labels.update(labels)
    request.meta.CopyFrom(job_pb2.JobMetadata(
        tenant_id=tenant, actor_id=started_by,
        actor_type=job_pb2.ACTOR_TYPE_HUMAN if actor_type == "human" else job_pb2.ACTOR_TYPE_SERVICE,
    ))
    request.meta.labels.update(labels)
    return request


def check_run_start(services: Services, tenant: str, workflow: Workflow, started_by: str, actor_type: str,
                    dry_run: bool) -> None:
    """Raise :class:`RunRefusedError` unless the kernel allows the run; KernelUnavailableError (fail
    closed) when it cannot be asked."""
    response = services.kernel.check(run_start_request(tenant, workflow, started_by, actor_type, dry_run))
    if response.decision in _ALLOWED:
        return
    name = safety_pb2.DecisionType.Name(response.decision).removeprefix("DECISION_TYPE_")
    hint = " (a run start cannot wait for approval: put an approval step in the workflow)" \
        if response.decision == safety_pb2.DECISION_TYPE_REQUIRE_HUMAN else ""
    raise RunRefusedError(f"{name} by rule {response.rule_id or '<default>'}: {response.reason}{hint}")
